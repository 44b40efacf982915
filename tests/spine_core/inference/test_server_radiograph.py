"""Radiographs through ``spine serve`` over real HTTP on loopback: a synthetic lateral film sent by
:class:`HttpPredictor` comes back exactly as the in-process model answers it (the radiograph
ensemble of the shipped weights: labelled one-slice mask, one box per vertebra with its label, no
fracture probability); a film is checked as a film, not as a CT; a backend without a radiograph
model says so at once."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spine_core.config import Settings
from spine_core.errors import InputError
from spine_core.inference.client import NO_RETRY, HttpPredictor
from spine_core.inference.local import LocalPredictor
from spine_core.inference.protocol import StudyPrediction
from spine_core.inference.select import load_local_predictor
from spine_core.inference.server import create_app, implausible_extent
from spine_core.io.radiograph import is_radiograph_volume, load_radiograph
from spine_core.io.radiograph_image import load_image_radiograph
from spine_core.volume import Volume
from tests.backend_helpers import TOKEN, BoneThresholdPredictor, health, running_server
from tests.radiograph_helpers import MONO1_SEED, small_film, write_dx


@pytest.fixture(scope="module")
def local() -> LocalPredictor:
    """The shipped weights in this process, as ``spine serve`` loads them."""
    predictor = load_local_predictor(Settings(device="cpu"))
    assert isinstance(predictor, LocalPredictor) and predictor.predicts_radiographs
    return predictor


@pytest.fixture(scope="module")
def server(local: LocalPredictor) -> Iterator[str]:
    """A backend that loads its models at start-up, as ``spine serve`` does (the factory gets the
    device); the module's predictor is handed over so the weights are read once."""
    app = create_app(lambda device: local, token=TOKEN, device="cpu")
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def film_volume(tmp_path_factory: pytest.TempPathFactory) -> Volume:
    """A synthetic lateral lumbar DX film, opened as the app opens an imported radiograph."""
    folder = tmp_path_factory.mktemp("dx")
    return load_radiograph(write_dx(small_film(), folder, MONO1_SEED))


def _remote(url: str, volume: Volume) -> StudyPrediction:
    with HttpPredictor(url, TOKEN, retry=NO_RETRY, timeout_s=120) as client:
        return client.predict(volume)


def _assert_same(remote: StudyPrediction, here: StudyPrediction) -> None:
    assert remote.mask is not None and here.mask is not None
    assert remote.mask.dtype == np.uint8 and remote.mask.shape == here.mask.shape
    assert np.array_equal(remote.mask, here.mask)
    assert remote.boxes == here.boxes  # every vertebra: slice 0, box, score, label
    assert remote.level_probabilities == here.level_probabilities == {}
    assert math.isnan(remote.patient_probability) and math.isnan(here.patient_probability)
    assert (remote.model.name, remote.model.version) == (here.model.name, here.model.version)


def test_health_says_the_backend_predicts_radiographs(server: str) -> None:
    assert health(server)["radiograph_model"] is True


def test_a_film_over_http_is_the_in_process_prediction(server: str, local: LocalPredictor,
                                                       film_volume: Volume) -> None:
    assert is_radiograph_volume(film_volume) and film_volume.shape[0] == 1
    here = local.predict(film_volume)
    remote = _remote(server, film_volume)
    _assert_same(remote, here)
    assert remote.mask is not None and remote.mask.shape == film_volume.shape
    labelled = [b.level for b in remote.boxes if b.level]
    assert len(labelled) >= 4, remote.boxes  # vertebrae counted from the reference
    assert all(b.slice_index == 0 and b.width > 0 and b.height > 0 for b in remote.boxes)
    # the server ran the radiograph ensemble, not the CT models
    assert any(k.startswith("radiograph_") for k in remote.timings), remote.timings
    assert "http_round_trip" in remote.timings


def test_a_film_of_unknown_spacing_is_not_refused_as_an_oversized_ct(
        server: str, local: LocalPredictor, tmp_path: Path) -> None:
    """A PNG without sidecar measures in pixels (1 "mm" each): 2,400 pixels span more than any
    CT, which the CT check refuses; the film check takes it, and the answers agree."""
    image = small_film().image
    grey = (image.astype(np.float32) / max(float(image.max()), 1.0) * 255).astype(np.uint8)
    big = np.kron(grey, np.ones((2, 2), dtype=np.uint8))  # ~2,450 × 1,660 pixels
    Image.fromarray(big).save(tmp_path / "film.png")
    volume = load_image_radiograph(tmp_path / "film.png")
    assert volume.meta["spacing_source"] == "unknown"
    assert implausible_extent(volume) is not None  # what a CT of this extent would be told
    _assert_same(_remote(server, volume), local.predict(volume))


def test_a_radiograph_of_two_images_is_refused_in_one_line(server: str,
                                                           film_volume: Volume) -> None:
    two = Volume(np.concatenate([film_volume.array] * 2), film_volume.affine,
                 dict(film_volume.meta))
    with pytest.raises(InputError, match="a radiograph is one image, this one has 2 slices"):
        _remote(server, two)


def test_a_backend_without_a_radiograph_model_says_so_before_running(film_volume: Volume) -> None:
    predictor = BoneThresholdPredictor()
    app = create_app(lambda device: predictor, token=TOKEN)
    with running_server(app) as url:
        assert health(url)["radiograph_model"] is False
        with pytest.raises(InputError, match=r"no radiograph ensemble.*spine train --modality xray"):
            _remote(url, film_volume)


def test_the_backend_status_line_says_whether_it_predicts_radiographs(server: str) -> None:
    from spine_core.inference.status import backend_status

    status = backend_status(Settings(backend_url=server, backend_token=TOKEN))
    assert status.ok and "predicts radiographs" in status.summary


@pytest.mark.parametrize("view", ["AP", "PA"])
def test_a_frontal_film_is_refused_here_and_over_http_in_one_line(
        server: str, local: LocalPredictor, film_volume: Volume, view: str) -> None:
    """The ensemble counts vertebrae on lateral films: a film whose view is AP or PA (header, or
    set by a reader: :func:`spine_core.io.radiograph.with_view`) is refused, never labelled."""
    from spine_core.errors import OutOfFieldError
    from spine_core.io.radiograph import with_view

    frontal = with_view(film_volume, view)
    expected = (f"cannot label this study: the radiograph model reads lateral films and this film "
                f"is {view}; if it is lateral, set its view to lateral in the viewer")
    with pytest.raises(OutOfFieldError) as here:
        local.predict(frontal)
    assert str(here.value) == expected
    with pytest.raises(OutOfFieldError) as remote:
        _remote(server, frontal)
    assert str(remote.value) == expected
