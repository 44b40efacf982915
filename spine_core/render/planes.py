"""Plane extraction: one slice of a plane cut from the display view, resampled to display pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from spine_core.errors import MaskError
from spine_core.render.display import _LAYOUTS, DisplayGeometry, Plane, ZoomBox, _plane
from spine_core.volume import Volume

Interpolation = Literal["nearest", "linear"]


@dataclass(frozen=True)
class PlaneImage:
    """One displayed slice: pixels plus what the viewer needs to label and measure it.

    Attributes:
        pixels: 2-D array in display orientation (zoom crop applied), dtype of the source.
        plane, index: which slice.
        pixel_spacing: mm per display pixel (row, col).
        aspect: height/width of a display pixel (1.0 with square pixels).
        edges: orientation letters at the (top, bottom, left, right) edges.
        position_mm: LPS coordinate of the slice along its axis (see ``slice_position_mm``).
        zoom: the crop applied, or None for the full plane.
    """

    pixels: npt.NDArray[Any]
    plane: Plane
    index: int
    pixel_spacing: tuple[float, float]
    aspect: float
    edges: tuple[str, str, str, str]
    position_mm: float
    zoom: ZoomBox | None = None


def _samples(n: int, size: int, start: int, stop: int, linear: bool) -> Any:
    """Source positions of display pixels ``start:stop`` of an axis of ``n`` voxels -> ``size``."""
    if size == n:
        return slice(start, stop)
    centres = (np.arange(start, stop) + 0.5) * (n / size)
    if not linear:
        return np.minimum(np.floor(centres).astype(np.intp), n - 1)
    f = np.clip(centres - 0.5, 0, n - 1)
    i0 = np.floor(f).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (f - i0).astype(np.float32)


def _resample_axis(img: npt.NDArray[Any], axis: int, sample: Any) -> npt.NDArray[Any]:
    if isinstance(sample, slice):
        return img[sample] if axis == 0 else img[:, sample]
    if isinstance(sample, np.ndarray):
        return np.take(img, sample, axis=axis)
    i0, i1, w = sample
    a = np.take(img, i0, axis=axis).astype(np.float32)
    b = np.take(img, i1, axis=axis).astype(np.float32)
    w = w[:, None] if axis == 0 else w[None, :]
    out = a + (b - a) * w
    if np.issubdtype(img.dtype, np.integer):
        return np.rint(out).astype(img.dtype)
    return out.astype(img.dtype)


def plane_pixels(
    array: npt.NDArray[Any],
    geometry: DisplayGeometry,
    plane: Plane | str,
    index: int,
    *,
    interpolation: Interpolation = "nearest",
    zoom: ZoomBox | None = None,
) -> npt.NDArray[Any]:
    """Pixels of one plane slice of ``array`` (image or mask on the geometry's grid).

    Only the requested slice (and crop) is read; with no resampling and no zoom the result is a
    view of ``array``.
    """
    p = _plane(plane)
    lay = _LAYOUTS[p]
    geometry._check_index(p, index)
    view = geometry.view(array)
    key: list[Any] = [slice(None)] * 3
    key[lay.normal] = int(index)
    img = view[tuple(key)]
    if lay.row_reversed:
        img = img[::-1]
    (nr, nc), (h, w) = geometry.voxel_shape(p), geometry.plane_shape(p)
    box = (zoom or ZoomBox(0, 0, h, w)).clipped((h, w))
    linear = interpolation == "linear"
    img = _resample_axis(img, 0, _samples(nr, h, box.row0, box.row1, linear))
    return _resample_axis(img, 1, _samples(nc, w, box.col0, box.col1, linear))


def extract_plane(
    volume: Volume,
    plane: Plane | str,
    index: int,
    *,
    geometry: DisplayGeometry | None = None,
    interpolation: Interpolation = "nearest",
    zoom: ZoomBox | None = None,
) -> PlaneImage:
    """One slice of ``volume`` in radiological display order, with spacing and edge letters."""
    p = _plane(plane)
    geo = geometry or DisplayGeometry.from_volume(volume)
    pixels = plane_pixels(volume.array, geo, p, index, interpolation=interpolation, zoom=zoom)
    return PlaneImage(
        pixels=pixels,
        plane=p,
        index=int(index),
        pixel_spacing=geo.pixel_spacing(p),
        aspect=geo.aspect(p),
        edges=geo.edges(p),
        position_mm=geo.slice_position_mm(p, index),
        zoom=zoom.clipped(geo.plane_shape(p)) if zoom else None,
    )


def _check_mask_grid(volume: Volume, mask: Volume) -> None:
    if mask.shape != volume.shape or not np.allclose(mask.affine, volume.affine, atol=1e-3):
        raise MaskError(
            f"mask grid {mask.shape} does not match the image grid {volume.shape} (or its affine "
            "differs); resample or reorient the mask onto the image before displaying it"
        )
