"""MonaiLabelPredictor against a MONAI-Label-shaped look-alike server, on loopback.

tests/spine_core/inference/test_monailabel_real.py runs the client against a real MONAI Label 0.8.5
server (info, both label mappings, model choice and its errors, an unreachable server). What stays
here is what that server, serving deploy/monailabel_app, cannot produce: answers of other MONAI
Label apps (a label image in another orientation, cropped, a bare file, JSON without an image),
malformed answers (a label value the model did not declare), a mix of vertebra and non-vertebra
models, and bearer-token authentication (MONAI Label's own needs a Keycloak server).

The look-alike reads the uploaded NIfTI with nibabel, segments bone by threshold in NIfTI (RAS)
space and numbers the components in its own label values, so the client's label mapping and grid
handling are exercised through real files.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from scipy import ndimage

from spine_core.errors import (
    BackendError,
    InputError,
    LabelVocabularyError,
    MaskError,
)
from spine_core.inference.monailabel import (
    MonaiLabelPredictor,
    canonical_label_map,
    split_monailabel_url,
    vertebra_id_from_label_name,
)
from spine_core.inference.protocol import Predictor
from tests.backend_helpers import BoneThresholdPredictor, running_server, spine_phantom

#: TotalSegmentator-style names with values counting down, plus a non-vertebra class.
TOTALSEG_LABELS = {"liver": 5, "vertebrae_C1": 50, "vertebrae_C2": 49, "vertebrae_C3": 48, "vertebrae_C4": 47}
#: MONAI Label's radiology app style (localization_vertebra).
RADIOLOGY_LABELS = {"C1": 1, "C2": 2, "C3": 3, "C4": 4, "C5": 5, "C6": 6, "C7": 7, "Th1": 8}


def monai_label_app(
    labels: dict[str, int],
    *,
    answer: str = "multipart",
    canonical_orientation: bool = True,
    crop: bool = False,
    extra_value: int | None = None,
    token: str | None = None,
) -> FastAPI:
    """A MONAI-Label-shaped server: GET /info/, POST /infer/{model} (file + params form fields)."""
    app = FastAPI()
    app.state.requests = []
    models: dict[str, Any] = {
        "vertebra_seg": {"type": "segmentation", "labels": labels, "dimension": 3,
                         "description": "bone threshold as vertebrae"},
        "segmentation_spleen": {"type": "segmentation", "labels": {"spleen": 1}, "dimension": 3,
                                "description": "spleen"},
    }
    value_of = {vertebra_id_from_label_name(name): value for name, value in labels.items()}

    def check_token(request: Request) -> None:
        if token is not None and request.headers.get("authorization") != f"Bearer {token}":
            raise HTTPException(status_code=401, detail="Invalid authentication credentials")

    @app.get("/info/")
    async def info(request: Request) -> dict[str, Any]:
        check_token(request)
        return {"name": "spine test app", "description": "test", "version": "0.8.5",
                "labels": list(labels), "models": models}

    @app.post("/infer/{model}")
    async def infer(request: Request, model: str, params: str = Form("{}"), file: UploadFile = File(None),
                    output: str | None = None) -> Response:
        check_token(request)
        if model not in models:  # MONAI Label 0.8.5 answers any failure in /infer like this
            return Response("Internal Server Error", status_code=500, media_type="text/plain")
        raw = await file.read()
        app.state.requests.append({"model": model, "params": json.loads(params), "filename": file.filename})
        img = nib.Nifti1Image.from_bytes(gzip.decompress(raw))
        data = np.asanyarray(img.dataobj)
        bone = data >= 200
        components, count = ndimage.label(bone)
        centres = ndimage.center_of_mass(bone, components, range(1, count + 1))
        ras_z = [float((img.affine @ np.r_[c, 1.0])[2]) for c in centres]
        out = np.zeros(data.shape, dtype=np.int16)
        for level, comp in enumerate(sorted(range(1, count + 1), key=lambda i: -ras_z[i - 1]), start=1):
            out[components == comp] = value_of.get(level, 0)
        if extra_value is not None:
            out[0, 0, 0] = extra_value
        label = nib.Nifti1Image(out, img.affine)
        if canonical_orientation:
            label = nib.as_closest_canonical(label)
        if crop:
            label = label.slicer[1:-1, 2:, 1:]
        label_bytes = gzip.compress(label.to_bytes())
        result = {"label_names": labels, "latencies": {"total": 0.1}}
        if answer == "json":
            return JSONResponse(result)
        if answer == "file" or output == "image":
            return Response(label_bytes, media_type="application/octet-stream")
        boundary = "8a1b3c5d7e9f"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n'
            f"Content-Type: application/json\r\n\r\n{json.dumps(result)}\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="label.nii.gz"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + label_bytes + f"\r\n--{boundary}--\r\n".encode()
        return Response(body, media_type=f"multipart/form-data; boundary={boundary}")

    return app


@pytest.fixture(scope="module")
def expected() -> Any:
    return BoneThresholdPredictor().predict(spine_phantom())


@pytest.fixture(scope="module")
def totalseg_server() -> Iterator[tuple[str, FastAPI]]:
    app = monai_label_app(TOTALSEG_LABELS)
    with running_server(app, ready=lambda h: True) as url:
        yield url, app


def test_multipart_answer_in_another_orientation_maps_to_canonical_ids_on_the_input_grid(
    totalseg_server: tuple[str, FastAPI], expected: Any
) -> None:
    url, app = totalseg_server
    volume = spine_phantom()
    with MonaiLabelPredictor(f"monailabel+{url}", params={"largest_cc": True}) as predictor:
        assert isinstance(predictor, Predictor)
        got = predictor.predict(volume)
    assert got.mask is not None and got.mask.shape == volume.shape and got.mask.dtype == np.uint8
    assert np.array_equal(got.mask, expected.mask)  # C1..C4 = 1..4 although the server said 50..47
    assert set(np.unique(got.mask)) == {0, 1, 2, 3, 4}
    assert got.centroids.keys() == expected.centroids.keys()
    for level, xyz in expected.centroids.items():
        assert got.centroids[level] == pytest.approx(xyz, abs=1e-6)
    assert got.level_probabilities == {} and math.isnan(got.patient_probability)
    assert got.model.name == "monailabel/vertebra_seg" and got.model.version == "0.8.5"
    last = app.state.requests[-1]
    assert last == {"model": "vertebra_seg", "params": {"largest_cc": True}, "filename": "image.nii.gz"}


def test_info_lists_models_and_picks_the_only_vertebra_model(totalseg_server: tuple[str, FastAPI]) -> None:
    url, _ = totalseg_server
    with MonaiLabelPredictor(url) as predictor:
        assert set(predictor.models()) == {"vertebra_seg", "segmentation_spleen"}
        assert predictor.model_name() == "vertebra_seg"
        info = predictor.info()
    assert info.card["labels"] == TOTALSEG_LABELS
    assert info.card["source"] == "MONAI Label" and info.card["server"] == url


@pytest.mark.parametrize(("options", "label_names"), [
    ({"answer": "file"}, RADIOLOGY_LABELS),
    ({"answer": "multipart", "canonical_orientation": False}, RADIOLOGY_LABELS),
    ({"crop": True}, TOTALSEG_LABELS),
])
def test_bare_file_same_orientation_and_cropped_answers(options: dict[str, Any], label_names: dict[str, int],
                                                        expected: Any) -> None:
    with running_server(monai_label_app(label_names, **options), ready=lambda h: True) as url:
        with MonaiLabelPredictor(url, "vertebra_seg") as predictor:
            got = predictor.predict(spine_phantom())
    assert np.array_equal(got.mask, expected.mask)  # type: ignore[arg-type]


def test_json_only_answer_is_a_clear_error() -> None:
    with running_server(monai_label_app(TOTALSEG_LABELS, answer="json"), ready=lambda h: True) as url:
        with MonaiLabelPredictor(url) as predictor, pytest.raises(BackendError) as caught:
            predictor.predict(spine_phantom())
    assert "without a label image" in str(caught.value)


def test_an_undeclared_label_value_is_refused() -> None:
    with running_server(monai_label_app(TOTALSEG_LABELS, extra_value=99), ready=lambda h: True) as url:
        with MonaiLabelPredictor(url) as predictor, pytest.raises(LabelVocabularyError) as caught:
            predictor.predict(spine_phantom())
    assert "[99]" in str(caught.value) and "vertebrae_C1" in str(caught.value)


def test_token_is_sent_and_a_wrong_one_refused() -> None:
    with running_server(monai_label_app(TOTALSEG_LABELS, token="abc"), ready=lambda h: True) as url:
        with MonaiLabelPredictor(url, token="abc") as good:
            assert good.model_name() == "vertebra_seg"
        with MonaiLabelPredictor(url, token="xyz") as bad, pytest.raises(BackendError) as caught:
            bad.info()
    assert "refused the token (HTTP 401" in str(caught.value)


@pytest.mark.parametrize(("name", "level"), [
    ("C1", 1), ("vertebrae_C7", 7), ("Th1", 8), ("th12", 19), ("T13", 28), ("vertebra_L5", 24),
    ("sacrum", 26), ("vertebrae_S1", 26), ("L6", 25), ("spleen", None), ("background", None), ("C8", None),
])
def test_label_names_to_canonical_levels(name: str, level: int | None) -> None:
    assert vertebra_id_from_label_name(name) == level


def test_canonical_label_map_shapes() -> None:
    assert canonical_label_map(["background", "C1", "liver"]) == {1: 1, 2: 0}
    assert canonical_label_map(["C2", "C3"]) == {1: 2, 2: 3}
    assert canonical_label_map({"background": 0, "vertebrae_L1": 31}) == {31: 20}
    with pytest.raises(MaskError, match="both mean T1"):
        canonical_label_map({"Th1": 8, "vertebrae_T1": 43})


def test_split_monailabel_url() -> None:
    assert split_monailabel_url("monailabel+https://h:8000/ml/?model=seg") == ("https://h:8000/ml", "seg")
    assert split_monailabel_url("monailabel+http://h:8000") == ("http://h:8000", None)
    with pytest.raises(InputError):
        split_monailabel_url("monailabel+ftp://h")
