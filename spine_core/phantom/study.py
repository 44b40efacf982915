"""One synthetic study: image, labels, fractures, ground-truth boxes, readers and report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from spine_core.boxes import Box
from spine_core.errors import InputError
from spine_core.io.dicom_write import uid_from_seed
from spine_core.labels import CERVICAL, LEVEL_IDS, level_name
from spine_core.phantom.anatomy import build_anatomy
from spine_core.phantom.bones import (
    BoneCanvas,
    FractureVoxels,
    render_skull_base,
    render_thorax,
    render_vertebra,
)
from spine_core.phantom.fractures import FracturePlan, plan_fracture, sample_fractured_levels
from spine_core.phantom.readers import simulate_readers
from spine_core.phantom.report import report_text
from spine_core.phantom.tissues import paint_body, paint_canal, paint_discs
from spine_core.phantom.vertebra import build_vertebra
from spine_core.volume import Volume

#: Probability that the report of a positive study leaves one fractured level out.
P_REPORT_MISS = 0.2
#: Orientations the segmentation NIfTI is stored in (RSNA's files are not axial-canonical).
NIFTI_AXCODES: tuple[tuple[str, str, str], ...] = (
    ("I", "A", "L"), ("I", "P", "R"), ("I", "A", "R"),
)
MIN_SHAPE = (48, 64, 64)


@dataclass(frozen=True)
class Fracture:
    """A fractured level; ``reported`` is False when the report (train.csv) misses it."""

    level: str
    kind: str
    reported: bool


@dataclass(frozen=True)
class PhantomStudy:
    """A synthetic cervical-spine CT with everything known about it.

    ``image`` (int16 HU) and ``labels`` (uint8, canonical ids 1–7 C1–C7, 8–19 T1–T12) share one
    grid: axes (slice, row, column), slices ascending towards Superior, LPS affine (see
    :mod:`spine_core.volume`). ``boxes`` are the ground truth of every fracture, slice by slice;
    ``instance_numbers[a0]`` is the DICOM InstanceNumber of slice ``a0``.
    """

    seed: int
    study_uid: str
    series_uid: str
    image: Volume
    labels: Volume
    fractures: tuple[Fracture, ...]
    boxes: tuple[Box, ...]
    centroids: dict[str, npt.NDArray[np.float64]]
    instance_numbers: tuple[int, ...]
    superior_first: bool
    reader_boxes: tuple[Box, ...]
    reader_calls: dict[str, dict[str, int]]
    report: str
    nifti_axcodes: tuple[str, str, str]

    @property
    def fractured_levels(self) -> frozenset[str]:
        return frozenset(f.level for f in self.fractures)

    @property
    def reported_levels(self) -> frozenset[str]:
        return frozenset(f.level for f in self.fractures if f.reported)

    @property
    def missed_levels(self) -> frozenset[str]:
        return self.fractured_levels - self.reported_levels

    def slice_number(self, a0: int) -> int:
        """InstanceNumber of slice ``a0``."""
        return self.instance_numbers[a0]


def _boxes(found: FractureVoxels, labels: npt.NDArray[np.uint8], lid: int) -> list[Box]:
    """Per-slice boxes around a fracture's voxels, 1 px margin kept inside the vertebra."""
    out: list[Box] = []
    s0, s1, s2 = found.slices
    lab = labels[found.slices] == lid
    mask = found.mask & lab
    for kk in np.flatnonzero(mask.sum(axis=(1, 2)) >= 2):
        rows, cols = np.nonzero(mask[kk])
        vr, vc = np.nonzero(labels[s0.start + kk] == lid)
        r0 = max(rows.min() + s1.start - 1, vr.min())
        r1 = min(rows.max() + s1.start + 1, vr.max())
        c0 = max(cols.min() + s2.start - 1, vc.min())
        c1 = min(cols.max() + s2.start + 1, vc.max())
        out.append(Box(int(s0.start + kk), float(c0), float(r0), float(c1 - c0 + 1),
                       float(r1 - r0 + 1), level=found.level))
    return out


def _centroids(
    labels: npt.NDArray[np.uint8], vol: Volume, regions: dict[int, tuple[slice, slice, slice]]
) -> dict[str, npt.NDArray[np.float64]]:
    """Centre of mass (LPS mm) of each level's voxels; ``regions`` bound where each label can be."""
    out: dict[str, npt.NDArray[np.float64]] = {}
    for lid, region in sorted(regions.items()):
        idx = np.argwhere(labels[region] == lid)
        if idx.size:
            offset = np.array([s.start for s in region])
            out[level_name(lid)] = vol.index_to_lps(idx.mean(axis=0) + offset)
    return out


def _check_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) < m for s, m in zip(shape, MIN_SHAPE)):
        raise InputError(
            f"phantom shape {tuple(shape)} is too small: use (slices, rows, columns) of at least "
            f"{MIN_SHAPE}, e.g. (200, 256, 256)"
        )
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_levels(levels: Iterable[str]) -> list[str]:
    out = [str(lv).upper() for lv in levels]
    bad = [lv for lv in out if lv not in CERVICAL]
    if bad:
        raise InputError(f"cannot fracture {bad}: choose among C1–C7")
    return [lv for lv in CERVICAL if lv in out]


