"""Read one radiograph (CR, DX, secondary capture) into a one-slice :class:`~spine_core.volume.Volume`.

A radiograph is a projection, not a slice of the patient: it has no ImagePositionPatient, so its
affine is a *display frame*: ``a0`` is a single nominal 1 mm "slice", rows increase along ``a1``
and columns along ``a2`` exactly as stored (the axial axis codes ``S, P, L``, so the viewer shows
it unflipped). The column steps are the pixel spacing when it is known.

What a reader needs to see it right is decided here, from the header, never guessed:

* **Spacing** (:func:`spacing_of`): PixelSpacing when valid; else ImagerPixelSpacing divided by
  EstimatedRadiographicMagnificationFactor when present (the size at the patient), else
  ImagerPixelSpacing alone (the size at the detector). Which one was used is recorded; without a
  valid value (missing, 0, negative, not finite) the spacing is *unknown*: the affine steps are
  1 (measure in pixels) and ``meta["spacing_source"] == "unknown"``.
* **Values**: stored values after RescaleSlope/Intercept; MONOCHROME1 is inverted (``lo + hi -
  v`` over the stored range) so bone is bright, and its window with it.
* **Window** (:func:`window_of`): the VOI LUT's input range when the file has a VOI LUT
  Sequence, else WindowCenter/WindowWidth, else none (the viewer picks one from the values).
* **View**: lateral, AP or PA from ViewPosition, else unknown.

Refused with one line naming the file (:class:`~spine_core.errors.DicomError`): several frames,
colour, an image under :data:`MIN_SIDE` pixels, a side over the size limit, pixel data shorter
than the header claims (all checked before any pixel is decoded, so memory stays bounded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import DicomError
from spine_core.io.dicom_scan import FileHeader, SizeLimits, _implausible_reason, read_header
from spine_core.render.windowing import Window
from spine_core.volume import Volume

#: SOP classes read as radiographs: CR, DX (presentation and processing, incl. intra-oral and
#: mammography variants) and secondary capture (single-frame and the multi-frame greyscale ones).
RADIOGRAPH_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX for presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX for processing",
    "1.2.840.10008.5.1.4.1.1.1.2": "mammography for presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "mammography for processing",
    "1.2.840.10008.5.1.4.1.1.1.3": "intra-oral for presentation",
    "1.2.840.10008.5.1.4.1.1.1.3.1": "intra-oral for processing",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "multi-frame single-bit secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "multi-frame greyscale byte secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "multi-frame greyscale word secondary capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "multi-frame true colour secondary capture",
}
#: Modalities of projection radiographs (whatever the SOP class).
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "RG", "PX", "IO", "MG"})
#: Smallest side, in pixels, an image must have to be read as a radiograph.
MIN_SIDE = 16

_VIEWS = {"LL": "lateral", "RL": "lateral", "LAT": "lateral", "LATERAL": "lateral",
          "LLD": "lateral", "RLD": "lateral", "AP": "AP", "PA": "PA"}
SPACING_SOURCES = ("PixelSpacing", "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
                   "ImagerPixelSpacing", "sidecar", "unknown")
_EXTRA_TAGS = ["PixelSpacing", "ImagerPixelSpacing", "EstimatedRadiographicMagnificationFactor",
               "ViewPosition", "VOILUTSequence", "WindowCenter", "WindowWidth",
               "PresentationIntentType", "PhotometricInterpretation", "PatientOrientation"]
#: The opposite of each direction letter of PatientOrientation (PS3.3 C.7.6.1.1.1).
_OPPOSITE = {"A": "P", "P": "A", "R": "L", "L": "R", "H": "F", "F": "H"}


def is_radiograph(modality: str, sop_class_uid: str) -> bool:
    """True for a projection radiograph or a secondary capture (read by this module)."""
    return modality.upper() in RADIOGRAPH_MODALITIES or sop_class_uid in RADIOGRAPH_CLASSES


@dataclass(frozen=True)
class Spacing:
    """Row and column spacing in mm (None when unknown) and where they came from."""

    mm: tuple[float, float] | None
    source: str  #: one of :data:`SPACING_SOURCES`
    note: str = ""  #: why it is unknown, or what the magnification correction did

    @property
    def known(self) -> bool:
        return self.mm is not None


@dataclass(frozen=True)
class RadiographHeader:
    """What the header says about one radiograph file (plain data; no pixels read)."""

    file: FileHeader
    spacing: Spacing
    view: str  #: lateral | AP | PA | unknown
    view_position: str  #: the header's ViewPosition as written ('' when absent)
    window: tuple[float, float] | None  #: (centre, width) in rescaled stored values
    window_source: str  #: "VOI LUT" | "WindowCenter/WindowWidth" | ""
    presentation_intent: str = ""
    warnings: list[str] = field(default_factory=list)
    #: PatientOrientation: the patient directions of the rows (left to right) and of the
    #: columns (top to bottom), e.g. ("P", "F"); None when absent or not valid
    orientation: tuple[str, str] | None = None


def _positive_pair(value: Any) -> tuple[float, float] | None:
    try:
        items = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(items) != 2 or not all(math.isfinite(v) and v > 0 for v in items):
        return None
    return items[0], items[1]


def spacing_of(pixel_spacing: Any, imager_spacing: Any, magnification: Any) -> Spacing:
    """The spacing to measure with (see the module docstring); invalid values are never used."""
    if pixel_spacing is not None:
        pair = _positive_pair(pixel_spacing)
        if pair is not None:
            return Spacing(pair, "PixelSpacing")
    if imager_spacing is not None:
        pair = _positive_pair(imager_spacing)
        if pair is not None:
            factor = _float_or_none(magnification)
            if factor is not None and math.isfinite(factor) and factor >= 1.0:
                return Spacing((pair[0] / factor, pair[1] / factor),
                               "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor",
                               f"detector spacing {pair[0]:g}×{pair[1]:g} mm / magnification "
                               f"{factor:g}")
            note = ("" if magnification is None else
                    f"EstimatedRadiographicMagnificationFactor {magnification!s} is not a factor "
                    ">= 1 and was not applied; ")
            return Spacing(pair, "ImagerPixelSpacing",
                           note + "spacing at the detector: lengths at the patient are smaller")
    named = (("PixelSpacing", pixel_spacing), ("ImagerPixelSpacing", imager_spacing))
    given = [f"{name} {_shown(v)}" for name, v in named if v is not None]
    why = ("; ".join(given) + " not two positive numbers") if given else "no PixelSpacing or " \
        "ImagerPixelSpacing in the header"
    return Spacing(None, "unknown", f"spacing unknown ({why}): measurements are in pixels")


def _shown(value: Any) -> str:
    """A header value as people write it: ``[0.0, 0.0]`` rather than pydicom's reprs."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return str(value)
    return "[" + ", ".join(str(_float_or_none(v)) if _float_or_none(v) is not None else repr(v)
                           for v in value) + "]"


