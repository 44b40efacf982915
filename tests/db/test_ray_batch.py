"""Ray Serve replicas and Ray batch prediction on a real local Ray instance (2 CPUs, no dashboard).

The models are the shipped demo weights; the HTTP client is the app's own ``HttpPredictor``; the
batch runs over real phantom DICOM studies imported into a real SQLite workspace. One Ray instance
per test process serves the tests of this module and is shut down after them (they are marked as
one xdist group; a worker that gets only some of them starts its own Ray).
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from db import models as m
from db.session import unit_of_work
from spine_cli.main import main
from spine_core.config import Settings
from spine_core.inference import wire
from spine_core.inference.client import HttpPredictor
from spine_core.io.nifti import load_nifti
from spine_core.volume import Volume
from tests.backend_helpers import TOKEN, free_port, spine_phantom
from tests.prediction_helpers import import_dataset, prediction_files, write_tiny_dataset

pytestmark = pytest.mark.xdist_group("ray")

if os.environ.get("CI"):
    import ray  # CI installs the test extra, which holds ray: a missing Ray must fail there
else:
    ray = pytest.importorskip("ray")

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": wire.VOLUME_MEDIA_TYPE}


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """A local Ray for this module: 2 CPUs, no dashboard, a small object store; always shut down."""
    assert not ray.is_initialized(), "another test left Ray running"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_predictor() -> Any:
    from spine_core.inference.local import LocalPredictor

    return LocalPredictor.from_dir(device="cpu")


def test_ray_serve_replicas_answer_like_spine_serve(local_ray: Any, local_predictor: Any) -> None:
    """Two replicas behind Ray Serve: /health from both, 401 and 413 as `spine serve`, and the
    app's HttpPredictor gets the in-process LocalPredictor's prediction."""
    from spine_core.inference import ray_serve

    options = ray_serve.RayServeOptions(replicas=2, max_request_mb=0.25)
    url = ray_serve.start(Settings(device="cpu"), TOKEN, options, port=free_port())
    try:
        seen: set[str] = set()
        for _ in range(50):  # the proxy routes each request to one replica; both must answer
            health = httpx.get(f"{url}/health", timeout=10)
            assert health.status_code == 200
            assert health.json()["status"] == "ready" and health.json()["max_request_mb"] == 0.25
            seen.add(health.headers[ray_serve.REPLICA_HEADER])
            if len(seen) == 2:
                break
        assert len(seen) == 2, seen

        # 48 cubed: the default 40x32x32 toy is too small for a spine-like column of vertebrae,
        # which the real models refuse (spine_core.inference.field); still under the 0.25 MB limit
        volume = spine_phantom(shape=(48, 48, 48))
        body = wire.encode_volume(volume)
        wrong = httpx.post(f"{url}/predict", content=body, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["error"] == "unauthorised"
        assert httpx.get(f"{url}/models", timeout=10).status_code == 401
        big = np.random.default_rng(1).integers(-1000, 2000, size=(40, 64, 64), dtype=np.int16)
        too_large = httpx.post(f"{url}/predict", content=wire.encode_volume(Volume(big, volume.affine)),
                               headers=AUTH, timeout=10)
        assert too_large.status_code == 413 and too_large.json()["error"] == "too_large"

        client = HttpPredictor.from_settings(Settings(backend_url=url, backend_token=TOKEN))
        got = client.predict(volume)
        expected = local_predictor.predict(volume)
        assert client.info().name == expected.model.name and client.info().version == expected.model.version
        assert got.mask is not None and expected.mask is not None and got.mask.max() > 0
        assert np.array_equal(got.mask, expected.mask)
        assert got.level_probabilities.keys() == expected.level_probabilities.keys()
        for level, p in expected.level_probabilities.items():
            assert got.level_probabilities[level] == pytest.approx(p, abs=1e-4)

        # two predictions at once both succeed; a burst may route both to one replica, whose single
        # job slot then answers 503 busy, and the retry (as HttpPredictor makes) goes elsewhere
        def post(_: int) -> httpx.Response:
            for _attempt in range(10):
                answer = httpx.post(f"{url}/predict", content=body, headers=AUTH, timeout=120)
                if answer.status_code != 503:
                    return answer
                assert answer.json()["error"] == "busy" and answer.headers["retry-after"] == "2"
                time.sleep(0.2)
            return answer

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(post, range(2)))
        assert [a.status_code for a in answers] == [200, 200], [a.text[:200] for a in answers]
        served = {a.headers[ray_serve.REPLICA_HEADER] for a in answers}
        for _ in range(10):  # the proxy picks at random between idle replicas: both get predictions
            if served == seen:
                break
            answer = post(0)
            assert answer.status_code == 200
            served.add(answer.headers[ray_serve.REPLICA_HEADER])
        assert served == seen
    finally:
        ray_serve.stop()


def test_ray_batch_stores_each_study_once_resumes_and_reports_a_broken_study(
    local_ray: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from db.ray_batch import RayBatchOptions, predict_many_ray

    dataset = write_tiny_dataset(tmp_path / "ds", n_studies=3)
    db_url = f"sqlite:///{tmp_path / 'spine.db'}"
    imported = import_dataset(dataset, db_url, tmp_path / "var")
    ws = imported.ws
    broken_id = imported.study_ids[-1]
    with unit_of_work(ws.sessions, readonly=True) as s:
        source = s.scalars(select(m.Series.source_dir).where(m.Series.study_id == broken_id)).one()
    shutil.rmtree(source)  # the broken study's DICOM files are gone

    outcomes: list[tuple[int, str]] = []
    report = predict_many_ray(ws, imported.study_ids, actor="carol",
                              options=RayBatchOptions(actors=2), on_study=lambda i, o: outcomes.append((i, o)))
    assert (report.predicted, report.skipped, report.stopped) == (2, 0, ""), report.problems
    broken_uid = imported.uids[broken_id]
    assert len(report.problems) == 1 and report.problems[0].startswith(f"study {broken_uid}: ")
    assert "missing" in report.problems[0]
    assert sorted(outcomes) == sorted([(i, "predicted") for i in imported.study_ids[:2]] + [(broken_id, "failed")])

    with unit_of_work(ws.sessions, readonly=True) as s:
        rows = s.scalars(select(m.Prediction).order_by(m.Prediction.study_id)).all()
        assert [r.study_id for r in rows] == imported.study_ids[:2]  # one per study, none for the broken one
        for row in rows:
            series = s.scalars(select(m.Series).where(m.Series.study_id == row.study_id)).one()
            assert row.created_by == "carol" and row.backend.startswith("ray local (cpu")
            assert row.timings["load_s"] >= 0 and "segmentation" in row.timings
            assert set(row.level_probabilities) and all(0 <= p <= 1 for p in row.level_probabilities.values())
            mask = load_nifti(row.mask_path)  # the predicted mask on the study's own grid
            assert mask.shape == tuple(series.shape) and int(np.asarray(mask.array).max()) > 0
            assert np.allclose(mask.affine, np.asarray(series.affine), atol=1e-4)
    files = prediction_files(tmp_path / "var")
    assert len(files) == 2

    # a second run through the CLI: the stored studies are skipped before any Ray job starts
    good = [imported.uids[i] for i in imported.study_ids[:2]]
    capsys.readouterr()
    status = main(["predict", "--ray", "--no-progress", "--db", db_url, "--data-dir", str(tmp_path / "var"),
                   "--study", good[0], "--study", good[1]])
    out, err = capsys.readouterr()
    assert (status, out.strip(), err) == (0, "0 studies predicted, 2 already predicted", "")
    assert prediction_files(tmp_path / "var") == files
    with unit_of_work(ws.sessions, readonly=True) as s:
        assert len(s.scalars(select(m.Prediction)).all()) == 2


def test_ray_options_are_checked_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    from db.ray_batch import RayBatchOptions
    from spine_core.errors import InputError
    from spine_core.inference.ray_serve import RayServeOptions, build_app

    with pytest.raises(InputError, match="--actors must be at least 1"):
        RayBatchOptions(actors=0).check()
    with pytest.raises(InputError, match="--replicas must be at least 1"):
        RayServeOptions(replicas=0).check()
    with pytest.raises(InputError, match="needs a token"):
        build_app(Settings(), "", RayServeOptions(), gpus=0)
    assert main(["predict", "--actors", "2", "--data-dir", "/nonexistent/never"]) == 2
    assert "need --ray" in capsys.readouterr().err
    assert main(["serve", "--replicas", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err
