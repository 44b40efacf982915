"""Studies outside the CT models' field (a head CT, a 2-slice series, 5 mm slices) are refused
with one line, "cannot label this study: <reason>", in process and through ``spine serve``: the
shipped models on synthetic volumes, real HTTP on loopback, no mocks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from spine_core.errors import InputError, OutOfFieldError
from spine_core.inference import wire
from spine_core.inference.client import HttpPredictor
from spine_core.inference.field import (
    MAX_VOXEL_MM,
    PREFIX,
    column_problem,
    head_foot_axis,
    header_problem,
)
from spine_core.inference.local import LocalPredictor
from spine_core.inference.server import create_app
from spine_core.io.dicom_write import ct_affine
from spine_core.phantom import generate_study
from spine_core.volume import Volume
from tests.backend_helpers import TOKEN, running_server

SMALL_SHAPE = (96, 128, 128)


def head_ct(seed: int = 0, shape: tuple[int, int, int] = (100, 192, 192),
            spacing: tuple[float, float, float] = (1.25, 1.0, 1.0)) -> Volume:
    """An axial head CT: air, a 6 % scalp, a skull shell (1100 HU) 8 % of the radius thick around
    brain (35 HU), an ellipsoid 144 x 184 x 170 mm (L-R, A-P, S-I) that fills the field of view;
    no spine."""
    rng = np.random.default_rng(seed)
    affine = ct_affine(shape, spacing)
    a0, a1, a2 = np.ogrid[: shape[0], : shape[1], : shape[2]]
    x = affine[0, 3] + spacing[2] * a2
    y = affine[1, 3] + spacing[1] * a1
    z = spacing[0] * (a0 - 0.5 * (shape[0] - 1))
    r = np.sqrt((x / 72.0) ** 2 + (y / 92.0) ** 2 + (z / 85.0) ** 2)
    hu = np.where(r < 1.06, 40.0, -1000.0)
    hu = np.where(r < 1.0, 1100.0, hu)
    hu = np.where(r < 0.92, 35.0, hu)
    return Volume((hu + rng.normal(0.0, 12.0, shape)).astype(np.int16), affine)


def thick_slices(volume: Volume, step_mm: float) -> Volume:
    """``volume`` (axial, a0 = slices) resampled to slices ``step_mm`` apart by linear
    interpolation along a0, as a thick-slice reconstruction of the same body."""
    array = np.asarray(volume.array, dtype=np.float32)
    dz = float(volume.spacing[0])
    positions = np.arange(0.0, array.shape[0] - 1, step_mm / dz)
    low = np.floor(positions).astype(int)
    w = (positions - low)[:, None, None]
    thick = (1 - w) * array[low] + w * array[np.minimum(low + 1, array.shape[0] - 1)]
    affine = volume.affine.copy()
    affine[:3, 0] *= step_mm / dz
    return Volume(np.round(thick).astype(np.int16), affine)


def two_slices(volume: Volume) -> Volume:
    """Two neighbouring slices from the middle of ``volume``."""
    k = volume.shape[0] // 2
    affine = volume.affine.copy()
    affine[:3, 3] = volume.index_to_lps([k, 0, 0])
    return Volume(np.ascontiguousarray(np.asarray(volume.array)[k:k + 2]), affine)


@pytest.fixture(scope="module")
def predictor() -> LocalPredictor:
    return LocalPredictor.from_dir(device="cpu")


@pytest.fixture(scope="module")
def spine() -> Volume:
    return generate_study(11, shape=SMALL_SHAPE, fractured_levels=["C2"]).image


def _refusal(predictor: LocalPredictor, volume: Volume) -> str:
    with pytest.raises(OutOfFieldError) as caught:
        predictor.predict(volume)
    message = str(caught.value)
    assert message.startswith(PREFIX) and "\n" not in message, message
    assert isinstance(caught.value, InputError)  # pages, CLI and server treat it as bad input
    return message


# ------------------------------------------------------------------- in process, shipped models


def test_a_spine_ct_is_labelled(predictor: LocalPredictor, spine: Volume) -> None:
    prediction = predictor.predict(spine)
    assert {"C1", "C2", "C3", "C4", "C5", "C6", "C7"} <= set(prediction.centroids)


def test_a_head_ct_is_refused_not_labelled(predictor: LocalPredictor) -> None:
    # Without the check the shipped models label C1-T3 over this skull with fracture
    # probabilities near 0: a confident, wrong answer.
    message = _refusal(predictor, head_ct())
    assert "no spine-like column of vertebrae" in message
    assert "head CT" in message


@pytest.mark.parametrize("shape,spacing", [((120, 256, 256), (1.25, 0.8, 0.8)),
                                           ((160, 192, 192), (1.0, 1.0, 1.0))])
def test_head_cts_of_other_grids_are_refused(predictor: LocalPredictor, shape: tuple[int, int, int],
                                             spacing: tuple[float, float, float]) -> None:
    assert "no spine-like column" in _refusal(predictor, head_ct(1, shape, spacing))


def test_a_two_slice_series_is_refused(predictor: LocalPredictor, spine: Volume) -> None:
    message = _refusal(predictor, two_slices(spine))
    dz = float(spine.spacing[0])
    assert message == (
        f"cannot label this study: it has 2 slices covering {2 * dz:.3g} mm from head to foot; "
        "the models need a stack of at least 8 slices over 40 mm or more (load the whole series)")


def test_five_mm_slices_are_refused(predictor: LocalPredictor, spine: Volume) -> None:
    thick = thick_slices(spine, 5.0)
    assert float(thick.spacing[0]) == pytest.approx(5.0)
    message = _refusal(predictor, thick)
    assert message == (
        "cannot label this study: its slices are 5 mm apart, coarser than the 4.5 mm the models "
        "accept; load a thin-slice (bone) reconstruction of the series")


# -------------------------------------------------------------------- through `spine serve`


@pytest.fixture(scope="module")
def server(predictor: LocalPredictor) -> Iterator[str]:
    app = create_app(lambda device: predictor, token=TOKEN, device="cpu", loaded=predictor)
    with running_server(app) as url:
        yield url


@pytest.mark.parametrize("make", [head_ct, "two", "thick"], ids=["head", "two-slices", "5mm"])
def test_spine_serve_answers_422_out_of_field_and_the_client_raises_the_same_line(
        server: str, predictor: LocalPredictor, spine: Volume, make: object) -> None:
    volume = head_ct() if make is head_ct else two_slices(spine) if make == "two" else thick_slices(spine, 5.0)
    expected = _refusal(predictor, volume)
    response = httpx.post(f"{server}/predict", content=wire.encode_volume(volume), timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": wire.VOLUME_MEDIA_TYPE})
    assert response.status_code == 422
    assert response.json() == {"error": "out_of_field", "message": expected}
    with HttpPredictor(server, TOKEN) as client, pytest.raises(OutOfFieldError) as caught:
        client.predict(volume)
    assert str(caught.value) == expected


# ------------------------------------------------------------------------- the rules, by hand


def _axial(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    return Volume(np.zeros(shape, dtype=np.int16), ct_affine(shape, spacing))


def test_header_rules() -> None:
    assert header_problem(_axial((40, 64, 64), (1.0, 0.8, 0.8))) is None  # 40 mm, thin slices
    assert header_problem(_axial((16, 64, 64), (MAX_VOXEL_MM, 0.8, 0.8))) is None
    assert "it has 39 slices covering 39 mm" in str(header_problem(_axial((39, 64, 64), (1.0, 0.8, 0.8))))
    assert "it has 7 slices covering 42 mm" in str(header_problem(_axial((7, 64, 64), (6.0, 0.8, 0.8))))
    assert "its voxels are 1×5×5 mm" in str(header_problem(_axial((64, 64, 64), (1.0, 5.0, 5.0))))
    # A sagittal stack: slices run left to right, head to foot is a1; 2 sagittal slices 1 mm
    # apart over 200 mm of spine pass the header (the voxel minimum refuses them later).
    # a0 -> L, a1 -> I, a2 -> P (columns of the affine)
    sagittal = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    volume = Volume(np.zeros((2, 200, 64), dtype=np.int16), sagittal)
    assert head_foot_axis(volume) == 1
    assert header_problem(volume) is None


VOXEL_MM3 = 2.5 ** 3  # the model grid's voxel: 100 voxels are 1.56 mL


def _column(centres: dict[int, tuple[float, float, float]], size_vox: int = 100) -> str | None:
    """:func:`column_problem` of levels ``size_vox`` voxels each with these LPS centroids."""
    labels = np.zeros(4096, dtype=np.uint8)
    for i, lid in enumerate(centres):
        labels[i * size_vox:(i + 1) * size_vox] = lid
    return column_problem(labels, VOXEL_MM3, centres)


def test_column_rules() -> None:
    stacked = {1: (0.0, 0.0, 0.0), 2: (2.0, 3.0, -18.0), 3: (2.0, 6.0, -36.0)}
    assert _column(stacked) is None
    # Two levels are no column; nor three whose middle one drifts 30 mm sideways.
    assert _column({1: stacked[1], 2: stacked[2]}) is not None
    assert "levels: C1, C2, C3;" in str(_column({**stacked, 2: (30.0, 0.0, -18.0)}))
    # Upside down (C3 above C2), too far apart (70 mm), or too small (< 1 mL): no column.
    assert _column({**stacked, 3: (2.0, 6.0, 0.0)}) is not None
    assert _column({**stacked, 3: (2.0, 6.0, -88.0)}) is not None
    assert "levels: none;" in str(_column(stacked, size_vox=60))  # 0.94 mL each
    # A gap breaks the run: C1, C2, C4, C5 have no three neighbours; C3 closes it.
    gap = {1: (0.0, 0.0, 0.0), 2: (0.0, 0.0, -18.0), 4: (0.0, 0.0, -54.0), 5: (0.0, 0.0, -72.0)}
    assert _column(gap) is not None
    assert _column({**gap, 3: (0.0, 0.0, -36.0)}) is None
