"""Synthetic lateral spine radiographs: a digitally reconstructed radiograph (DRR) of the
whole-spine phantom, with its projected vertebra masks as truth.

The CT's HU become linear attenuation (water 0.02 /mm at about 60 keV, air 0), integrated along
the patient's left-right axis (a lateral film, parallel beam). The detector sees the primary beam
``I0 · exp(-∫µ)`` plus scatter (a wide blur of the primary times a scatter-to-primary ratio, as
with an antiscatter grid), with Poisson quantum noise at the exposure ``I0`` photons per pixel.
The image is the log of the signal (bone bright) with the body's thickness mostly taken out
(a wide blur subtracted, the dynamic range compression of processed films), scaled to 12 bits,
as a "for presentation" DX image is. Magnification (source-to-image over source-to-object distance,
1.05–1.25) enlarges the patient on the detector: the detector pixel pitch is
``ImagerPixelSpacing``, and one pixel measures ``pitch / magnification`` mm in the patient.
The film is rotated in-plane by a few degrees and its field is placed around the cervical
(skull base to T1) or lumbar (T11 to below S1) spine with random margins.

Truth: per pixel, the vertebra (canonical label) most of the ray's bone voxels belong to; each
level's box and centroid in pixels; the Genant grades of the phantom's compression fractures
(visible as height loss); the reference vertebra of the film (C2 on cervical, S1 — the top of the
sacrum, label 26 — on lumbar films, as VertXNet counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from spine_core.errors import InputError
from spine_core.labels import LEVEL_IDS, LEVEL_NAMES
from spine_core.phantom.spine_study import SpineStudy

#: Radiograph regions and the phantom region each is projected from.
XRAY_REGIONS: dict[str, str] = {"cervical": "whole", "lumbar": "thoracolumbar"}
#: Levels the field of each film must hold, head to feet (the field runs from the first to the last).
FIELD_LEVELS: dict[str, tuple[str, str]] = {"cervical": ("C1", "T1"), "lumbar": ("T12", "S")}
#: The reference vertebra labels are counted from.
REFERENCE: dict[str, str] = {"cervical": "C2", "lumbar": "S"}
MU_WATER_PER_MM = 0.02
BITS_STORED = 12
#: Weight of the wide blur subtracted in the presentation processing (dynamic range compression).
EQUALISATION = 0.8


@dataclass(frozen=True)
class Exposure:
    """How one film was taken (drawn per seed by :func:`draw_exposure`)."""

    photons: float  # I0 per detector pixel, unattenuated
    scatter_ratio: float  # scatter-to-primary ratio behind the grid
    magnification: float  # source-to-image / source-to-object distance
    rotation_deg: float  # in-plane rotation of the film
    pitch_mm: float  # detector pixel pitch (ImagerPixelSpacing)
    margins: tuple[float, float, float, float]  # top, bottom, front, back (fraction of the span)


@dataclass(frozen=True)
class Radiograph:
    """A lateral film and its truth.

    ``image`` is uint16 with ``BITS_STORED`` bits, rows head to feet, columns front (anterior,
    column 0) to back; ``labels`` (uint8 canonical level ids, 0 background) shares its grid.
    ``pixel_mm`` is the size of a pixel in the patient (pitch / magnification).
    """

    image: npt.NDArray[np.uint16]
    labels: npt.NDArray[np.uint8]
    exposure: Exposure
    region: str
    grades: dict[str, tuple[int, str]]  # level -> (Genant grade, morphology), fractured levels only
    reference: str

    @property
    def pixel_mm(self) -> float:
        return self.exposure.pitch_mm / self.exposure.magnification

    @property
    def levels(self) -> tuple[str, ...]:
        """Levels on the film, head to feet."""
        present = {int(v) for v in np.unique(self.labels) if v}
        return tuple(LEVEL_NAMES[v] for v in sorted(present, key=_craniocaudal))

    def box(self, level: str) -> tuple[int, int, int, int]:
        """(x, y, width, height) in pixels of ``level``'s mask."""
        rows, cols = np.nonzero(self.labels == LEVEL_IDS[level])
        if not rows.size:
            raise InputError(f"{level} is not on this film")
        x, y = int(cols.min()), int(rows.min())
        return x, y, int(cols.max()) + 1 - x, int(rows.max()) + 1 - y


def _craniocaudal(label: int) -> int:
    from spine_core.labels import CRANIOCAUDAL_ORDER

    return CRANIOCAUDAL_ORDER.index(label)


def draw_exposure(rng: np.random.Generator, region: str) -> Exposure:
    """Exposure, scatter, magnification, rotation and field margins at realistic spreads."""
    lumbar = region == "lumbar"
    return Exposure(
        photons=float(rng.uniform(3e4, 1.2e5) if lumbar else rng.uniform(8e3, 3e4)),
        scatter_ratio=float(rng.uniform(0.3, 0.9) if lumbar else rng.uniform(0.15, 0.45)),
        magnification=float(rng.uniform(1.05, 1.25)),
        rotation_deg=float(rng.uniform(-6.0, 6.0)),
        pitch_mm=float(rng.choice([0.3, 0.35, 0.4])),
        margins=tuple(float(v) for v in rng.uniform(0.04, 0.18, size=4)),  # type: ignore[arg-type]
    )