def _float_or_none(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


#: Frontal views: the radiograph model, which counts vertebrae on lateral films, refuses them.
FRONTAL_VIEWS: frozenset[str] = frozenset({"AP", "PA"})


def with_view(volume: Volume, view: str) -> Volume:
    """``volume`` (the same voxels) whose view is ``view``, set by a person over the header's."""
    return Volume(volume.array, volume.affine, {**volume.meta, "view": view})


def view_of(view_position: str) -> str:
    """lateral, AP or PA from a ViewPosition, else unknown."""
    return _VIEWS.get(view_position.strip().upper(), "unknown")


def window_of(ds: Any) -> tuple[tuple[float, float] | None, str]:
    """(centre, width) from the VOI LUT's input range or WindowCenter/WindowWidth, and which."""
    voi = ds.get("VOILUTSequence")
    if voi:
        descriptor = voi[0].get("LUTDescriptor")
        try:
            entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
        except (TypeError, ValueError, IndexError):
            entries = 0
        if entries > 1:
            return (first + entries / 2.0, float(entries)), "VOI LUT"
    centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if centre is not None and width is not None:
        c = _float_or_none(centre[0] if _is_multi(centre) else centre)
        w = _float_or_none(width[0] if _is_multi(width) else width)
        if c is not None and w is not None and math.isfinite(c) and math.isfinite(w) and w >= 1:
            return (c, w), "WindowCenter/WindowWidth"
    return None, ""


def _is_multi(value: Any) -> bool:
    return not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__getitem__")


def check_image_size(rows: int, columns: int, where: str, limits: SizeLimits) -> None:
    """Refuse an image under :data:`MIN_SIDE` or over the side limit, before any pixel is read."""
    if rows < MIN_SIDE or columns < MIN_SIDE:
        raise DicomError(f"{where}: the image is {rows}×{columns} pixels, too small to be a "
                         f"radiograph (at least {MIN_SIDE}×{MIN_SIDE}); export the full-size image")
    if rows > limits.max_side or columns > limits.max_side:
        raise DicomError(f"{where}: the image claims {rows}×{columns} pixels, more than "
                         f"{limits.max_side} per side (SPINE_MAX_IMAGE_SIDE); the header is "
                         "corrupt — re-export the file, or raise the limit if it is real")


def read_radiograph_header(path: Path | str, limits: SizeLimits | None = None) -> RadiographHeader:
    """Header of one radiograph file, checked (see the module docstring for what is refused)."""
    import pydicom

    path = Path(path)
    limits = limits or SizeLimits()
    h = read_header(path)
    where = str(path)
    if not h.has_pixels:
        raise DicomError(f"{where}: no pixel data ({h.sop_class_name}); not an image")
    if h.n_frames > 1:
        raise DicomError(f"{where}: {h.n_frames} frames; a radiograph case is one image — export "
                         "the frame to read as a single-frame file")
    if h.samples_per_pixel != 1 or h.photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomError(f"{where}: a colour image ({h.photometric or '?'}, SamplesPerPixel "
                         f"{h.samples_per_pixel}); radiographs are read in greyscale — export it "
                         "as MONOCHROME2")
    check_image_size(h.rows, h.columns, where, limits)
    if h.bits_allocated not in (8, 16):
        raise DicomError(f"{where}: BitsAllocated {h.bits_allocated}; radiographs are read with "
                         "8 or 16 bits per pixel — export it as 16-bit greyscale")
    reason = _implausible_reason(replace(h, frames=()), limits)  # spacing is judged below
    if reason:
        raise DicomError(f"{where}: {reason}")
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=_EXTRA_TAGS)
    spacing = spacing_of(ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing"),
                         ds.get("EstimatedRadiographicMagnificationFactor"))
    window, window_source = window_of(ds)
    view_position = str(ds.get("ViewPosition", "") or "")
    warnings = [spacing.note] if not spacing.known else []
    return RadiographHeader(
        file=h, spacing=spacing, view=view_of(view_position), view_position=view_position,
        window=window, window_source=window_source,
        presentation_intent=str(ds.get("PresentationIntentType", "") or ""), warnings=warnings,
        orientation=orientation_of(ds.get("PatientOrientation")))


