"""MonaiLabelPredictor against a real MONAI Label 0.8.5 server running deploy/monailabel_app.

The server is ``python -m monailabel.main start_server`` (what the ``monailabel`` command runs) in a
subprocess on a free loopback port, with the packages of requirements/monailabel.txt on its
PYTHONPATH (scripts/ensure-monailabel.sh installs them; see that file for why they are an overlay
and not part of the project venv). The app serves the shipped segmentation weights as two models,
our canonical ids and TotalSegmentator's class indices, so the client's label mapping is
exercised with values that differ from ours. The predictions are compared with the in-process
LocalPredictor on the same phantom volume.

Locally the module is skipped, with the reason, when the server's packages cannot be installed;
with env CI set it fails instead.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from spine_core import metrics
from spine_core.config import Settings
from spine_core.errors import BackendUnreachable, ModelLoadError
from spine_core.inference.client import RetryPolicy
from spine_core.inference.local import LocalPredictor
from spine_core.inference.monailabel import MonaiLabelPredictor
from spine_core.inference.protocol import StudyPrediction
from spine_core.inference.select import predictor_from_settings
from spine_core.labels import TOTALSEG_NAMES
from spine_core.phantom import generate_study
from spine_core.volume import Volume
from tests.backend_helpers import free_port

pytestmark = pytest.mark.xdist_group("monailabel")

REPO = Path(__file__).resolve().parents[3]
APP = REPO / "deploy" / "monailabel_app"
OVERLAY = REPO / ".venv" / "monailabel"
CANONICAL_MODEL = "spinereview_vertebra"
TOTALSEG_MODEL = "spinereview_vertebra_totalseg"
#: Seconds the server may take to import torch, MONAI and MONAI Label and load the app (2 busy cores).
START_TIMEOUT_S = 180.0
DICE_MIN = 0.9


@dataclass
class MonaiLabelServer:
    """A running ``monailabel start_server`` process."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the real MONAI Label tests", pytrace=False)
    pytest.skip(reason)


def _ensure_overlay() -> Path:
    """Install (or find cached) the server's packages with scripts/ensure-monailabel.sh."""
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "ensure-monailabel.sh")], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0 or not (OVERLAY / "monailabel").is_dir():
        _unavailable(f"MONAI Label could not be installed by scripts/ensure-monailabel.sh: {done.stderr[-1500:]}")
    return OVERLAY


