"""The display order of a volume: its axes permuted/flipped (views, no copy) towards S, P, L.

The same convention as the server-rendered viewer (:mod:`spine_core.render`): display axis 0
increases towards Superior, 1 towards Posterior, 2 towards the patient's Left, whatever order the
array is stored in; oblique volumes take the closest orientation. So:

=========  ==================  ===========================  ===============================
plane      slice index runs    image rows, top -> bottom    image columns, left -> right
=========  ==================  ===========================  ===============================
axial      Inferior->Superior  Anterior -> Posterior        patient Right -> Left
sagittal   Right -> Left       Superior -> Inferior         Anterior -> Posterior
coronal    Anterior->Posterior Superior -> Inferior         patient Right -> Left
=========  ==================  ===========================  ===============================

(patient's right on the screen's left: the radiological view). Kept here, small and pure, so the
viewer does not depend on the server renderer's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError
from spine_core.volume import Volume


def closest_axes(affine: npt.NDArray[np.float64]) -> list[tuple[int, int]]:
    """Per stored axis: (world axis 0/1/2, +1/-1) it runs closest to.

    nibabel's ``io_orientation`` algorithm (closest rotation by polar decomposition, then the
    largest component per axis, each world axis used once), without importing nibabel on the
    first page run.
    """
    rzs = affine[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1
    p, s, qs = np.linalg.svd(rzs / zooms, full_matrices=False)
    keep = s > s.max() * 3 * np.finfo(s.dtype).eps
    rot = p[:, keep] @ qs[keep]
    out: list[tuple[int, int]] = [(-1, 0)] * 3
    # strongest axes first (stable on ties), as nibabel does
    for axis in np.argsort(np.min(-(rot**2), axis=0), kind="stable"):
        col = rot[:, axis]
        if np.allclose(col, 0):
            raise InputError("the volume's affine is degenerate")
        world = int(np.argmax(np.abs(col)))
        out[int(axis)] = (world, -1 if col[world] < 0 else 1)
        rot[world, :] = 0
    return out


@dataclass(frozen=True)
class DisplayOrder:
    """``perm[d]``: the stored axis shown as display axis ``d``; ``flip[d]``: reversed or not."""

    shape: tuple[int, int, int]
    affine: npt.NDArray[np.float64]
    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]

    @classmethod
    def from_affine(cls, shape: Sequence[int], affine: npt.ArrayLike) -> DisplayOrder:
        aff = np.asarray(affine, dtype=np.float64)
        perm = [-1, -1, -1]
        flip = [False, False, False]
        for axis, (world, sign) in enumerate(closest_axes(aff)):
            display_axis = 2 - world  # world z (S) -> 0, y (P) -> 1, x (L) -> 2
            perm[display_axis] = axis
            flip[display_axis] = sign < 0
        if sorted(perm) != [0, 1, 2]:
            raise InputError("the volume's axes do not map onto three patient directions")
        return cls(tuple(int(s) for s in shape), aff, tuple(perm), tuple(flip))  # type: ignore[arg-type]

    @classmethod
    def from_volume(cls, volume: Volume) -> DisplayOrder:
        return cls.from_affine(volume.shape, volume.affine)

    def view(self, array: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """``array`` (on this grid) as a display-ordered view; no copy (a memory map stays one)."""
        if tuple(array.shape) != self.shape:
            raise InputError(f"array of shape {array.shape} is not on the grid {self.shape}")
        out = array.transpose(self.perm)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    @property
    def display_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[a] for a in self.perm)  # type: ignore[return-value]

    @property
    def display_spacing(self) -> tuple[float, float, float]:
        spacing = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(spacing[a]) for a in self.perm)  # type: ignore[return-value]

    @property
    def display_affine(self) -> npt.NDArray[np.float64]:
        """Display index (slice, row, col) -> LPS mm."""
        to_source = np.zeros((4, 4))
        to_source[3, 3] = 1
        for d, a in enumerate(self.perm):
            if self.flip[d]:
                to_source[a, d] = -1
                to_source[a, 3] = self.shape[a] - 1
            else:
                to_source[a, d] = 1
        return self.affine @ to_source

    def display_to_source(self, dv: Sequence[int]) -> tuple[int, int, int]:
        src = [0, 0, 0]
        for d, a in enumerate(self.perm):
            src[a] = self.shape[a] - 1 - int(dv[d]) if self.flip[d] else int(dv[d])
        return tuple(src)  # type: ignore[return-value]

    def source_to_display(self, voxel: Sequence[int]) -> tuple[int, int, int]:
        dv = [0, 0, 0]
        for d, a in enumerate(self.perm):
            dv[d] = self.shape[a] - 1 - int(voxel[a]) if self.flip[d] else int(voxel[a])
        return tuple(dv)  # type: ignore[return-value]

    @property
    def axial_is_stored(self) -> bool:
        """Whether the display's axial slices are the stored slices ``array[k]`` (a0)."""
        return self.perm[0] == 0

    def edges_to_display(self, axis: int, lo: float, hi: float) -> tuple[int, float, float]:
        """A span of edge coordinates along stored axis ``axis`` -> (display axis, lo, hi)."""
        d = self.perm.index(axis)
        n = self.shape[axis]
        return (d, n - hi, n - lo) if self.flip[d] else (d, lo, hi)

    def edges_to_source(self, display_axis: int, lo: float, hi: float) -> tuple[int, float, float]:
        """A span of edge coordinates along a display axis -> (stored axis, lo, hi)."""
        a = self.perm[display_axis]
        n = self.shape[a]
        return (a, n - hi, n - lo) if self.flip[display_axis] else (a, lo, hi)