def orientation_of(value: Any) -> tuple[str, str] | None:
    """PatientOrientation's two directions, upper case (e.g. ("P", "F")), or None when absent or
    not two strings of A, P, R, L, H, F."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        pair = [str(v).strip().upper() for v in value]
    except TypeError:
        return None
    if len(pair) != 2 or not all(p and set(p) <= set(_OPPOSITE) for p in pair):
        return None
    return pair[0], pair[1]


def edge_letters(meta: dict[str, Any]) -> tuple[str, str, str, str]:
    """The letters at a film's top, bottom, left and right edges from its PatientOrientation
    (rows run towards the right edge's letter, columns towards the bottom's); all empty when
    the header gives none, so nothing is guessed."""
    pair = meta.get("patient_orientation")
    if not pair or len(pair) != 2:
        return "", "", "", ""
    rows, cols = str(pair[0]), str(pair[1])
    return _opposite(cols), cols, _opposite(rows), rows


def _opposite(direction: str) -> str:
    return "".join(_OPPOSITE.get(c, "") for c in direction)


def display_affine(rows_cols_mm: tuple[float, float] | None) -> npt.NDArray[np.float64]:
    """The display-frame affine of a one-slice radiograph (pixels when the spacing is unknown)."""
    row_mm, col_mm = rows_cols_mm or (1.0, 1.0)
    affine = np.zeros((4, 4))
    affine[2, 0] = 1.0  # a0: one nominal slice towards S
    affine[1, 1] = row_mm  # rows towards P
    affine[0, 2] = col_mm  # columns towards L
    affine[3, 3] = 1.0
    return affine


def invert_monochrome1(values: npt.NDArray[Any], lo: float, hi: float) -> npt.NDArray[Any]:
    """``lo + hi - values`` in the values' own dtype when it fits, else float32."""
    lim = np.iinfo(np.int16)
    if values.dtype == np.int16 and lim.min <= lo and hi <= lim.max:  # the result stays in [lo, hi]
        out = np.int32(lo + hi) - values.astype(np.int32)
        return out.astype(np.int16)
    return (np.float32(lo + hi) - values.astype(np.float32)).astype(np.float32)


