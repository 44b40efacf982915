"""VerSe centroid files (``*_ctd.json``): read and write, in canonical levels and LPS millimetres.

Three flavours exist (checked against the VerSe repository and the OSF data descriptions):

* **Subject-based release (VerSe'19 and '20 restructured, BIDS-like names,
  ``*_seg-subreg_ctd.json``)**: the first element names the axis orientation,
  ``{"direction": ["P", "I", "R"]}``; every other element is ``{"label": 20, "X": .., "Y": ..,
  "Z": ..}`` in **voxel** coordinates of the image reoriented (permuted/flipped, no resampling) to
  that orientation. The letters are nibabel axis codes: the direction each axis *increases
  towards* (``P, I, R`` = origin at the Anterior-Superior-Left corner, "ASL").
* **MICCAI 2020 challenge release (``*_iso-ctd.json``)**: no direction element; millimetres at
  1 mm resolution from the ASL corner, i.e. axes ``P, I, R`` in mm.
* **MICCAI 2019 challenge release (``verseNNN_ctd.json``)**: no direction element; millimetres
  along ``I, P, L`` (X from the superior end downwards, Y towards posterior, Z towards the left),
  as the challenge winner's converter reads them. This flavour is the least documented: pass
  ``legacy_axcodes`` if your files differ.

Voxel positions are centres (index 0 = centre of the first voxel), so a flipped axis maps index
``i`` to ``n - 1 - i`` exactly as nibabel's reorientation does. (The VerSe helper
``reorient_centroids_to`` uses ``n - i``, one voxel off; the files themselves were computed as
voxel centres of mass.)

Labels follow VerSe's numbering, which is the canonical one (1–7 C, 8–19 T, 20–25 L, 26 S,
27 Co, 28 T13).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nibabel.orientations as nio
import numpy as np
import numpy.typing as npt

from spine_core.errors import InputError, LabelVocabularyError
from spine_core.labels import LEVEL_NAMES, VERSE
from spine_core.volume import Volume

#: Axis-code pairs (negative, positive) of our LPS world, for nibabel's pure orientation functions.
LPS_LABELS = (("R", "L"), ("A", "P"), ("I", "S"))

#: Orientation of the subject-based release's files and of what :func:`write_centroids` writes.
VERSE_DIRECTION: tuple[str, str, str] = ("P", "I", "R")
#: Millimetre axes of the MICCAI 2020 ``*_iso-ctd.json`` files (origin ASL).
MICCAI2020_AXCODES: tuple[str, str, str] = ("P", "I", "R")
#: Millimetre axes of the MICCAI 2019 ``*_ctd.json`` files without a direction element.
MICCAI2019_AXCODES: tuple[str, str, str] = ("I", "P", "L")

Units = Literal["voxel", "mm"]


@dataclass(frozen=True)
class Centroid:
    """One vertebra centre: canonical level id and LPS position in mm."""

    level_id: int
    lps: tuple[float, float, float]

    @property
    def name(self) -> str:
        return LEVEL_NAMES[self.level_id]


@dataclass(frozen=True)
class CentroidSet:
    """Centroids read from a file, with how the file stated them."""

    centroids: tuple[Centroid, ...]
    axcodes: tuple[str, str, str]
    units: Units
    warnings: tuple[str, ...] = ()

    def by_level(self) -> dict[int, tuple[float, float, float]]:
        return {c.level_id: c.lps for c in self.centroids}


def oriented_affine(volume: Volume, axcodes: Sequence[str]) -> npt.NDArray[np.float64]:
    """Affine of ``volume``'s grid reoriented so its axes increase towards ``axcodes``.

    Only the affine is computed; the voxels are not moved.
    """
    codes = _check_axcodes(axcodes)
    transform = nio.ornt_transform(
        nio.io_orientation(volume.affine), nio.axcodes2ornt(codes, labels=LPS_LABELS)
    )
    return volume.affine @ nio.inv_ornt_aff(transform, volume.shape)


def parse_centroids(
    entries: Any,
    image: Volume,
    *,
    legacy_axcodes: Sequence[str] = MICCAI2019_AXCODES,
    source: str = "centroid file",
) -> CentroidSet:
    """Convert the decoded JSON of a VerSe centroid file to LPS centroids on ``image``.

    Args:
        entries: the decoded JSON list.
        image: the CT the file belongs to (its grid defines the voxel coordinates).
        legacy_axcodes: millimetre axes assumed when there is no ``direction`` element.
        source: name used in messages.

    Raises:
        InputError: the JSON is not a VerSe centroid list (names the bad element).
        LabelVocabularyError: a label is not a VerSe level.
    """
    if not isinstance(entries, list):
        raise InputError(f"{source}: expected a JSON list of centroids, got {type(entries).__name__}")
    direction: tuple[str, str, str] | None = None
    points: list[tuple[int, tuple[float, float, float]]] = []
    warnings: list[str] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{source}: element {position} is {entry!r}, not an object")
        if "direction" in entry:
            if direction is not None:
                raise InputError(f"{source}: more than one 'direction' element")
            direction = _check_axcodes(entry["direction"], source=source)
            continue
        label, xyz = _point(entry, position, source)
        if not all(math.isfinite(v) for v in xyz):
            warnings.append(f"{source}: label {label} has no position ({xyz}); skipped")
            continue
        points.append((label, xyz))

    unknown = sorted({label for label, _ in points if label not in VERSE.to_canonical})
    if unknown:
        raise LabelVocabularyError(
            f"{source}: centroid labels {unknown} are not VerSe levels (1–28); check the file"
        )
    seen: set[int] = set()
    for label, _ in points:
        if label in seen:
            raise InputError(f"{source}: label {label} appears twice; keep one centroid per vertebra")
        seen.add(label)

    units: Units = "voxel" if direction is not None else "mm"
    axcodes = direction if direction is not None else _check_axcodes(legacy_axcodes, source=source)
    affine = oriented_affine(image, axcodes)
    coords = np.array([xyz for _, xyz in points], dtype=np.float64).reshape(-1, 3)
    if units == "mm":
        coords = coords / np.linalg.norm(affine[:3, :3], axis=0)
    lps = coords @ affine[:3, :3].T + affine[:3, 3]
    _check_inside(lps, [label for label, _ in points], image, source)
    centroids = tuple(
        Centroid(int(VERSE.to_canonical[label]), (float(p[0]), float(p[1]), float(p[2])))
        for (label, _), p in zip(points, lps)
    )
    return CentroidSet(centroids, axcodes, units, tuple(warnings))


#: How far (in voxels) a centroid may lie beyond the image's edge voxels and still count as in it.
CENTROID_MARGIN_VOXELS = 1.0


def _check_inside(lps: npt.NDArray[np.float64], labels: Sequence[int], image: Volume,
                  source: str) -> None:
    """Refuse (InputError) a centroid that is not within ``image`` (a vertebra's centre is
    always on the image it was labelled on): a file of another image, or a damaged one."""
    if not len(labels):
        return
    inverse = np.linalg.inv(np.asarray(image.affine, dtype=np.float64))
    index = lps @ inverse[:3, :3].T + inverse[:3, 3]
    shape = np.asarray(image.shape, dtype=np.float64)
    low, high = -0.5 - CENTROID_MARGIN_VOXELS, shape - 0.5 + CENTROID_MARGIN_VOXELS
    for label, ijk, point in zip(labels, index, lps):
        if not (np.all(np.isfinite(ijk)) and np.all(ijk >= low) and np.all(ijk <= high)):
            where = ", ".join(f"{v:.4g}" for v in point)
            raise InputError(
                f"{source}: the centroid of label {label} lies outside the image (at {where} mm "
                f"LPS; the image has {'×'.join(str(n) for n in image.shape)} voxels); the file is "
                "damaged or belongs to another image — fix or remove it")


def read_centroids(
    path: Path | str,
    image: Volume,
    *,
    legacy_axcodes: Sequence[str] | None = None,
) -> CentroidSet:
    """Read a VerSe ``*_ctd.json`` for ``image`` (flavour detected as the module docstring says).

    ``legacy_axcodes`` defaults by name: ``*_iso-ctd.json`` -> (P, I, R) mm, other files without
    a direction element -> (I, P, L) mm.
    """
    p = Path(path)
    try:
        entries = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{p}: no such centroid file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc}); is this a VerSe centroid file?") from exc
    if legacy_axcodes is None:
        legacy_axcodes = MICCAI2020_AXCODES if p.name.lower().endswith("iso-ctd.json") else MICCAI2019_AXCODES
    return parse_centroids(entries, image, legacy_axcodes=legacy_axcodes, source=str(p))


def centroids_to_entries(
    centroids: Iterable[Centroid],
    image: Volume,
    *,
    axcodes: Sequence[str] = VERSE_DIRECTION,
    decimals: int = 1,
) -> list[dict[str, Any]]:
    """The JSON list of the subject-based flavour: direction element, then voxel coordinates."""
    codes = _check_axcodes(axcodes)
    inverse = np.linalg.inv(oriented_affine(image, codes))
    entries: list[dict[str, Any]] = [{"direction": list(codes)}]
    for c in sorted(centroids, key=lambda c: c.level_id):
        if c.level_id not in VERSE.to_canonical.values():
            raise LabelVocabularyError(f"level id {c.level_id} has no VerSe label")
        xyz = inverse[:3, :3] @ np.asarray(c.lps, dtype=np.float64) + inverse[:3, 3]
        entries.append(
            {"label": int(c.level_id), **{k: round(float(v), decimals) for k, v in zip("XYZ", xyz)}}
        )
    return entries


def write_centroids(
    path: Path | str,
    centroids: Iterable[Centroid],
    image: Volume,
    *,
    axcodes: Sequence[str] = VERSE_DIRECTION,
    decimals: int = 1,
) -> Path:
    """Write a subject-based VerSe centroid file (see :func:`centroids_to_entries`)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    entries = centroids_to_entries(centroids, image, axcodes=axcodes, decimals=decimals)
    p.write_text(json.dumps(entries), encoding="utf-8")
    return p


