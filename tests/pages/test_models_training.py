"""The Models page's training panel (AppTest, SQLite and PostgreSQL): a training queued with
``spine train --queue`` shows waiting, then the progress and end its worker writes into the row;
a queued one stops at once from the page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from db import job_queue, job_rows, training_jobs
from db.session import make_engine, make_sessionmaker
from pages.parts.common import SignedInUser, workspace
from spine_core.errors import ConflictError, NotFound

ROOT = Path(__file__).resolve().parents[2]
ADMIN = SignedInUser(1, "admin", "Admin", "admin")
VIEWER = SignedInUser(2, "viewer", "Viewer", "viewer")


@pytest.fixture
def sessions(migrated_db_url: str, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("SPINE_DB_URL", migrated_db_url)
    monkeypatch.setenv("SPINE_DATA_DIR", str(tmp_path / "var"))
    workspace.clear()
    yield make_sessionmaker(make_engine(migrated_db_url))
    workspace.clear()


def page(user: SignedInUser = ADMIN) -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "models.py"), default_timeout=60)
    at.session_state["user"] = user
    return at.run()


def texts(at: AppTest) -> str:
    kinds = ("success", "warning", "error", "info", "caption", "markdown", "subheader")
    return "\n".join(str(getattr(e, "value", "")) for kind in kinds for e in at.get(kind))


def test_no_training_no_panel(sessions: object) -> None:
    at = page()
    assert not at.exception, at.exception
    assert "Training" not in [s.value for s in at.subheader]


def test_the_page_follows_a_training_from_its_row(sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = training_jobs.queue(sessions, ["--seg-iterations", "40", "--out", "/models/x"],
                                 actor="mlops")
    at = page()
    assert not at.exception, at.exception
    assert "waiting for a worker to start it" in texts(at)
    assert "queued by mlops" in texts(at) and "`spine train --seg-iterations 40 --out /models/x`" \
        in texts(at)

    row = job_queue.claim_next(sessions, kinds=[job_rows.TRAIN])  # as a worker claims it
    assert row is not None and int(row.id) == job_id
    job_rows.save(sessions, job_id, message="seg it 10/40 loss 2.1 (12 s)", fraction=0.25,
                  problems=["prepared training study 1/2 (seed 1)", "seg it 10/40 loss 2.1 (12 s)"])
    at.run()
    assert not at.exception, at.exception
    bar = at.get("progress")
    assert bar and bar[0].proto.text == "training: seg it 10/40 loss 2.1 (12 s)"
    assert bar[0].proto.value == 25
    assert any(b.label == "Stop the training" for b in at.button)
    assert not any(b.label == "Stop the training" for b in page(VIEWER).button)

    job_rows.save(sessions, job_id, status=job_rows.FAILED, error="error: out of memory (exit "
                  "status 1)", message="failed")
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["the training failed: error: out of memory (exit "
                                           "status 1)"]
    assert not any(b.label == "Stop the training" for b in at.button)


def test_a_queued_training_stops_from_the_page(sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = training_jobs.queue(sessions, ["--out", "/models/x"], actor="mlops")
    at = page()
    next(b for b in at.button if b.label == "Stop the training").click().run()
    assert not at.exception, at.exception
    row = job_rows.get(sessions, job_id)
    assert row is not None and (row.status, row.stopped) == (
        "stopped", "stopped before a worker took it up")
    assert [e.value for e in at.warning] == [
        "the training was stopped: stopped before a worker took it up"]


def test_a_stopped_training_resumes_from_the_page_with_its_options(sessions) -> None:  # type: ignore[no-untyped-def]
    job_id = training_jobs.queue(sessions, ["--seg-iterations", "40", "--out", "/models/x"],
                                 actor="mlops")
    training_jobs.stop(sessions, job_id)
    assert not any(b.label == "Resume the training" for b in page(VIEWER).button)
    at = page()
    next(b for b in at.button if b.label == "Resume the training").click().run()
    assert not at.exception, at.exception
    again = training_jobs.current(sessions)
    assert again is not None and again.job_id != job_id and again.queued
    assert again.params == ("--seg-iterations", "40", "--out", "/models/x")
    assert again.owner == "admin"
    assert "waiting for a worker to start it" in texts(at)
    assert not any(b.label == "Resume the training" for b in at.button)

    # queued meanwhile from a shell: the next run of the page has no resume button to press,
    # and the use case refuses a second training (or a job that is not one)
    training_jobs.stop(sessions, again.job_id)
    at.run()
    other = training_jobs.queue(sessions, ["--out", "/models/y"], actor="mlops")
    at.run()
    assert not any(b.label == "Resume the training" for b in at.button)
    with pytest.raises(ConflictError, match="a training queued by mlops is waiting for a worker"):
        training_jobs.queue_again(sessions, again.job_id, actor="admin")
    with pytest.raises(ConflictError, match="has not ended"):
        training_jobs.queue_again(sessions, other, actor="admin")
    with pytest.raises(NotFound):
        training_jobs.queue_again(sessions, other + 100, actor="admin")