def fit_int16(values: npt.NDArray[Any], lo: float, hi: float) -> tuple[npt.NDArray[Any], int]:
    """Integer values spanning at most 65536 levels as int16, shifted by an offset when their
    range ``[lo, hi]`` does not fit int16 (16-bit unsigned detectors); returns (values, offset),
    shown = stored + offset. The viewer holds int16, so nothing is clipped. Others unchanged."""
    lim = np.iinfo(np.int16)
    if values.dtype == np.int16:
        return values, 0
    integral = values.dtype.kind in "iu" or bool(np.all(np.mod(values, 1) == 0))
    if not integral or hi - lo > lim.max - lim.min:
        return values, 0
    offset = 0 if lim.min <= lo and hi <= lim.max else int(lim.min - lo)
    return (values.astype(np.int64 if values.dtype.kind in "iu" else np.float64) + offset
            ).astype(np.int16), offset


def load_radiograph(path: Path | str, limits: SizeLimits | None = None) -> Volume:
    """Decode one radiograph file into a one-slice Volume (see the module docstring).

    ``meta`` holds modality, sop_uids, photometric, inverted, spacing_source, spacing_note,
    view, view_position, window (centre, width) and window_source, value_offset (see
    :func:`fit_int16`), and the descriptive tags.
    """
    from spine_core.io.dicom_pixels import FrameRef, check_decodable, decode_stack
    from spine_core.io.dicom_scan import FrameGeometry

    header = read_radiograph_header(path, limits)
    h = header.file
    check_decodable(h.transfer_syntax, where=f"{h.path}: ")
    geom = h.frames[0] if h.frames else FrameGeometry(None, None, None)
    values, note = decode_stack([h], [FrameRef(0, 0, geom)], 1)
    bits = h.bits_stored or h.bits_allocated
    lo_stored, hi_stored = ((-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if h.pixel_representation
                            else (0, (1 << bits) - 1))
    ends = sorted((lo_stored * geom.slope + geom.intercept, hi_stored * geom.slope + geom.intercept))
    window = header.window
    inverted = h.photometric == "MONOCHROME1"
    if inverted:
        values = invert_monochrome1(values, ends[0], ends[1])
        if window is not None:
            window = (ends[0] + ends[1] - window[0], window[1])
    values, offset = fit_int16(values, ends[0], ends[1])
    if window is not None:
        window = (window[0] + offset, window[1])
    meta: dict[str, Any] = {
        "study_uid": h.study_uid, "series_uid": h.series_uid, "modality": h.modality,
        "sop_class_uid": h.sop_class_uid, "sop_uids": [h.sop_uid], "files": [str(h.path)],
        "instance_numbers": [h.instance_number], "frame_numbers": [1],
        **{k: v for k, v in h.tags.items()},
        "transfer_syntaxes": [h.transfer_syntax], "photometric": h.photometric,
        "inverted": inverted, "value_range": [ends[0] + offset, ends[1] + offset],
        "value_offset": offset,
        **radiograph_meta(header.spacing, header.view, header.view_position),
        "patient_orientation": list(header.orientation) if header.orientation else None,
        "window": list(window) if window is not None else None,
        "window_source": header.window_source,
        "presentation_intent": header.presentation_intent, "dtype": str(values.dtype),
        "warnings": [*header.warnings, *([note] if note else [])],
    }
    return Volume(values, display_affine(header.spacing.mm), meta)


def radiograph_meta(spacing: Spacing, view: str, view_position: str = "") -> dict[str, Any]:
    """The Volume.meta keys every radiograph reader sets (DICOM or PNG/JPEG)."""
    return {"kind": "radiograph", "spacing_source": spacing.source,
            "spacing_mm": list(spacing.mm) if spacing.mm else None,
            "spacing_note": spacing.note, "view": view, "view_position": view_position}


def is_radiograph_volume(volume: Volume) -> bool:
    """True for a volume read by this module or :mod:`spine_core.io.radiograph_image`."""
    return volume.meta.get("kind") == "radiograph"


def display_window(volume: Volume) -> tuple[float, float] | None:
    """(width, level) to show a radiograph with: the file's window (see :func:`window_of`), else
    its 0.5–99.5th percentile of values; None for a volume that is not a radiograph."""
    if volume.meta.get("kind") != "radiograph":
        return None
    first = window_presets(volume)[0]
    return first.width, first.level


def window_presets(volume: Volume) -> tuple[Window, ...]:
    """Keys 1, 2 and 3 for a radiograph, whose values are detector units, not HU:

    1. the file's window (its VOI LUT or window centre/width), else "auto": the 0.5–99.5th
       percentiles of its values (the film opens in it: :func:`display_window`);
    2. "full range": every value the image holds;
    3. "bone detail": the brighter half of the values (median to 99.8th percentile), where
       vertebrae sit on a display with bone bright (MONOCHROME1 is already inverted).

    Presets 2 and 3 are in whole detector units, as the viewer sets windows. One pass over a
    1-in-16 sample of the pixels gives every figure.
    """
    sample = np.asarray(volume.array[0, ::4, ::4], dtype=np.float32)
    lo, auto_lo, mid, auto_hi, top, hi = (
        float(v) for v in np.percentile(sample, [0, 0.5, 50, 99.5, 99.8, 100]))
    window = volume.meta.get("window")
    first = (Window(float(window[1]), float(window[0]), "the file's window") if window else
             Window(max(auto_hi - auto_lo, 1.0), (auto_lo + auto_hi) / 2, "auto"))
    return (first, Window(max(round(hi - lo), 1), round((lo + hi) / 2), "full range"),
            Window(max(round(top - mid), 1), round((mid + top) / 2), "bone detail"))


def viewer_options(volume: Volume) -> dict[str, Any]:
    """What the workstation viewer needs to show ``volume`` (its keyword arguments): CT opens in
    the bone window with the viewer's HU presets; a radiograph opens in its first preset
    (:func:`window_presets`), with its units (pixels where the spacing is unknown, else mm; no
    value unit) and ``film``, the letters of its edges (:func:`edge_letters`: one image, no
    planes)."""
    if volume.meta.get("kind") != "radiograph":
        return {"window": "bone"}
    presets = window_presets(volume)
    return {"window": (presets[0].width, presets[0].level), "presets": presets,
            "length_unit": "mm" if volume.meta.get("spacing_mm") else "px", "value_unit": "",
            "film": edge_letters(volume.meta)}


def describe(meta: dict[str, Any], set_view: str = "", set_by: str = "") -> str:
    """One line for people: modality, view, spacing and where it came from, the window's source.

    ``set_view``: the view a person set (``set_by``), shown over the header's."""
    spacing = meta.get("spacing_mm")
    source = meta.get("spacing_source", "unknown")
    if spacing:
        sources = {"PixelSpacing": "PixelSpacing",
                   "ImagerPixelSpacing/EstimatedRadiographicMagnificationFactor":
                       "ImagerPixelSpacing ÷ magnification",
                   "ImagerPixelSpacing": "ImagerPixelSpacing, at the detector",
                   "sidecar": "the sidecar"}
        size = f"pixel {spacing[0]:.3g}×{spacing[1]:.3g} mm ({sources.get(source, source)})"
    else:
        size = "spacing unknown: measurements in pixels"
    window = {"VOI LUT": "window from the file's VOI LUT",
              "WindowCenter/WindowWidth": "window from the file"}.get(
                  meta.get("window_source", ""), "window from the image's values")
    view = meta.get("view", "unknown")
    said = f"view {view}" if view != "unknown" else "view unknown"
    if set_view:
        header = f"header: {view}" if view != "unknown" else "the header names none"
        said = f"view {set_view} (set by {set_by or 'a reader'}; {header})"
    return " · ".join((f"{meta.get('modality', '?')} radiograph", said, size, window))