def generate_study(
    seed: int,
    shape: tuple[int, int, int] = (200, 256, 256),
    *,
    fractured_levels: Iterable[str] | None = None,
    positive: bool | None = None,
    report_miss: bool | None = None,
    n_readers: int = 3,
    noise: bool = True,
) -> PhantomStudy:
    """Generate one synthetic cervical-spine CT study, deterministic per ``seed``.

    Args:
        seed: any non-negative int; the same seed (and arguments) gives identical arrays.
        shape: (slices, rows, columns). Spacing is drawn so the field of view covers the skull
            base to the upper thoracic spine (slices 0.625–1.25 mm and 0.55–0.8 mm pixels at the
            default shape; smaller grids get coarser spacing).
        fractured_levels: force these cervical levels to be fractured (None: drawn at the RSNA
            rates; an empty list: a negative study).
        positive: with ``fractured_levels`` None, force a positive (levels drawn as in positive
            RSNA studies) or a negative study (None: positive half the time).
        report_miss: force (True) or forbid (False) the report missing one fractured level
            (None: random, 20 % of positive studies).
        n_readers: number of simulated readers.
        noise: add CT noise (False gives clean tissue values, for tests).

    Raises:
        InputError: shape too small, or a forced level outside C1–C7.
    """
    shape = _check_shape(shape)
    if seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed}")
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(7)]
    r_anat, r_frac, r_soft, r_bone, r_noise, r_read, r_meta = streams

    anat = build_anatomy(r_anat, shape)
    levels = (sample_fractured_levels(r_frac, positive) if fractured_levels is None
              else _check_levels(fractured_levels))
    plans: dict[str, FracturePlan] = {}
    for lv in levels:
        spec = next(s for s in anat.levels if s.name == lv)
        plans[lv] = plan_fracture(r_frac, build_vertebra(spec), anat.voxel)

    img = paint_body(anat, r_soft)
    paint_canal(img, anat)
    wedges = {lv: p.wedge_mm for lv, p in plans.items() if p.wedge_mm}
    paint_discs(img, anat, wedges)

    canvas = BoneCanvas(anat)
    found: list[FractureVoxels] = []
    for spec in anat.levels:
        plan = plans.get(spec.name)
        vert = build_vertebra(spec, plan.wedge_mm if plan else 0.0)
        found += render_vertebra(canvas, vert, plan, r_bone)
    render_skull_base(canvas, r_bone)
    render_thorax(canvas, r_bone)
    canvas.composite(img)
    labels, regions = canvas.labels, canvas.regions
    del canvas

    if noise:
        img += r_noise.standard_normal(img.shape, dtype=np.float32) * np.float32(anat.noise_sd)
    image = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    del img

    study_uid = uid_from_seed("spinereview-phantom-study", seed)
    series_uid = uid_from_seed("spinereview-phantom-series", seed)
    boxes: list[Box] = []
    for f in found:
        boxes += _boxes(f, labels, LEVEL_IDS[f.level])
    boxed = {b.level for b in boxes}
    missed: str | None = None
    boxed_levels = [lv for lv in levels if lv in boxed]
    miss = (r_meta.random() < P_REPORT_MISS) if report_miss is None else report_miss
    if boxed_levels and miss:
        missed = boxed_levels[int(r_meta.integers(len(boxed_levels)))]
    fractures = tuple(Fracture(lv, plans[lv].kind, lv != missed) for lv in levels)

    superior_first = bool(r_meta.random() < 0.5)
    n = shape[0]
    numbers = tuple((n - k) if superior_first else (k + 1) for k in range(n))
    axcodes = NIFTI_AXCODES[int(r_meta.integers(len(NIFTI_AXCODES)))]
    vol = Volume(image, anat.affine.copy(), {"study_uid": study_uid, "series_uid": series_uid,
                                             "seed": int(seed), "instance_numbers": numbers})
    lab_vol = vol.with_array(labels, kind="labels")
    reported = {f.level: f.kind for f in fractures if f.reported}
    centroids = _centroids(labels, vol, regions)
    reader_boxes, calls = simulate_readers(r_read, boxes, labels, n_readers, present=centroids)
    return PhantomStudy(
        seed=int(seed),
        study_uid=study_uid,
        series_uid=series_uid,
        image=vol,
        labels=lab_vol,
        fractures=fractures,
        boxes=tuple(sorted(boxes, key=lambda b: (b.level, b.slice_index))),
        centroids=centroids,
        instance_numbers=numbers,
        superior_first=superior_first,
        reader_boxes=reader_boxes,
        reader_calls=calls,
        report=report_text(r_meta, reported, float(anat.spacing[0])),
        nifti_axcodes=axcodes,
    )