def _canonical(study: SpineStudy) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], np.ndarray]:
    """Image and labels with axes (superior, posterior, left) and their spacing (mm)."""
    from spine_core.volume import CANONICAL_AXCODES

    if study.image.axcodes != CANONICAL_AXCODES:
        raise InputError(f"the phantom's grid is {study.image.axcodes}, not the canonical "
                         f"{CANONICAL_AXCODES}; project it from generate_spine_study's output")
    return (np.asarray(study.image.array), np.asarray(study.labels.array),
            np.asarray(study.image.spacing, dtype=np.float64))


def _line_integrals(image: npt.NDArray[np.int16], step_mm: float) -> npt.NDArray[np.float32]:
    """∫µ along the left-right axis (axis 2), per (superior, posterior) ray, slab by slab."""
    out = np.empty(image.shape[:2], dtype=np.float32)
    for a in range(0, image.shape[0], 32):
        slab = image[a:a + 32].astype(np.float32)
        mu = np.maximum(MU_WATER_PER_MM * (1.0 + slab / 1000.0), 0.0)
        out[a:a + 32] = mu.sum(axis=2) * np.float32(step_mm)
    return out


def _projected_labels(labels: npt.NDArray[np.uint8], wanted: list[int]) -> npt.NDArray[np.uint8]:
    """Per ray, the label with the most voxels along it (0 where no vertebra is crossed)."""
    best = np.zeros(labels.shape[:2], dtype=np.int32)
    out = np.zeros(labels.shape[:2], dtype=np.uint8)
    for lid in wanted:
        count = np.count_nonzero(labels == lid, axis=2)
        take = count > best
        out[take], best[take] = lid, count[take]
    return out


def _field(labels: npt.NDArray[np.uint8], region: str, margins: tuple[float, float, float, float]
           ) -> tuple[slice, slice]:
    """Rows and columns of the film's field on the projection (rows still inferior -> superior)."""
    first, last = (LEVEL_IDS[n] for n in FIELD_LEVELS[region])
    rows = np.flatnonzero(np.isin(labels, [first, last]).any(axis=1))
    spine_cols = np.flatnonzero((labels > 0).any(axis=0))
    if not rows.size or not spine_cols.size:
        raise InputError(f"the phantom does not hold {FIELD_LEVELS[region][0]}–"
                         f"{FIELD_LEVELS[region][1]}: generate it with region "
                         f"{XRAY_REGIONS[region]!r}")
    lo, hi = int(rows.min()), int(rows.max()) + 1
    span = hi - lo
    top, bottom, front, back = margins
    r0 = max(0, int(lo - bottom * span))
    r1 = min(labels.shape[0], int(hi + top * span))
    c_lo, c_hi = int(spine_cols.min()), int(spine_cols.max()) + 1
    width = c_hi - c_lo
    c0 = max(0, int(c_lo - (0.6 + front) * width))
    c1 = min(labels.shape[1], int(c_hi + back * width))
    return slice(r0, r1), slice(c0, c1)


def project_lateral(study: SpineStudy, region: str, rng: np.random.Generator,
                    exposure: Exposure | None = None) -> Radiograph:
    """The lateral film of ``study`` (see the module docstring).

    Raises:
        InputError: an unknown region, or a phantom without the film's levels.
    """
    if region not in XRAY_REGIONS:
        raise InputError(f"radiograph region {region!r}: choose {' or '.join(XRAY_REGIONS)}")
    exp = exposure or draw_exposure(rng, region)
    image, labels, spacing = _canonical(study)
    line = _line_integrals(image, float(spacing[2]))
    present = sorted({int(v) for v in study.centroids})
    proj = _projected_labels(labels, present)
    rows, cols = _field(proj, region, exp.margins)
    line, proj = line[rows, cols], proj[rows, cols]
    # rows head to feet, columns front (anterior) to back
    line, proj = line[::-1], proj[::-1]
    pixel = exp.pitch_mm / exp.magnification
    zoom = (float(spacing[0]) / pixel, float(spacing[1]) / pixel)
    line = ndimage.zoom(line, zoom, order=1)
    proj = ndimage.zoom(proj, zoom, order=0)
    if abs(exp.rotation_deg) > 0.05:
        line = ndimage.rotate(line, exp.rotation_deg, reshape=False, order=1, mode="nearest")
        proj = ndimage.rotate(proj, exp.rotation_deg, reshape=False, order=0, mode="constant")
    primary = np.exp(-line, dtype=np.float32)
    sigma = 25.0 / pixel
    scatter = ndimage.gaussian_filter(primary, sigma, mode="nearest") * np.float32(exp.scatter_ratio)
    counts = rng.poisson((primary + scatter) * np.float32(exp.photons)).astype(np.float32)
    signal = -np.log(np.maximum(counts, 0.5) / np.float32(exp.photons))
    # "for presentation" processing: the body's thickness (a wide blur) mostly taken out, so bone
    # shows across the whole film, as a processed DX image does
    signal = signal - np.float32(EQUALISATION) * ndimage.gaussian_filter(
        signal, 20.0 / pixel, mode="nearest")
    lo, hi = np.percentile(signal, [0.5, 99.8])
    top = (1 << BITS_STORED) - 1
    scaled = np.clip((signal - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) * top
    grades = {c.level: (int(c.grade), c.morphology.value) for c in study.compressions}
    return Radiograph(image=np.rint(scaled).astype(np.uint16), labels=proj.astype(np.uint8),
                      exposure=exp, region=region,
                      grades={lv: g for lv, g in grades.items() if LEVEL_IDS[lv] in np.unique(proj)},
                      reference=REFERENCE[region])
