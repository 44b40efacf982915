"""`MonaiLabelPredictor`: vertebra segmentation from a MONAI Label server.

MONAI Label's REST API (``monailabel/endpoints/infer.py`` and ``interfaces/app.py`` upstream):

* ``GET /info/`` — the app: ``name``, ``version``, ``models`` = {model name: {``type``,
  ``labels``, ``dimension``, ``description``…}}. ``labels`` is {label name: value} or a list of
  names (value = position + 1, or position when the list starts with ``background``).
* ``POST /infer/{model}`` — multipart form: ``file`` (the image, here NIfTI-gzip) and ``params``
  (JSON text). The answer is, by default, ``multipart/form-data`` with a ``params`` JSON part and
  the label file; with ``?output=image`` just the label file; JSON alone when there is no image.

The label values are mapped to canonical level ids through the label *names* (``C1``, ``Th1``,
``vertebrae_C1``, ``sacrum``…); non-vertebra classes become background, and a value the model did
not declare is an error. The label image is brought onto the input grid through the affines:
first an exact axis permutation/flip (nibabel orientations), then, only if the grids still differ
(a crop, another spacing), nearest-neighbour resampling. MONAI Label gives no fracture
probabilities: ``level_probabilities`` is empty and ``patient_probability`` is NaN.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import httpx
import nibabel as nib
import numpy as np
import numpy.typing as npt

from spine_core.config import Settings
from spine_core.errors import BackendError, InputError, LabelVocabularyError, MaskError, ModelLoadError
from spine_core.inference.client import RetryPolicy, backend_timeout, send
from spine_core.inference.protocol import ModelInfo, StudyPrediction
from spine_core.labels import TOTALSEG_NAMES, LabelVocabulary, level_id, level_name
from spine_core.progress import Progress
from spine_core.volume import Volume, axcodes_from_affine, from_nifti_arrays

#: Largest difference (mm) between two affines still taken as the same grid (NIfTI stores float32).
GRID_TOLERANCE_MM = 1e-3


class MonaiLabelPredictor:
    """A segmentation-only predictor backed by a MONAI Label server.

    Args:
        url: the server, ``http(s)://HOST:PORT`` (a ``monailabel+`` prefix is accepted).
        model: the MONAI Label model to run; None = the only model whose labels name vertebrae.
        token: bearer token, when the server has authentication on.
        timeout_s: read timeout of one request (connect timeout at most 10 s).
        retry: retries for an unreachable or busy server.
        params: extra inference parameters sent as the ``params`` form field.
        transport: an httpx transport (tests or custom TLS); None = the default.
    """

    def __init__(
        self,
        url: str,
        model: str | None = None,
        token: str = "",
        *,
        timeout_s: float = 120.0,
        retry: RetryPolicy = RetryPolicy(),
        params: dict[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base = url.strip()
        if base.lower().startswith("monailabel+"):
            base = base[len("monailabel+"):]
        base = base.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise InputError(f"MONAI Label URL '{url}' must start with monailabel+http:// or monailabel+https://")
        self.url = base
        self.retry = retry
        self.params = dict(params or {})
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(headers=headers, timeout=backend_timeout(timeout_s), transport=transport)
        self._service = f"MONAI Label server at {base}"
        self._requested_model = model
        self._server_info: dict[str, Any] | None = None
        self._model: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MonaiLabelPredictor:
        """From ``SPINE_BACKEND_URL=monailabel+http://HOST:PORT[/PATH][?model=NAME]``."""
        base, model = split_monailabel_url(settings.backend_url)
        return cls(base, model, settings.backend_token, timeout_s=settings.backend_timeout_s, **kwargs)

    # -- what the server offers -------------------------------------------------------------------

    def server_info(self) -> dict[str, Any]:
        """``GET /info/`` (cached)."""
        if self._server_info is None:
            response = send(self._client, "GET", f"{self.url}/info/", service=self._service, retry=self.retry)
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
                raise BackendError(
                    f"{self._service} answered /info/ without a 'models' object; "
                    "is the URL a MONAI Label server?"
                )
            self._server_info = data
        return self._server_info

    def models(self) -> dict[str, dict[str, Any]]:
        """Model name -> its ``/info/`` entry (type, labels, description...)."""
        return {str(k): dict(v) for k, v in self.server_info()["models"].items() if isinstance(v, dict)}

    def model_name(self) -> str:
        """The model this predictor runs (the requested one, else the only vertebra model).

        Raises:
            ModelLoadError: the requested model does not exist, or no/several models segment
                vertebrae and none was requested.
        """
        if self._model is not None:
            return self._model
        models = self.models()
        if self._requested_model is not None:
            if self._requested_model not in models:
                raise ModelLoadError(
                    f"{self._service} has no model '{self._requested_model}' (it has: "
                    f"{', '.join(sorted(models)) or 'none'}); fix ?model= in SPINE_BACKEND_URL"
                )
            self._model = self._requested_model
            return self._model
        spine = sorted(n for n, m in models.items() if _names_vertebrae(m.get("labels") or {}))
        if len(spine) != 1:
            found = ", ".join(spine) if spine else "none"
            raise ModelLoadError(
                f"{self._service}: {len(spine)} models name vertebra labels ({found}); choose one with "
                "?model=NAME in SPINE_BACKEND_URL, e.g. monailabel+http://host:8000?model=segmentation_vertebra"
            )
        self._model = spine[0]
        return self._model

    def info(self) -> ModelInfo:
        server = self.server_info()
        name = self.model_name()
        entry = self.models()[name]
        card = {
            "source": "MONAI Label",
            "server": self.url,
            "app": server.get("name", ""),
            "model": name,
            "type": entry.get("type", ""),
            "description": entry.get("description", ""),
            "labels": entry.get("labels", {}),
            "outputs": "segmentation only (no fracture probabilities)",
        }
        return ModelInfo(f"monailabel/{name}", str(server.get("version", "unknown")), card)

    # -- inference --------------------------------------------------------------------------------

    def predict(self, volume: Volume, progress: Progress | None = None) -> StudyPrediction:
        """Upload the volume as NIfTI, map the returned labels to canonical ids on the input grid.

        Raises:
            BackendError (or a subclass): the server fails, answers no label image, or a label that
                does not overlap the image; LabelVocabularyError: a label value the model did not
                declare; ModelLoadError: no usable model.
        """
        report = progress or (lambda fraction, text: None)
        started = time.perf_counter()
        name = self.model_name()
        declared = self.models()[name].get("labels") or {}
        report(0.0, "encoding the study as NIfTI")
        body = volume_to_nifti_gz(volume)
        report(0.1, f"sending {len(body) / 2**20:.1f} MB to the {self._service} (model {name})")
        response = send(
            self._client,
            "POST",
            f"{self.url}/infer/{quote(name, safe='')}",
            service=self._service,
            retry=self.retry,
            files={"file": ("image.nii.gz", body, "application/gzip")},
            data={"params": json.dumps(self.params)},
        )
        uploaded = time.perf_counter()
        report(0.8, "reading the label image")
        label_bytes, result = parse_infer_response(response)
        if label_bytes is None:
            raise BackendError(
                f"{self._service} answered model '{name}' without a label image (params: "
                f"{json.dumps(result)[:200]}); is it a segmentation model?"
            )
        label_names = result.get("label_names")
        names = label_names if isinstance(label_names, dict) else declared
        try:
            vocabulary = LabelVocabulary(f"MONAI Label model '{name}'", canonical_label_map(names))
        except (TypeError, ValueError, AttributeError) as exc:
            raise BackendError(
                f"{self._service}: model '{name}' declares labels that are not name -> value ({names!r:.200})"
            ) from exc
        label = nifti_bytes_to_volume(label_bytes, source=f"{self._service} label")
        try:
            canonical = vocabulary.canonical(
                _integer_labels(label.array), source=f"the label of model '{name}'"
            )
        except LabelVocabularyError as exc:
            raise LabelVocabularyError(f"{exc} (the model declares: {names})") from None
        mask = onto_grid(label.with_array(canonical), volume)
        report(0.95, "computing centroids")
        timings = {"monailabel_request": uploaded - started, "total": time.perf_counter() - started}
        return StudyPrediction(
            model=self.info(),
            mask=mask,
            level_probabilities={},
            patient_probability=math.nan,
            centroids=level_centroids(mask, volume.affine),
            timings=timings,
            device=f"monailabel:{self.url}",
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MonaiLabelPredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# pure helpers (tested on their own)


def split_monailabel_url(url: str) -> tuple[str, str | None]:
    """``monailabel+http://h:8000/p?model=m`` -> (``http://h:8000/p``, ``"m"``)."""
    raw = url.strip()
    if raw.lower().startswith("monailabel+"):
        raw = raw[len("monailabel+"):]
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"'{url}' is not a MONAI Label URL; expected monailabel+http://HOST:PORT[?model=NAME]")
    models = parse_qs(parts.query).get("model")
    model = models[0] if models else None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", "")), model


