"""End to end in Chromium: two readers disagree on a level; adjudicator1 opens the dispute, is
refused a vote without rationale (nothing recorded), votes with one; adjudicator2 votes the same
way in another browser context and the committee decision appears on the page; ``spine export
decisions`` and ``spine export rsna`` (the real CLI) carry the decision.

The study is a small phantom imported for this test alone, with a readers' CSV in which reader1
calls one level fractured and reader2 calls it intact (the report says intact), so the import's
dispute check opens a ``readers_disagree`` dispute. The demo studies other tests use are untouched.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spine_core.labels import CERVICAL
from tests.browser.conftest import ROOT, app_db, open_page, screenshot, settle, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

LEVEL = "C7"  # the disputed level; below the demo studies' disputes in the queue order
SEED = 7  # a phantom study without fractures: the committee's "fractured" flips patient_overall
RATIONALE_1 = "Cortical step at the anterior-inferior endplate on two axial slices."
RATIONALE_2 = "Agree: endplate step with a lucent line on the sagittal reformat."


@dataclass(frozen=True)
class DisputedStudy:
    uid: str
    dispute_id: int
    box_slice: int  # InstanceNumber of the slice with reader1's box at LEVEL


def _disputes(app_env: dict[str, str], uid: str) -> list[tuple[int, str, str, str]]:
    with app_db(app_env) as con:
        return con.execute(
            "SELECT d.id, d.level, d.kind, d.status FROM disputes d JOIN studies s "
            "ON s.id = d.study_id WHERE s.study_uid = ? ORDER BY d.id", (uid,)).fetchall()


def _votes(app_env: dict[str, str], dispute_id: int) -> list[tuple[str, str, str]]:
    with app_db(app_env) as con:
        return con.execute(
            "SELECT u.username, v.choice, v.rationale FROM votes v JOIN users u "
            "ON u.id = v.voter_id WHERE v.dispute_id = ? ORDER BY v.id", (dispute_id,)).fetchall()


def _decisions(app_env: dict[str, str], dispute_id: int) -> list[tuple[Any, str, str]]:
    with app_db(app_env) as con:
        return con.execute(
            "SELECT fractured, policy, decided_by FROM decisions WHERE dispute_id = ?",
            (dispute_id,)).fetchall()


@pytest.fixture(scope="module")
def disputed_study(app_url: str, app_env: dict[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> DisputedStudy:
    """One phantom study imported into the running app's database with readers who disagree
    on LEVEL; its dispute is open."""
    from db.importer import import_path
    from spine_core.config import load_settings
    from spine_core.phantom.rsna_layout import write_rsna_dataset

    root = tmp_path_factory.mktemp("e2e-adjudication") / "data"
    write_rsna_dataset(root, n_studies=1, seed=SEED, shape=(48, 112, 112), workers=1, n_readers=0)
    with (root / "train.csv").open(newline="") as fh:
        report = next(csv.DictReader(fh))
    uid = report["StudyInstanceUID"]
    assert report["patient_overall"] == "0", "the phantom's report must call every level intact"
    number, box = _level_box(SEED, LEVEL)
    with (root / "readers_boxes.csv").open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader",
                      "level"])
        out.writerow([uid, number, *box, "reader1", LEVEL])
    with (root / "readers_levels.csv").open("w", newline="") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(["StudyInstanceUID", "reader", "level", "call"])
        for reader in ("reader1", "reader2"):
            for level in CERVICAL:  # both agree with the report everywhere but on LEVEL
                agreed = "fractured" if report[level] == "1" else "not_fractured"
                call = {"reader1": "fractured", "reader2": "not_fractured"}[reader]
                out.writerow([uid, reader, level, call if level == LEVEL else agreed])
    result = import_path(root, load_settings(app_env), actor="e2e", progress=False)
    assert not result.problems, result.problems
    disputes = _disputes(app_env, uid)
    assert [(d[1], d[2], d[3]) for d in disputes] == [(LEVEL, "readers_disagree", "open")], disputes
    return DisputedStudy(uid, disputes[0][0], number)


def _level_box(seed: int, level: str) -> tuple[int, tuple[int, int, int, int]]:
    """(InstanceNumber, (x, y, width, height)) framing ``level`` on its middle axial slice in
    the one-study phantom dataset of ``seed`` (the same study, drawn again)."""
    import numpy as np

    from spine_core.labels import LEVEL_IDS
    from spine_core.phantom import generate_study
    from spine_core.phantom.rsna_layout import study_plans

    plan = study_plans(seed, 1)[0]
    study = generate_study(plan.seed, (48, 112, 112), positive=plan.positive,
                           report_miss=plan.report_miss, n_readers=0)
    labels = np.asarray(study.labels.array) == LEVEL_IDS[level]
    slices = np.flatnonzero(labels.any(axis=(1, 2)))
    k = int(slices[len(slices) // 2])
    rows, cols = np.nonzero(labels[k])
    x, y = int(cols.min()), int(rows.min())
    return study.slice_number(k), (x, y, int(cols.max()) + 1 - x, int(rows.max()) + 1 - y)


def open_dispute(page: Any, uid: str) -> None:
    """Open the Adjudication page and pick the study's dispute in the queue (typing part of the
    UID filters the options)."""
    open_page(page, "Adjudication", 1.0)
    page.get_by_role("heading", name="Adjudication").wait_for()
    box = page.get_by_role("combobox", name="Dispute")
    box.click()
    box.fill(uid[-16:])
    page.get_by_role("option", name=re.compile(re.escape(uid))).click()
    settle(page, 1.5)
    page.get_by_role("heading", name=re.compile(rf"^{LEVEL} · Readers disagree · study {uid}$")
                     ).wait_for()


def cast_vote(page: Any, choice: str, rationale: str) -> None:
    form = page.locator("[data-testid=stForm]").filter(
        has=page.get_by_role("button", name="Cast vote"))
    form.locator("label").filter(has_text=re.compile(rf"^{choice}$")).click()
    form.get_by_label("Rationale (required)").fill(rationale)
    form.get_by_role("button", name="Cast vote").click()
    settle(page, 1.5)


def test_committee_decides_a_dispute_in_the_browser_and_the_export_carries_it(
    app_url: str, app_env: dict[str, str], disputed_study: DisputedStudy, contexts: Any,
    tmp_path: Path,
) -> None:
    uid, dispute_id = disputed_study.uid, disputed_study.dispute_id

    # -- adjudicator1 opens the dispute: both readers' calls are on the page --------------------
    a1 = contexts()
    sign_in(a1, app_url, "adjudicator1")
    open_dispute(a1, uid)
    a1.get_by_text("No votes yet.").wait_for()
    # the workstation opens at the boxed slice, zoomed to the disputed region
    a1.get_by_text(re.compile(rf"^Opened at Axial \d+/\d+ · .* · instance number "
                              rf"{disputed_study.box_slice}, the slice most readers boxed")).wait_for()
    viewer = a1.locator("[data-testid=sv-root]")
    a1.locator("[data-testid=sv-root][data-complete='1']").wait_for()
    settle(a1, 1.0)
    assert a1.locator("[data-testid=sv-vp-axial] canvas.sv-img").bounding_box()["width"] > 700
    zoom = viewer.evaluate("r => r.svWorkstation.vps.axial.zoom")
    assert zoom > 1.5, zoom
    shown = viewer.evaluate("r => r.svWorkstation.boxes.onSlice(r.svWorkstation.cursor[0])"
                            ".map(b => [b.kind, b.reader])")
    assert ["other reader", "reader1"] in shown and ["union", "union"] in shown, shown
    assert not a1.locator("[data-testid=stImage] img").count()
    screenshot(a1, "adjudication-01-dispute-opened")

    # -- a vote without rationale is refused, and nothing is recorded -----------------------------
    viewer.evaluate("r => { r.__testMark = 'same'; }")  # to tell whether it is mounted anew
    cast_vote(a1, "Fractured", "   ")
    a1.get_by_text(re.compile(r"has no rationale: write what you saw that supports 'fractured'")
                   ).wait_for()
    assert _votes(app_env, dispute_id) == []
    assert a1.get_by_text("No votes yet.").is_visible()
    screenshot(a1, "adjudication-02-vote-without-rationale-refused")

    # -- with a rationale the vote is recorded; one vote is below the quorum of 2 ----------------
    cast_vote(a1, "Fractured", RATIONALE_1)
    a1.get_by_text("Vote recorded. 1 of 2 votes needed for quorum", exact=True).wait_for()
    # the confirmation stands where the vote was cast: below the viewer, with the vote controls
    note = a1.get_by_text("Vote recorded. 1 of 2 votes needed for quorum", exact=True)
    assert note.bounding_box()["y"] > viewer.bounding_box()["y"] + viewer.bounding_box()["height"]
    assert a1.get_by_text("Votes (round 1").bounding_box()["y"] < note.bounding_box()["y"]
    assert _votes(app_env, dispute_id) == [("adjudicator1", "fractured", RATIONALE_1)]
    assert _decisions(app_env, dispute_id) == []
    a1.get_by_text(RATIONALE_1).wait_for()
    a1.get_by_text(re.compile(r"You cannot vote: adjudicator1 already voted in round 1")).wait_for()
    # the vote changed the dispute's line in the queue; the next action still acts on this
    # dispute, not on whichever comes first in the queue
    a1.get_by_role("button", name="Decide now").click()
    settle(a1, 1.5)
    a1.get_by_text("Not decided yet: 1 of 2 votes needed for quorum", exact=True).wait_for()
    a1.get_by_role("heading", name=re.compile(rf"^{LEVEL} · Readers disagree · study {uid}$")
                   ).wait_for()
    a1.get_by_text("Round 1 · 1 vote(s) · Open", exact=True).wait_for()
    # the messages above and below it left the viewer in place: not mounted anew (its volume
    # loaded again, zoom and window lost)
    assert viewer.evaluate("r => r.__testMark === 'same'")
    a1.get_by_text(RATIONALE_1).scroll_into_view_if_needed()
    screenshot(a1, "adjudication-03-first-vote")

    # -- adjudicator2 (another browser) votes the same way: the committee decides ----------------
    a2 = contexts()
    sign_in(a2, app_url, "adjudicator2")
    open_dispute(a2, uid)
    a2.get_by_text(RATIONALE_1).wait_for()
    cast_vote(a2, "Fractured", RATIONALE_2)
    a2.get_by_text("Vote recorded. majority fractured (2 fractured)", exact=True).wait_for()
    assert _votes(app_env, dispute_id) == [("adjudicator1", "fractured", RATIONALE_1),
                                           ("adjudicator2", "fractured", RATIONALE_2)]
    assert _decisions(app_env, dispute_id) == [(1, "committee", "adjudicator2")]
    assert _disputes(app_env, uid)[0][3] == "decided"
    # the decided dispute stays on screen (the queue widens to "all") with its decision
    a2.get_by_role("heading", name=re.compile(rf"^{LEVEL} · Readers disagree · study {uid}$")
                   ).wait_for()
    a2.get_by_text(re.compile(
        r"^Decision round 1: fractured \(in force\) — majority of the committee, policy The "
        r"committee votes, by adjudicator2 on ")).wait_for()
    a2.get_by_text(f"Final label of {LEVEL}: fractured (decided by the committee)").wait_for()
    a2.get_by_text("Round 1 · 2 vote(s) · Decided", exact=True).wait_for()
    assert a2.get_by_role("button", name="Cast vote").count() == 0
    a2.get_by_role("button", name="Reopen for a new round").scroll_into_view_if_needed()
    screenshot(a2, "adjudication-04-committee-decided")

    # -- the real CLI exports the decision and the decided label ---------------------------------
    out = tmp_path / "export"
    for kind in ("decisions", "rsna"):
        subprocess.run([sys.executable, "-m", "spine_cli.main", "export", kind, str(out)],
                       env=app_env, cwd=ROOT, check=True, capture_output=True, timeout=120)
    with (out / "decisions.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["StudyInstanceUID"] == uid]
    assert len(rows) == 1, rows
    row = rows[0]
    assert (row["level"], row["kind"], row["status"], row["round"]) == (
        LEVEL, "readers_disagree", "decided", "1")
    assert (row["decision"], row["policy"], row["decided_by"]) == (
        "fractured", "committee", "adjudicator2")
    assert row["reason"] == "majority fractured (2 fractured)"
    assert row["votes"] == "r1 adjudicator1: fractured; r1 adjudicator2: fractured"
    with (out / "train.csv").open(newline="") as fh:
        labels = [r for r in csv.DictReader(fh) if r["StudyInstanceUID"] == uid]
    assert len(labels) == 1, labels
    # the report called every level intact: the committee's label is the only fracture
    assert {k: v for k, v in labels[0].items() if k != "StudyInstanceUID"} == {
        "patient_overall": "1", **{lvl: "1" if lvl == LEVEL else "0" for lvl in CERVICAL}}