def centroids_from_labels(labels: npt.NDArray[np.integer], image: Volume) -> tuple[Centroid, ...]:
    """Centre of mass (LPS mm) of every canonical level in a label map on ``image``'s grid."""
    from scipy import ndimage

    if labels.shape != image.shape:
        raise ValueError(f"label map shape {labels.shape} differs from the image grid {image.shape}")
    ids = [int(v) for v in np.unique(labels) if v != 0]
    centres = ndimage.center_of_mass(np.ones(labels.shape, dtype=np.uint8), labels, ids)
    points = [image.index_to_lps(np.asarray(centre)) for centre in centres]  # each of shape (3,)
    return tuple(
        Centroid(level, (float(p[0]), float(p[1]), float(p[2]))) for level, p in zip(ids, points)
    )


def _point(entry: dict[str, Any], position: int, source: str) -> tuple[int, tuple[float, float, float]]:
    try:
        label = entry["label"]
        xyz = (float(entry["X"]), float(entry["Y"]), float(entry["Z"]))
    except KeyError as exc:
        raise InputError(
            f"{source}: element {position} lacks {exc.args[0]!r} (needs label, X, Y, Z)"
        ) from None
    except (TypeError, ValueError):
        raise InputError(f"{source}: element {position} has non-numeric coordinates: {entry}") from None
    if isinstance(label, bool) or not isinstance(label, (int, float)) or float(label) != int(label):
        raise InputError(f"{source}: element {position} has label {label!r}, not an integer")
    return int(label), xyz


def _check_axcodes(codes: Any, *, source: str = "axis codes") -> tuple[str, str, str]:
    """Three letters naming three different patient axes (one of R/L, A/P, I/S each)."""
    if isinstance(codes, str) or not isinstance(codes, Sequence) or len(codes) != 3:
        raise InputError(f"{source}: direction {codes!r} is not three axis letters like ['P', 'I', 'R']")
    letters = tuple(str(c).upper() for c in codes)
    pairs = [next((i for i, pair in enumerate(LPS_LABELS) if letter in pair), None) for letter in letters]
    if None in pairs or len(set(pairs)) != 3:
        raise InputError(
            f"{source}: direction {list(codes)} must name each of the R/L, A/P and I/S axes once"
        )
    return letters[0], letters[1], letters[2]  # len(codes) == 3 was checked above
