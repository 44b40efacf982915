"""Studies of all three regions and the samples the whole-spine networks train on.

:func:`region_study` makes a cervical (:func:`spine_core.phantom.generate_study`),
thoracolumbar or whole-spine (:func:`spine_core.phantom.spine_study.generate_spine_study`)
phantom from a seed, optionally with forced transitional anatomy. :func:`coarse_sample` brings a
study onto the coarse model grid, :func:`fine_sample` onto the fine grid, cropped to the spine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spine_core.inference.preprocess import grid_of, labels_onto, model_grid, sample_onto, volume_tensor
from spine_core.inference.wholespine.model import COARSE_LABELS, WholeSpineConfig
from spine_core.volume import Volume

#: Transitional anatomies cycled through when a study is forced to have one.
TRANSITIONAL: tuple[str, ...] = ("T13", "L6", "sacralised L5", "11 ribs")


@dataclass(frozen=True)
class RegionStudy:
    """A labelled phantom: CT, canonical-id mask on the same grid, region and findings."""

    image: Volume
    mask: Volume
    region: str
    seed: int
    findings: tuple[str, ...] = ()


def region_study(seed: int, region: str, shape: tuple[int, int, int],
                 transitional: str | None = None) -> RegionStudy:
    """One phantom of ``region`` ("cervical", "thoracolumbar", "whole") at ``shape``.

    ``transitional`` (one of :data:`TRANSITIONAL`) forces that anatomy (not for cervical studies).
    """
    if region == "cervical":
        from spine_core.phantom import generate_study

        s = generate_study(seed, shape=shape)
        return RegionStudy(s.image, s.labels, region, seed)
    from spine_core.phantom.spine_anatomy import Transitional
    from spine_core.phantom.spine_study import generate_spine_study

    forced = {
        None: None,
        "T13": Transitional(13, 5, False),
        "L6": Transitional(12, 6, False),
        "sacralised L5": Transitional(12, 5, True),
        "11 ribs": Transitional(11, 5, False),
    }[transitional]
    sp = generate_spine_study(seed, shape=shape, region=region, transitional=forced)
    return RegionStudy(sp.image, sp.labels, region, seed, sp.transitional.findings)


def channels_of(labels: npt.NDArray[np.uint8], levels: Sequence[int] = COARSE_LABELS
                ) -> npt.NDArray[np.uint8]:
    """Canonical ids -> the coarse network's channel indices (levels it lacks, e.g. the coccyx:
    background)."""
    lut = np.zeros(256, dtype=np.uint8)
    for channel, level in enumerate(levels):
        lut[level] = channel
    return lut[labels]


@dataclass
class Sample:
    """A study on one model grid: windowed image (float16) and labels (uint8)."""

    image: npt.NDArray[np.float16]
    labels: npt.NDArray[np.uint8]


def coarse_sample(study: RegionStudy, config: WholeSpineConfig) -> Sample:
    """The whole study on the coarse grid (labels: channel indices, nearest)."""
    grid = model_grid(grid_of(study.image), config.coarse_mm)
    image = sample_onto(volume_tensor(study.image, config.window), study.image.affine, grid)
    labels = channels_of(labels_onto(np.asarray(study.mask.array), study.mask.affine, grid),
                         config.labels)
    return Sample(image[0, 0].numpy().astype(np.float16), labels)


def fine_sample(study: RegionStudy, config: WholeSpineConfig) -> Sample:
    """The box around the vertebrae (plus the fine margin) on the fine grid; labels 0/1."""
    grid = model_grid(grid_of(study.image), config.fine_mm)
    labels = labels_onto(np.asarray(study.mask.array), study.mask.affine, grid)
    fg = np.argwhere(labels > 0)
    margin = int(np.ceil(config.fine_margin_mm / config.fine_mm))
    lo = np.maximum(fg.min(axis=0) - margin, 0) if fg.size else np.zeros(3, dtype=np.int64)
    hi = (np.minimum(fg.max(axis=0) + 1 + margin, labels.shape) if fg.size
          else np.asarray(labels.shape))
    shift = np.eye(4)
    shift[:3, 3] = lo
    from spine_core.inference.preprocess import Grid

    shape = tuple(int(v) for v in hi - lo)
    box = Grid((shape[0], shape[1], shape[2]), grid.affine @ shift)
    image = sample_onto(volume_tensor(study.image, config.window), study.image.affine, box)
    crop = labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    return Sample(image[0, 0].numpy().astype(np.float16), (crop > 0).astype(np.uint8))


def crop_around(sample: Sample, roi: Sequence[int], rng: np.random.Generator,
                p_foreground: float = 0.8, jitter: int = 16
                ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """A ``roi`` patch centred, with probability ``p_foreground``, near a random labelled voxel
    (else anywhere); zero-padded outside the sample (air / background)."""
    shape = np.asarray(sample.labels.shape)
    r = np.asarray(roi)
    fg = np.flatnonzero(sample.labels.ravel()[::7]) * 7
    if fg.size and rng.random() < p_foreground:
        centre = np.asarray(np.unravel_index(int(rng.choice(fg)), sample.labels.shape))
        centre = centre + rng.integers(-jitter, jitter + 1, size=3)
    else:
        centre = np.array([int(rng.integers(0, n)) for n in shape])
    start = centre - r // 2
    img = np.zeros(tuple(int(v) for v in r), dtype=np.float32)
    lab = np.zeros(tuple(int(v) for v in r), dtype=np.int64)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + r, shape)
    if np.any(src_hi <= src_lo):
        return img, lab
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    src = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi))
    dst = tuple(slice(int(a), int(b)) for a, b in zip(dst_lo, dst_hi))
    img[dst] = sample.image[src]
    lab[dst] = sample.labels[src]
    return img, lab
