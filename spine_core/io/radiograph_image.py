"""Read a radiograph saved as PNG or JPEG, with an optional JSON sidecar giving spacing and view.

The sidecar is ``<stem>.json`` beside the image, a small JSON object::

    {"pixel_spacing_mm": 0.15 | [row_mm, column_mm], "view": "lateral" | "AP" | "PA",
     "modality": "DX", "patient_id": "...", "description": "..."}   (every key optional)

An image has no spacing of its own: without a sidecar, or with a spacing that is not positive,
it is read with "spacing unknown" (measure in pixels), never guessed. A sidecar that is not a
JSON object is refused (one line: fix or remove it). Colour images are refused unless all their
channels are equal; sizes are checked from the file's header before it is decoded.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError
from spine_core.io.dicom_scan import SizeLimits
from spine_core.io.radiograph import (
    Spacing,
    check_image_size,
    display_affine,
    fit_int16,
    radiograph_meta,
    spacing_of,
    view_of,
)
from spine_core.volume import Volume

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: A sidecar larger than this is not "small"; refused unread.
MAX_SIDECAR_BYTES = 64 * 1024
_MODALITIES = ("DX", "CR", "OT", "RG", "PX", "XC")


@dataclass(frozen=True)
class Sidecar:
    """What a sidecar says (defaults when there is none)."""

    spacing: Spacing
    view: str = "unknown"
    modality: str = "OT"
    patient_id: str = ""
    description: str = ""
    warnings: list[str] = field(default_factory=list)


def sidecar_path(image: Path) -> Path:
    """``<stem>.json`` beside the image."""
    return image.with_suffix(".json")


def read_sidecar(image: Path) -> Sidecar:
    """The image's sidecar; "spacing unknown" when there is none (see the module docstring)."""
    path = sidecar_path(image)
    if not path.is_file():
        return Sidecar(Spacing(None, "unknown", f"spacing unknown (no sidecar {path.name} "
                               "giving pixel_spacing_mm): measurements are in pixels"),
                       warnings=[f"spacing unknown: {image.name} has no sidecar {path.name}; "
                                 "measurements are in pixels"])
    if path.stat().st_size > MAX_SIDECAR_BYTES:
        raise InputError(f"{path}: a sidecar of {path.stat().st_size} bytes is not a small JSON "
                         f"object (at most {MAX_SIDECAR_BYTES}); fix or remove it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc}); fix the sidecar or remove it (the image is "
                         "then read with spacing unknown)") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: the sidecar must be a JSON object such as "
                         '{"pixel_spacing_mm": 0.15, "view": "lateral"}; fix or remove it')
    notes: list[str] = []
    raw = data.get("pixel_spacing_mm")
    pair = [raw, raw] if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw
    spacing = spacing_of(None, None, None)
    if raw is not None:
        found = spacing_of(pair, None, None)
        if found.known:
            spacing = Spacing(found.mm, "sidecar", f"pixel_spacing_mm from {path.name}")
        else:
            notes.append(f"{path.name}: pixel_spacing_mm {raw!r} is not a positive number or "
                         "two; spacing unknown, measurements are in pixels")
    else:
        notes.append(f"{path.name} gives no pixel_spacing_mm; spacing unknown, measurements are "
                     "in pixels")
    if not spacing.known:
        spacing = Spacing(None, "unknown", notes[-1])
    view_text = str(data.get("view", "") or "")
    view = view_of(view_text)
    if view_text and view == "unknown":
        notes.append(f"{path.name}: view {view_text!r} is not lateral, AP or PA; view unknown")
    modality = str(data.get("modality", "OT") or "OT").upper()
    if modality not in _MODALITIES:
        notes.append(f"{path.name}: modality {modality!r} is not one of {', '.join(_MODALITIES)}; "
                     "OT used")
        modality = "OT"
    return Sidecar(spacing, view, modality, str(data.get("patient_id", "") or "")[:64],
                   str(data.get("description", "") or "")[:256], notes)


def image_size(path: Path, limits: SizeLimits | None = None) -> tuple[int, int]:
    """(rows, columns) from the file's header, checked against the limits; nothing decoded."""
    from PIL import Image, UnidentifiedImageError

    limits = limits or SizeLimits()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                columns, rows = img.size
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: the image claims more pixels than can be read ({exc}); the "
                         "header is corrupt — re-export the image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: not a readable PNG or JPEG ({exc}); re-export the image") from None
    check_image_size(rows, columns, str(path), limits)
    return rows, columns


def _grey(path: Path, limits: SizeLimits) -> npt.NDArray[Any]:
    from PIL import Image

    image_size(path, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                opened.load()
                mode = opened.mode
                img = opened.convert("RGBA") if mode in ("P", "PA") else opened
                array = np.asarray(img)
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: the image data cannot be decoded ({exc}); the file is damaged "
                         "— re-export it") from None
    if array.ndim == 3:
        colour = array[..., :3] if array.shape[2] >= 3 else array[..., :1]
        if not (colour == colour[..., :1]).all():
            raise InputError(f"{path}: a colour image ({mode}); radiographs are read in greyscale "
                             "— export it as greyscale PNG or JPEG")
        array = colour[..., 0]
    return array


def load_image_radiograph(path: Path | str, limits: SizeLimits | None = None) -> Volume:
    """One PNG/JPEG radiograph as a one-slice Volume (meta as for DICOM radiographs)."""
    path = Path(path)
    side = read_sidecar(path)
    array = _grey(path, limits or SizeLimits())
    if array.dtype.kind in "ui":
        lo, hi = float(np.iinfo(array.dtype).min), float(np.iinfo(array.dtype).max)
        values, offset = fit_int16(array, lo, hi)
    else:
        lo, hi = float(array.min()), float(array.max())
        values, offset = array.astype(np.float32), 0
    meta: dict[str, Any] = {
        "modality": side.modality, "files": [str(path)], "sop_uids": [""],
        "instance_numbers": [1], "frame_numbers": [1], "patient_id": side.patient_id,
        "series_description": side.description or path.name, "photometric": "MONOCHROME2",
        "inverted": False, "value_range": [lo + offset, hi + offset], "value_offset": offset,
        "dtype": str(values.dtype),
        **radiograph_meta(side.spacing, side.view),
        "window": None, "window_source": "",
        "warnings": list(side.warnings),
    }
    return Volume(values[np.newaxis], display_affine(side.spacing.mm), meta)