def vertebra_id_from_label_name(name: str) -> int | None:
    """Canonical level id of a MONAI Label / TotalSegmentator label name, None if not a vertebra.

    Accepts ``C1``, ``Th12``, ``T12``, ``L5``, ``vertebrae_C1``, ``vertebra_L1``, ``sacrum``, ``S``.
    """
    text = str(name).strip()
    if text in TOTALSEG_NAMES:
        return TOTALSEG_NAMES[text]
    key = text.lower().replace(" ", "_")
    for prefix in ("vertebrae_", "vertebra_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    if key.startswith("th") and key[2:].isdigit():
        key = "t" + key[2:]
    try:
        return level_id(key)
    except LabelVocabularyError:
        return None


def canonical_label_map(labels: dict[str, Any] | list[Any]) -> dict[int, int]:
    """Model label value -> canonical level id (0 for background and non-vertebra classes).

    Raises:
        MaskError: two label names claim the same canonical level.
    """
    if isinstance(labels, dict):
        pairs = [(str(k), int(v)) for k, v in labels.items()]
    else:
        names = [str(n) for n in labels]
        start = 0 if names and names[0].lower() == "background" else 1
        pairs = [(n, i + start) for i, n in enumerate(names)]
    mapping: dict[int, int] = {}
    seen: dict[int, str] = {}
    for name, value in pairs:
        if value == 0:
            continue
        canonical = vertebra_id_from_label_name(name) or 0
        if canonical and canonical in seen:
            raise MaskError(f"labels '{seen[canonical]}' and '{name}' both mean {level_name(canonical)}")
        if canonical:
            seen[canonical] = name
        mapping[value] = canonical
    return mapping


def _names_vertebrae(labels: Any) -> bool:
    try:
        return any(canonical_label_map(labels).values())
    except (MaskError, TypeError, ValueError, AttributeError):
        return False


def volume_to_nifti_gz(volume: Volume, compresslevel: int = 1) -> bytes:
    """The volume as NIfTI-1 gzip bytes (RAS affine in sform and qform, scanner space)."""
    data, ras = volume.to_nifti_arrays()
    img = nib.Nifti1Image(np.asarray(data), ras)
    img.set_sform(ras, code=1)
    img.set_qform(ras, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=compresslevel)


def nifti_bytes_to_volume(raw: bytes, *, source: str = "label") -> Volume:
    """A 3-D NIfTI file's bytes (gzip or not) as a Volume in our convention.

    Raises:
        BackendError: the bytes are not a 3-D NIfTI image.
    """
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        sizeof_hdr = {int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")}
        image_class = nib.Nifti2Image if 540 in sizeof_hdr else nib.Nifti1Image
        img = image_class.from_bytes(data)
        array = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds on corrupt input
        raise BackendError(f"{source} is not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise BackendError(f"{source} has shape {array.shape}; a 3-D label image was expected")
    return from_nifti_arrays(array, img.affine)


def onto_grid(label: Volume, grid: Volume) -> npt.NDArray[np.uint8]:
    """The label's voxels on ``grid`` (shape and affine), through the two affines.

    Exact when the grids differ only by axis order/flips; otherwise nearest-neighbour resampling,
    background outside the label's field of view.

    Raises:
        BackendError: the label has voxels but none of them lands inside the grid.
    """
    reoriented = label.reoriented(axcodes_from_affine(grid.affine))
    if reoriented.shape == grid.shape and np.allclose(
        reoriented.affine, grid.affine, rtol=0, atol=GRID_TOLERANCE_MM
    ):
        return np.ascontiguousarray(reoriented.array, dtype=np.uint8)
    from scipy import ndimage

    # index in the label = inv(label affine) @ grid affine @ index in the grid
    transform = np.linalg.inv(reoriented.affine) @ grid.affine
    out = ndimage.affine_transform(
        np.asarray(reoriented.array, dtype=np.uint8), transform[:3, :3], offset=transform[:3, 3],
        output_shape=grid.shape, order=0, mode="constant", cval=0, prefilter=False,
    )
    if reoriented.array.any() and not out.any():
        raise BackendError(
            "the label image returned does not overlap the study (affines too far apart); the server "
            "may have written the label in another space"
        )
    return out.astype(np.uint8, copy=False)


def level_centroids(
    mask: npt.NDArray[np.integer], affine: npt.ArrayLike
) -> dict[str, tuple[float, float, float]]:
    """Level name -> LPS mm centroid of its voxels in ``mask``."""
    from scipy import ndimage

    ids = [int(i) for i in np.unique(mask) if i != 0]
    if not ids:
        return {}
    centres = ndimage.center_of_mass(np.ones(mask.shape, dtype=np.uint8), mask, ids)
    aff = np.asarray(affine, dtype=np.float64)
    out: dict[str, tuple[float, float, float]] = {}
    for lid, centre in zip(ids, centres):
        xyz = aff[:3, :3] @ np.asarray(centre) + aff[:3, 3]
        out[level_name(lid)] = (float(xyz[0]), float(xyz[1]), float(xyz[2]))
    return out


def parse_infer_response(response: httpx.Response) -> tuple[bytes | None, dict[str, Any]]:
    """(label file bytes or None, result params) from a ``/infer`` answer of any of its shapes."""
    ctype = response.headers.get("content-type", "")
    if ctype.lower().startswith("multipart/"):
        label: bytes | None = None
        params: dict[str, Any] = {}
        for headers, body in _multipart_parts(response.content, ctype):
            disposition = headers.get("content-disposition", "")
            if "filename=" in disposition:
                label = body
            elif 'name="params"' in disposition:
                params = _json_object(body)
        return label, params
    if "json" in ctype.lower():
        return None, _json_object(response.content)
    return response.content, {}


def _multipart_parts(body: bytes, content_type: str) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into (lower-cased headers, payload) parts, byte-exact."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        raise BackendError(f"multipart answer without a boundary ({content_type})")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[tuple[dict[str, str], bytes]] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # closing delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise BackendError("malformed multipart answer (a part without headers)")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload[:-2] if payload.endswith(b"\r\n") else payload))
    return parts


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8") or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    if isinstance(value, str):  # MONAI Label sometimes double-encodes params
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _integer_labels(array: npt.NDArray[Any]) -> npt.NDArray[np.integer]:
    """Label values as integers; refuses fractional or negative values (an interpolated label)."""
    arr = np.asarray(array)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise MaskError("the label image holds fractional values; it was interpolated, not a label map")
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise MaskError(f"the label image has dtype {arr.dtype}; an integer label map was expected")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise MaskError("the label image holds negative values; an integer label map was expected")
    return arr
