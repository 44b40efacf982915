"""Bytes on the wire between :class:`HttpPredictor` and the backend server.

Both payloads are zip archives of ``.npy`` arrays and one JSON header (what ``np.savez`` writes,
but with a chosen deflate level and without pickles):

* volume (request body, :data:`VOLUME_MEDIA_TYPE`): ``header.json`` (format version, shape, dtype,
  JSON-safe ``meta``), ``affine.npy`` (4×4 float64, our array-order LPS affine), ``volume.npy``.
* prediction (response body, :data:`PREDICTION_MEDIA_TYPE`): ``prediction.json`` (model, level
  probabilities, boxes, centroids, timings, device, shape), ``affine.npy`` (the grid the mask lies
  on), ``mask.npy`` (uint8, optional).

Every decoder checks what it reads: archive members, format version, a bound on the decoded size
(checked from the zip directory before anything is inflated), array rank, dtype, and an affine that
is finite, 4×4, non-singular and affine (last row ``0 0 0 1``). :func:`decode_prediction` also
checks that the mask lies on the grid of the volume it answers, so a mismatching answer is refused
as a whole.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError, MaskError
from spine_core.inference.protocol import ModelInfo, PredictedBox, StudyPrediction
from spine_core.volume import Volume

WIRE_VERSION = 1
VOLUME_MEDIA_TYPE = "application/vnd.spinereview.volume+zip"
PREDICTION_MEDIA_TYPE = "application/vnd.spinereview.prediction+zip"

#: Largest affine difference (mm, or mm per voxel step) accepted between a mask's grid and its image's
#: grid. Both sides send float64, so only arithmetic noise is expected.
AFFINE_TOLERANCE = 1e-4

_VOLUME_KINDS = "iuf"  # signed/unsigned integers and floats; no bool, complex or objects
_MAX_JSON_BYTES = 16 * 1024 * 1024


def encode_volume(volume: Volume, *, compress_level: int = 1) -> bytes:
    """Serialise a volume (voxels, affine, JSON-safe meta) for ``POST /predict``.

    Args:
        volume: the CT volume; its array is written as is (int16 HU stays int16).
        compress_level: zlib level 0–9; 0 stores the voxels uncompressed (fastest on a LAN).
    """
    header = {
        "format": "spinereview.volume",
        "version": WIRE_VERSION,
        "shape": list(volume.shape),
        "dtype": np.dtype(volume.array.dtype).str,
        "meta": _json_safe(volume.meta),
    }
    members = {"affine.npy": np.asarray(volume.affine, dtype=np.float64), "volume.npy": volume.array}
    return _write_zip(header, "header.json", members, compress_level)


def decode_volume(data: bytes, *, max_decoded_bytes: int | None = None) -> Volume:
    """Read a payload written by :func:`encode_volume`.

    Args:
        data: the request body.
        max_decoded_bytes: refuse archives whose members would inflate beyond this many bytes.

    Raises:
        InputError: not a volume payload, unknown version, too large once decoded, wrong rank or
            dtype, or an invalid affine; the message says which.
    """
    with _open_zip(data, "volume", max_decoded_bytes) as zf:
        header = _read_json(zf, "header.json", "volume")
        _check_header(header, "spinereview.volume")
        affine = check_affine(_read_array(zf, "affine.npy", "volume"))
        array = _read_array(zf, "volume.npy", "volume")
    if array.ndim != 3:
        raise InputError(f"volume payload holds a {array.ndim}-D array {array.shape}; send a 3-D CT volume")
    if array.dtype.kind not in _VOLUME_KINDS:
        raise InputError(f"volume payload has dtype {array.dtype}; send integer HU (int16) voxels")
    if list(array.shape) != list(header.get("shape", [])):
        raise InputError(
            f"volume payload header says shape {header.get('shape')} but holds {array.shape}; "
            "the payload is corrupt, send it again"
        )
    raw_meta = header.get("meta")
    meta = raw_meta if isinstance(raw_meta, dict) else {}
    return Volume(array, affine, dict(meta))


def encode_prediction(
    prediction: StudyPrediction,
    affine: npt.ArrayLike,
    shape: tuple[int, int, int],
    *,
    compress_level: int = 1,
) -> bytes:
    """Serialise a prediction made on the grid ``(shape, affine)`` of the input volume.

    Raises:
        MaskError: the prediction's mask does not have ``shape`` (a predictor bug; nothing is sent).
    """
    mask = prediction.mask
    if mask is not None and tuple(mask.shape) != tuple(shape):
        raise MaskError(
            f"the predictor returned a mask of shape {tuple(mask.shape)} for a volume of shape "
            f"{tuple(shape)}; the model must answer on the input grid"
        )
    header = {
        "format": "spinereview.prediction",
        "version": WIRE_VERSION,
        "shape": [int(s) for s in shape],
        "has_mask": mask is not None,
        "model": model_info_to_json(prediction.model),
        "level_probabilities": {str(k): float(v) for k, v in prediction.level_probabilities.items()},
        "patient_probability": float(prediction.patient_probability),
        "boxes": [box.to_json() for box in prediction.boxes],
        "centroids": {str(k): [float(c) for c in v] for k, v in prediction.centroids.items()},
        "timings": {str(k): float(v) for k, v in prediction.timings.items()},
        "device": str(prediction.device),
    }
    members: dict[str, npt.NDArray[Any]] = {"affine.npy": check_affine(affine)}
    if mask is not None:
        members["mask.npy"] = np.asarray(mask, dtype=np.uint8)
    return _write_zip(header, "prediction.json", members, compress_level)


def decode_prediction(
    data: bytes,
    *,
    expect_shape: tuple[int, int, int],
    expect_affine: npt.ArrayLike,
    max_decoded_bytes: int | None = None,
) -> StudyPrediction:
    """Read a payload written by :func:`encode_prediction` and check it answers the expected grid.

    Raises:
        InputError: not a prediction payload (corrupt, unknown version, malformed fields).
        MaskError: the mask's shape or the grid's affine differs from the volume that was sent.
    """
    with _open_zip(data, "prediction", max_decoded_bytes) as zf:
        header = _read_json(zf, "prediction.json", "prediction")
        _check_header(header, "spinereview.prediction")
        affine = check_affine(_read_array(zf, "affine.npy", "prediction"))
        mask = _read_array(zf, "mask.npy", "prediction") if header.get("has_mask") else None
    expected = np.asarray(expect_affine, dtype=np.float64)
    if not np.allclose(affine, expected, rtol=0.0, atol=AFFINE_TOLERANCE):
        raise MaskError(
            "the prediction lies on another grid than the volume sent (affine differs by up to "
            f"{float(np.max(np.abs(affine - expected))):.4g}); refusing it"
        )
    if list(header.get("shape", [])) != [int(s) for s in expect_shape]:
        raise MaskError(
            f"the prediction is for shape {header.get('shape')}, the volume sent has {tuple(expect_shape)}"
        )
    if mask is not None:
        if tuple(mask.shape) != tuple(expect_shape):
            raise MaskError(
                f"the mask has shape {mask.shape}, the volume sent has {tuple(expect_shape)}; refusing it"
            )
        if mask.dtype != np.uint8:
            raise MaskError(f"the mask has dtype {mask.dtype}; canonical level ids are uint8")
    try:
        return _prediction_from_header(header, mask)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"prediction payload has a malformed field ({type(exc).__name__}: {exc})") from exc


def model_info_to_json(info: ModelInfo) -> dict[str, Any]:
    """JSON object of a :class:`ModelInfo` (card values that JSON cannot hold become strings)."""
    return {"name": info.name, "version": info.version, "card": _json_safe(info.card)}


def model_info_from_json(data: dict[str, Any]) -> ModelInfo:
    """Inverse of :func:`model_info_to_json`.

    Raises:
        InputError: ``name`` or ``version`` is missing.
    """
    try:
        return ModelInfo(str(data["name"]), str(data["version"]), dict(data.get("card") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"model info lacks a field ({exc}); expected name, version and card") from exc


def check_affine(affine: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The affine as 4×4 float64 after checking it is finite, non-singular and affine.

    Raises:
        InputError: naming what is wrong with the matrix.
    """
    try:
        aff = np.asarray(affine, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"affine is not numeric ({exc})") from exc
    if aff.shape != (4, 4):
        raise InputError(f"affine must be 4x4, got shape {aff.shape}")
    if not np.all(np.isfinite(aff)):
        raise InputError("affine holds NaN or infinite values")
    if not np.allclose(aff[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"affine's last row must be 0 0 0 1, got {aff[3].tolist()}")
    if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise InputError("affine is singular (zero spacing or parallel axes)")
    return aff


# ---------------------------------------------------------------------------------------------
# helpers


def _probability(value: Any, name: str) -> float:
    p = float(value)
    if not (math.isnan(p) or 0.0 <= p <= 1.0):
        raise ValueError(f"{name} = {p} is not a probability (0..1, or NaN for 'not predicted')")
    return p


def _prediction_from_header(header: dict[str, Any], mask: npt.NDArray[np.uint8] | None) -> StudyPrediction:
    return StudyPrediction(
        model=model_info_from_json(header["model"]),
        mask=mask,
        level_probabilities={
            str(k): _probability(v, str(k)) for k, v in header["level_probabilities"].items()
        },
        patient_probability=_probability(header["patient_probability"], "patient probability"),
        boxes=[PredictedBox.from_json(b) for b in header.get("boxes", [])],
        centroids={
            str(k): (float(v[0]), float(v[1]), float(v[2])) for k, v in header.get("centroids", {}).items()
        },
        timings={str(k): float(v) for k, v in header.get("timings", {}).items()},
        device=str(header.get("device", "cpu")),
    )


def _write_zip(
    header: dict[str, Any], header_name: str, arrays: dict[str, npt.NDArray[Any]], compress_level: int
) -> bytes:
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0..9, got {compress_level}")
    method = zipfile.ZIP_STORED if compress_level == 0 else zipfile.ZIP_DEFLATED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, compresslevel=compress_level or None) as zf:
        zf.writestr(header_name, json.dumps(header, allow_nan=True))
        for name, array in arrays.items():
            with zf.open(name, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _open_zip(data: bytes, what: str, max_decoded_bytes: int | None) -> zipfile.ZipFile:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputError(
            f"the body is not a SpineReview {what} payload ({exc}); send it with the spine client"
        ) from exc
    if max_decoded_bytes is not None:
        total = sum(info.file_size for info in zf.infolist())
        if total > max_decoded_bytes:
            zf.close()
            raise InputError(
                f"the {what} payload would decode to {total / 2**20:.1f} MB, more than the "
                f"{max_decoded_bytes / 2**20:.1f} MB allowed; crop or downsample the study"
            )
    return zf


def _read_json(zf: zipfile.ZipFile, name: str, what: str) -> dict[str, Any]:
    try:
        info = zf.getinfo(name)
        if info.file_size > _MAX_JSON_BYTES:
            raise InputError(f"{what} payload header is {info.file_size} bytes; that is not a header")
        value = json.loads(zf.read(name).decode("utf-8"))
    except KeyError:
        raise InputError(
            f"{what} payload has no {name}; it was not written by this version of SpineReview"
        ) from None
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{what} payload's {name} is unreadable ({exc})") from exc
    if not isinstance(value, dict):
        raise InputError(f"{what} payload's {name} is not a JSON object")
    return value


def _read_array(zf: zipfile.ZipFile, name: str, what: str) -> npt.NDArray[Any]:
    try:
        _check_npy_size(zf, name, what)
        with zf.open(name) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except KeyError:
        raise InputError(f"{what} payload has no {name}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{what} payload's {name} is unreadable ({exc}); the payload is corrupt") from exc


def _check_npy_size(zf: zipfile.ZipFile, name: str, what: str) -> None:
    """Refuse a member whose .npy header claims more voxels than the member holds (before allocating)."""
    info = zf.getinfo(name)
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays are not accepted")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if nbytes > info.file_size:
        raise ValueError(f"header claims {nbytes} bytes of data but the member holds {info.file_size}")


def _check_header(header: dict[str, Any], expected_format: str) -> None:
    if header.get("format") != expected_format:
        raise InputError(f"payload is a '{header.get('format')}', expected '{expected_format}'")
    if header.get("version") != WIRE_VERSION:
        raise InputError(
            f"payload has wire format version {header.get('version')}, this side speaks {WIRE_VERSION}; "
            "install the same SpineReview version on the app and the backend"
        )


def _json_safe(value: Any) -> Any:
    """A JSON-encodable copy: dict/list/str/number/bool/None kept, anything else as its string."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else str(float(value))
    if isinstance(value, np.ndarray) and value.size <= 64:
        return _json_safe(value.tolist())
    return str(value)