def start_server(tmp: Path, labels: str) -> MonaiLabelServer:
    """Start the app (copied into ``tmp``: the server writes model/, logs/, bin/ into it)."""
    overlay = _ensure_overlay()
    app = tmp / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "model", "logs", "bin"))
    studies = tmp / "studies"
    studies.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPINE_", "MONAI_LABEL_"))}
    env.update({
        "PYTHONPATH": str(overlay),
        "MONAI_LABEL_SESSION_PATH": str(tmp / "sessions"),
        "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
    })
    log = tmp / "server.log"
    command = [
        sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port), "--conf", "labels", labels,
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = MonaiLabelServer(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{server.url}/info/", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"MONAI Label did not answer /info/ (exit {process.poll()}):\n{server.log_tail()}")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonaiLabelServer]:
    running = start_server(tmp_path_factory.mktemp("monailabel"), "canonical,totalsegmentator")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def volume() -> Volume:
    return generate_study(11, shape=(64, 96, 96)).image


def _oblique(volume: Volume, degrees: float = 7.0) -> Volume:
    """The same voxels rotated about the patient's S axis (an oblique acquisition)."""
    t = math.radians(degrees)
    rotation = np.eye(4)
    rotation[:2, :2] = [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
    return Volume(volume.array, rotation @ volume.affine, {})


@pytest.fixture(scope="module")
def local() -> LocalPredictor:
    return LocalPredictor.from_dir(device="cpu", with_fracture=False)


def _check_against_local(got: StudyPrediction, expected: StudyPrediction, volume: Volume) -> None:
    assert got.mask is not None and expected.mask is not None
    assert got.mask.shape == volume.shape and got.mask.dtype == np.uint8
    present = {int(v) for v in np.unique(got.mask) if v}
    assert set(range(1, 8)) <= present  # all cervical levels, C1-C7
    assert present == {int(v) for v in np.unique(expected.mask) if v}
    dice = metrics.dice_per_label(got.mask, expected.mask, sorted(present))
    assert min(dice.values()) > DICE_MIN, dice
    assert got.centroids.keys() == expected.centroids.keys()
    assert got.level_probabilities == {} and math.isnan(got.patient_probability)


def test_info_lists_both_models_and_their_labels(server: MonaiLabelServer) -> None:
    with MonaiLabelPredictor(f"monailabel+{server.url}") as predictor:
        models = predictor.models()
        assert set(models) == {CANONICAL_MODEL, TOTALSEG_MODEL}
        assert models[CANONICAL_MODEL]["type"] == "segmentation" and models[CANONICAL_MODEL]["dimension"] == 3
        assert models[CANONICAL_MODEL]["labels"] == {f"C{i}": i for i in range(1, 8)} | {
            f"T{i}": 7 + i for i in range(1, 13)}
        totalseg = models[TOTALSEG_MODEL]["labels"]
        assert totalseg["vertebrae_C1"] == 50 and totalseg["vertebrae_T12"] == 32
        assert {TOTALSEG_NAMES[name] for name in totalseg} == set(range(1, 20))
        assert predictor.server_info()["version"] == "0.8.5"  # the real monailabel release answered


@pytest.mark.parametrize(("model", "oblique"), [(CANONICAL_MODEL, False), (TOTALSEG_MODEL, True)])
def test_prediction_agrees_with_the_local_predictor(
    server: MonaiLabelServer, local: LocalPredictor, volume: Volume, model: str, oblique: bool
) -> None:
    study = _oblique(volume) if oblique else volume
    expected = local.predict(study)
    with MonaiLabelPredictor(f"monailabel+{server.url}", model) as predictor:
        got = predictor.predict(study)
        info = predictor.info()
    _check_against_local(got, expected, study)
    assert info.name == f"monailabel/{model}" and info.card["app"] == "SpineReview vertebrae"
    assert got.device == f"monailabel:{server.url}"


def test_model_chosen_through_the_backend_url(server: MonaiLabelServer, volume: Volume) -> None:
    settings = Settings(backend_url=f"monailabel+{server.url}?model={TOTALSEG_MODEL}")
    predictor = predictor_from_settings(settings)
    assert isinstance(predictor, MonaiLabelPredictor)
    with predictor:
        assert predictor.model_name() == TOTALSEG_MODEL
        got = predictor.predict(volume)
    assert got.mask is not None and set(range(1, 8)) <= set(np.unique(got.mask).tolist())


def test_a_model_the_server_lacks_names_the_available_ones(server: MonaiLabelServer) -> None:
    with MonaiLabelPredictor(server.url, "segmentation_spleen") as missing, pytest.raises(ModelLoadError) as caught:
        missing.info()
    message = str(caught.value)
    assert "no model 'segmentation_spleen'" in message
    assert f"{CANONICAL_MODEL}, {TOTALSEG_MODEL}" in message and "?model=" in message
    with MonaiLabelPredictor(server.url) as ambiguous, pytest.raises(ModelLoadError) as caught:
        ambiguous.model_name()
    assert f"2 models name vertebra labels ({CANONICAL_MODEL}, {TOTALSEG_MODEL})" in str(caught.value)


def test_a_stopped_server_is_reported_unreachable(tmp_path: Path, volume: Volume) -> None:
    """A server of its own (it is stopped): the predictor that talked to it says it is unreachable."""
    own = start_server(tmp_path, "canonical")
    retry = RetryPolicy(attempts=2, backoff_s=0.01, max_wait_s=0.02)
    try:
        predictor = MonaiLabelPredictor(own.url, retry=retry)
        assert predictor.model_name() == CANONICAL_MODEL  # the only vertebra model is picked
    finally:
        own.stop()
    with predictor, pytest.raises(BackendUnreachable) as caught:
        predictor.predict(volume)
    assert f"MONAI Label server at {own.url} is unreachable" in str(caught.value)
