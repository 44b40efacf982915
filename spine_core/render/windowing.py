"""Window / level: the viewer's window presets and the DICOM linear VOI mapping of HU to 0..255."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError


@dataclass(frozen=True)
class Window:
    """A linear VOI window in HU (DICOM PS3.3 C.11.2.1.2.1): width ``>= 1``, centre ``level``."""

    width: float
    level: float
    name: str = "custom"

    def __post_init__(self) -> None:
        if not np.isfinite(self.width) or not np.isfinite(self.level) or self.width < 1:
            raise InputError(
                f"window width {self.width} / level {self.level} is not usable: the width must be "
                "a number >= 1 HU and the level a finite number"
            )


BONE = Window(1800, 400, "bone")
SOFT_TISSUE = Window(400, 40, "soft tissue")
BRAIN = Window(80, 40, "brain")

#: Named presets offered by the viewer (plus "custom" with user-chosen width/level).
WINDOW_PRESETS: dict[str, Window] = {w.name: w for w in (BONE, SOFT_TISSUE, BRAIN)}


def window_preset(name: str, width: float | None = None, level: float | None = None) -> Window:
    """The preset called ``name``, or a custom window when ``name == "custom"``."""
    key = name.strip().lower()
    if key == "custom":
        if width is None or level is None:
            raise InputError("a custom window needs both a width and a level (HU)")
        return Window(float(width), float(level))
    try:
        return WINDOW_PRESETS[key]
    except KeyError:
        raise InputError(
            f"unknown window preset '{name}'; choose one of {sorted(WINDOW_PRESETS)} or 'custom'"
        ) from None


def window_formula(values: npt.ArrayLike, width: float, level: float) -> npt.NDArray[np.uint8]:
    """DICOM linear VOI function to 0..255, rounded to nearest, in float64 (the reference)."""
    x = np.asarray(values, dtype=np.float64)
    c, w = float(level), float(width)
    if w <= 1:
        y = np.where(x > c - 0.5, 255.0, 0.0)
    else:
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=32)
def _window_lut(width: float, level: float, kind: str) -> npt.NDArray[np.uint8]:
    """Lookup table indexed by the raw 16/8-bit pattern of the voxel value."""
    if kind == "int16":
        values = np.arange(65536, dtype=np.uint16).view(np.int16)
    elif kind == "uint16":
        values = np.arange(65536, dtype=np.uint16)
    elif kind == "int8":
        values = np.arange(256, dtype=np.uint8).view(np.int8)
    else:
        values = np.arange(256, dtype=np.uint8)
    lut = window_formula(values, width, level)
    lut.flags.writeable = False
    return lut


_LUT_KINDS = {
    np.dtype(np.int16): ("int16", np.uint16),
    np.dtype(np.uint16): ("uint16", np.uint16),
    np.dtype(np.int8): ("int8", np.uint8),
    np.dtype(np.uint8): ("uint8", np.uint8),
}


def apply_window(values: npt.NDArray[Any], width: float, level: float) -> npt.NDArray[np.uint8]:
    """Window a slice (any shape) to uint8 grey levels.

    Integer 8/16-bit data goes through a cached 64 Ki-entry lookup table (exactly
    :func:`window_formula`); other dtypes (float32 volumes...) are computed in float32, which can
    differ from the float64 formula by one grey level at rounding ties.
    """
    Window(width, level)  # validates
    arr = np.asarray(values)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    kind = _LUT_KINDS.get(arr.dtype)
    if kind is not None:
        lut = _window_lut(float(width), float(level), kind[0])
        return np.take(lut, arr.view(kind[1]))  # np.take: ~2.5x faster than lut[...]
    x = arr.astype(np.float32)
    if width <= 1:
        return np.where(x > level - 0.5, 255, 0).astype(np.uint8)
    scale = np.float32(255.0 / (width - 1))
    offset = np.float32(level - 0.5 - (width - 1) / 2)
    y = (x - offset) * scale
    np.clip(y, 0, 255, out=y)
    return np.rint(y).astype(np.uint8)
