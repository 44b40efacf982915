"""Recognise a dataset folder (RSNA, VerSe, CTSpine1K, TotalSegmentator, plain DICOM) and list its cases.

A :class:`CaseSource` only says where things are (image, masks with their vocabulary, centroid
file, CSV rows); reading happens later (:mod:`spine_core.io.nifti`, :mod:`spine_core.io.masks`,
the DICOM reader). Names taken from CSV files go through :func:`~spine_core.io.safe_paths.safe_join`
and files found on disk through :func:`~spine_core.io.safe_paths.ensure_inside`, so nothing outside
the dataset root is ever named.

Layouts recognised (first match wins, in this order):

* **RSNA 2022 cervical spine**: ``train_images/<StudyUID>/*.dcm`` (or ``test_images``), optional
  ``train.csv`` (patient_overall, C1–C7), ``train_bounding_boxes.csv`` and
  ``segmentations/<StudyUID>.nii[.gz]`` (labels 1–7 C1–C7, 8–19 T1–T12); a film of
  ``spine demo --modality xray`` has its vertebra mask in ``masks/<StudyUID>.nii.gz`` instead
  (canonical ids, so lumbar films keep L1–L5 and S).
* **VerSe, subject-based** (BIDS-like; the 2020 release and the restructured 2019 release):
  ``rawdata/sub-X/sub-X[_entities]_ct.nii.gz`` with
  ``derivatives/sub-X/sub-X[_entities]_seg-vert_msk.nii.gz`` and ``..._seg-subreg_ctd.json``.
* **TotalSegmentator output / dataset**: a case folder holding a CT (``ct.nii.gz`` or the only
  other NIfTI) and either ``segmentations.nii[.gz]`` (multilabel, v2 "total" class indices) or a
  ``segmentations/`` folder of per-class files (``vertebrae_C1.nii.gz``...).
* **CTSpine1K**: ``.../volumes/<source>/<id>.nii.gz`` with ``.../labels/<source>/<id>_seg.nii.gz``.
* **VerSe, MICCAI challenge style** (flat): ``verse004.nii.gz`` or ``verse004_ct.nii.gz`` with
  ``verse004_seg.nii.gz`` and ``verse004_ctd.json`` (2019) / ``*_iso-ctd.json`` (2020).
* **CTSpine1K, flat**: ``<id>.nii.gz`` + ``<id>_seg.nii.gz`` in one folder, no centroid files.
* **Plain DICOM**: any other tree holding DICOM files (recognised by the ``DICM`` preamble, not the
  extension); each folder with DICOM files is one case (series are split by the DICOM reader).
* **Radiograph images**: a tree of PNG/JPEG files and no DICOM; each image is one case, with its
  ``<stem>.json`` sidecar when present (:mod:`spine_core.io.radiograph_image`).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from spine_core.errors import DatasetLayoutError, InputError
from spine_core.io.nifti import is_nifti_name, nifti_stem
from spine_core.io.safe_paths import ensure_inside, safe_join
from spine_core.labels import CTSPINE1K, RSNA, VERSE, LabelVocabulary, totalseg_multilabel_vocabulary

if TYPE_CHECKING:
    from spine_core.io.masks import AlignedMask
    from spine_core.io.verse import CentroidSet
    from spine_core.volume import Volume

DatasetKind = Literal["rsna", "verse", "ctspine1k", "totalsegmentator", "dicom", "images"]
ImageFormat = Literal["dicom", "nifti", "image"]
MaskFormat = Literal["labelmap", "per_class"]

#: How deep below the root detection looks for tell-tale folders and files.
DETECT_DEPTH = 4

_VERSE_NAME = re.compile(r"^(sub-)?(verse\d+|gl\d+)", re.IGNORECASE)
_MASK_STEM = re.compile(r"(_seg|_msk)$", re.IGNORECASE)
_RSNA_IMAGE_DIRS = ("train_images", "test_images")


@dataclass(frozen=True)
class DatasetLayout:
    """What :func:`detect_layout` found: the kind, its variant and a sentence for the user."""

    kind: DatasetKind
    root: Path
    style: str
    description: str


@dataclass(frozen=True)
class CaseSource:
    """Where one case's files are; nothing is read until asked.

    Attributes:
        case_id: unique within the dataset (StudyUID, VerSe subject/scan key, relative folder...).
        dataset: the layout kind it came from.
        image_path: a DICOM folder (``image_format == "dicom"``), a NIfTI file, or a PNG/JPEG
            radiograph (``"image"``).
        mask_paths: one label-map NIfTI, or per-class files (``mask_format == "per_class"``).
        vocabulary: how label-map values map to canonical levels (None for per-class files, whose
            file names say the level).
        centroid_path: VerSe centroid JSON, if any.
        extra: dataset rows (RSNA ``labels`` from train.csv, ``boxes`` from the bounding boxes CSV).
    """

    case_id: str
    dataset: DatasetKind
    image_path: Path
    image_format: ImageFormat
    mask_paths: tuple[Path, ...] = ()
    mask_format: MaskFormat | None = None
    vocabulary: LabelVocabulary | None = None
    centroid_path: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_mask(self) -> bool:
        return bool(self.mask_paths)

    def load_mask(self, image: Volume, *, atol_mm: float | None = None) -> AlignedMask | None:
        """The case's mask on ``image``'s grid in canonical ids, or None when it has none."""
        from spine_core.io import masks
        from spine_core.io.nifti import load_nifti

        if not self.mask_paths:
            return None
        if self.mask_format == "per_class":
            from spine_core.labels import TOTALSEG_NAMES

            classes = ((load_nifti(p), TOTALSEG_NAMES[nifti_stem(p)], str(p)) for p in self.mask_paths)
            return masks.combine_class_masks(classes, image, atol_mm=atol_mm)
        if self.vocabulary is None:
            raise InputError(f"case {self.case_id}: a label-map mask needs a vocabulary")
        return masks.load_aligned_mask(self.mask_paths[0], image, vocabulary=self.vocabulary, atol_mm=atol_mm)

    def load_centroids(self, image: Volume) -> CentroidSet | None:
        """The case's VerSe centroids in LPS, or None when it has no centroid file."""
        from spine_core.io.verse import read_centroids

        return None if self.centroid_path is None else read_centroids(self.centroid_path, image)


# --- detection ----------------------------------------------------------------------------------


def detect_layout(root: Path | str) -> DatasetLayout:
    """Recognise the dataset layout of ``root`` (see module docstring for the order).

    Raises:
        DatasetLayoutError: ``root`` is not a folder or matches no layout (says what was looked for).
    """
    r = Path(root)
    if not r.is_dir():
        raise DatasetLayoutError(f"{r} is not a folder; give the dataset's top folder")
    if any((r / name).is_dir() for name in _RSNA_IMAGE_DIRS):
        return DatasetLayout("rsna", r, "rsna", "RSNA cervical spine (train_images/<StudyUID>/ DICOM)")
    if _verse_rawdata_dirs(r):
        return DatasetLayout("verse", r, "subject", "VerSe subject-based (rawdata/ + derivatives/)")
    if _totalseg_case_dirs(r):
        return DatasetLayout(
            "totalsegmentator", r, "totalsegmentator", "TotalSegmentator cases (ct + segmentations)"
        )
    if _volumes_labels_pairs(r):
        return DatasetLayout("ctspine1k", r, "volumes-labels", "CTSpine1K (volumes/ + labels/*_seg)")
    flat = _flat_pairs(r)
    if flat:
        if any(pair["centroid"] is not None or _VERSE_NAME.match(pair["key"]) for pair in flat):
            return DatasetLayout(
                "verse", r, "miccai", "VerSe MICCAI-challenge style (flat *_seg / *_ctd.json)"
            )
        return DatasetLayout("ctspine1k", r, "flat", "CTSpine1K style (flat <id>.nii.gz + <id>_seg.nii.gz)")
    if _first_dicom(r) is not None:
        return DatasetLayout("dicom", r, "dicom", "plain DICOM folders")
    if _radiograph_images(r):
        return DatasetLayout("images", r, "images", "radiograph images (PNG/JPEG + JSON sidecars)")
    not_dicom = _not_dicom_reason(r)
    if not_dicom is not None:
        raise DatasetLayoutError(f"{r} matches no dataset layout: {not_dicom}")
    raise DatasetLayoutError(
        f"{r} matches no dataset layout: no train_images/ (RSNA), rawdata/ + derivatives/ or "
        "*_seg/*_ctd.json files (VerSe), volumes/ + labels/ or <id>_seg.nii.gz pairs (CTSpine1K), "
        "segmentations/ (TotalSegmentator), no DICOM files and no PNG/JPEG radiographs; check the "
        "folder you chose"
    )


def iter_cases(root: Path | str, *, warnings: list[str] | None = None) -> Iterator[CaseSource]:
    """Every case of the dataset at ``root``, in a stable (sorted) order.

    Args:
        root: dataset folder.
        warnings: if given, notes about skipped items are appended (e.g. CSV rows without images).

    Raises:
        DatasetLayoutError: see :func:`detect_layout`.
        UnsafePathError: a CSV names a path outside the root, or a symlink escapes it.
    """
    layout = detect_layout(root)
    notes = warnings if warnings is not None else []
    if layout.kind == "rsna":
        yield from _rsna_cases(layout.root, notes)
    elif layout.kind == "verse" and layout.style == "subject":
        yield from _verse_subject_cases(layout.root, notes)
    elif layout.kind == "totalsegmentator":
        yield from _totalseg_cases(layout.root, notes)
    elif layout.kind == "ctspine1k" and layout.style == "volumes-labels":
        yield from _ctspine_cases(layout.root, notes)
    elif layout.kind in ("verse", "ctspine1k"):
        yield from _flat_cases(layout.root, layout.kind, notes)
    elif layout.kind == "images":
        yield from _image_cases(layout.root)
    else:
        yield from _dicom_cases(layout.root, notes)


# --- RSNA ---------------------------------------------------------------------------------------


def _rsna_cases(root: Path, notes: list[str]) -> Iterator[CaseSource]:
    labels = _read_csv_by_study(root, "train.csv")
    boxes = _read_csv_by_study(root, "train_bounding_boxes.csv", many=True)
    seg_dir = root / "segmentations"
    film_dir = root / "masks"
    seen: set[str] = set()
    for dirname in _RSNA_IMAGE_DIRS:
        image_root = root / dirname
        if not image_root.is_dir():
            continue
        for study in sorted(p for p in image_root.iterdir() if p.is_dir()):
            ensure_inside(root, study)
            uid = study.name
            seen.add(uid)
            mask = (
                _first_existing(root, seg_dir, (f"{uid}.nii", f"{uid}.nii.gz")) if seg_dir.is_dir() else None
            )
            vocabulary = RSNA
            if mask is None and film_dir.is_dir():  # `spine demo --modality xray`: canonical ids
                mask, vocabulary = _first_existing(root, film_dir, (f"{uid}.nii.gz",)), VERSE
            extra: dict[str, Any] = {"split": dirname.split("_")[0]}
            if uid in labels:
                extra["labels"] = _int_row(labels[uid][0])
            if uid in boxes:
                extra["boxes"] = [_box_row(row) for row in boxes[uid]]
            yield CaseSource(
                case_id=uid,
                dataset="rsna",
                image_path=study,
                image_format="dicom",
                mask_paths=(mask,) if mask else (),
                mask_format="labelmap" if mask else None,
                vocabulary=vocabulary if mask else None,
                extra=extra,
            )
    for uid in sorted(set(labels) | set(boxes)):
        if uid not in seen:
            notes.append(f"{uid}: listed in the CSV files but has no folder under train_images/")


def _read_csv_by_study(root: Path, name: str, *, many: bool = False) -> dict[str, list[dict[str, str]]]:
    path = root / name
    if not path.is_file():
        return {}
    ensure_inside(root, path)
    rows: dict[str, list[dict[str, str]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "StudyInstanceUID" not in reader.fieldnames:
            raise InputError(
                f"{path}: no StudyInstanceUID column (columns: {reader.fieldnames}); is this RSNA's CSV?"
            )
        for line, row in enumerate(reader, start=2):
            uid = (row.get("StudyInstanceUID") or "").strip()
            safe_join(root, uid)  # refuses '..', absolute names, blank cells
            if uid in rows and not many:
                raise InputError(f"{path}, line {line}: StudyInstanceUID {uid} appears twice")
            rows.setdefault(uid, []).append(row)
    return rows


def _int_row(row: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in row.items():
        if key == "StudyInstanceUID" or key is None:
            continue
        try:
            out[key] = int(float(value))
        except (TypeError, ValueError):
            raise InputError(
                f"train.csv: {row.get('StudyInstanceUID')}: {key}={value!r} is not 0 or 1"
            ) from None
    return out


def _box_row(row: Mapping[str, str]) -> dict[str, float | int]:
    try:
        return {
            "x": float(row["x"]),
            "y": float(row["y"]),
            "width": float(row["width"]),
            "height": float(row["height"]),
            "slice_number": int(float(row["slice_number"])),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(
            f"train_bounding_boxes.csv: row {dict(row)} is not x, y, width, height, slice_number ({exc})"
        ) from None


# --- VerSe --------------------------------------------------------------------------------------


def _verse_rawdata_dirs(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, _ in _walk(root, DETECT_DEPTH):
        if dirpath.name == "rawdata" and dirpath != root and (dirpath.parent / "derivatives").is_dir():
            if any(d.startswith("sub-") for d in dirnames):
                found.append(dirpath)
            dirnames[:] = []
    return sorted(found)


def _verse_subject_cases(root: Path, notes: list[str]) -> Iterator[CaseSource]:
    seen: set[str] = set()
    for rawdata in _verse_rawdata_dirs(root):
        derivatives = rawdata.parent / "derivatives"
        for dirpath, _, filenames in _walk(rawdata):
            for fname in filenames:
                lower = fname.lower()
                if not (lower.endswith("_ct.nii.gz") or lower.endswith("_ct.nii")):
                    continue
                image = ensure_inside(root, dirpath / fname)
                key = nifti_stem(fname)[: -len("_ct")]
                subject_dir = derivatives / dirpath.relative_to(rawdata)
                mask = _first_existing(
                    root, subject_dir, (f"{key}_seg-vert_msk.nii.gz", f"{key}_seg-vert_msk.nii")
                )
                ctd = _first_existing(root, subject_dir, (f"{key}_seg-subreg_ctd.json", f"{key}_ctd.json"))
                case_id = key[4:] if key.startswith("sub-") else key
                if case_id in seen:
                    case_id = f"{rawdata.parent.name}/{case_id}"
                seen.add(case_id)
                if mask is None:
                    notes.append(f"{case_id}: no *_seg-vert_msk.nii.gz in {subject_dir}")
                yield CaseSource(
                    case_id=case_id,
                    dataset="verse",
                    image_path=image,
                    image_format="nifti",
                    mask_paths=(mask,) if mask else (),
                    mask_format="labelmap" if mask else None,
                    vocabulary=VERSE if mask else None,
                    centroid_path=ctd,
                    extra={"split": rawdata.parent.name},
                )


# --- TotalSegmentator ---------------------------------------------------------------------------


def _totalseg_case_dirs(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in _walk(root, 2):
        names = {f.lower() for f in filenames}
        if "segmentations" in dirnames or "segmentations.nii.gz" in names or "segmentations.nii" in names:
            found.append(dirpath)
            dirnames[:] = []
    return sorted(found)


def _totalseg_cases(root: Path, notes: list[str]) -> Iterator[CaseSource]:
    from spine_core.io.masks import totalseg_class_files

    for case_dir in _totalseg_case_dirs(root):
        case_id = case_dir.name if case_dir == root else case_dir.relative_to(root).as_posix()
        niftis = sorted(
            p for p in case_dir.iterdir()
            if p.is_file() and is_nifti_name(p) and not nifti_stem(p).lower().startswith("segmentations")
        )
        preferred = [p for p in niftis if nifti_stem(p).lower() == "ct"]
        if not preferred and len(niftis) != 1:
            notes.append(f"{case_id}: no ct.nii.gz and {len(niftis)} other NIfTI files; skipped")
            continue
        image = ensure_inside(root, (preferred or niftis)[0])
        seg_dir = case_dir / "segmentations"
        multilabel = _first_existing(root, case_dir, ("segmentations.nii.gz", "segmentations.nii"))
        if seg_dir.is_dir():
            files = tuple(ensure_inside(root, p) for p in totalseg_class_files(seg_dir))
            if not files:
                notes.append(f"{case_id}: segmentations/ holds no vertebra files")
            yield CaseSource(
                case_id, "totalsegmentator", image, "nifti",
                mask_paths=files, mask_format="per_class" if files else None,
            )
        else:
            assert multilabel is not None
            yield CaseSource(
                case_id, "totalsegmentator", image, "nifti",
                mask_paths=(multilabel,), mask_format="labelmap",
                vocabulary=totalseg_multilabel_vocabulary(),
            )


# --- CTSpine1K and flat pairs -------------------------------------------------------------------


def _volumes_labels_pairs(root: Path) -> list[tuple[Path, Path]]:
    found = []
    for dirpath, dirnames, _ in _walk(root, DETECT_DEPTH):
        if "volumes" in dirnames and "labels" in dirnames:
            found.append((dirpath / "volumes", dirpath / "labels"))
            dirnames[:] = []
    return sorted(found)


def _ctspine_cases(root: Path, notes: list[str]) -> Iterator[CaseSource]:
    pairs = _volumes_labels_pairs(root)
    for volumes, labels in pairs:
        for dirpath, _, filenames in _walk(volumes):
            for fname in filenames:
                if not is_nifti_name(fname):
                    continue
                image = ensure_inside(root, dirpath / fname)
                rel_dir = dirpath.relative_to(volumes)
                stem = nifti_stem(fname)
                mask = _first_existing(root, labels / rel_dir, (f"{stem}_seg.nii.gz", f"{stem}_seg.nii"))
                if mask is None:
                    notes.append(f"{image}: no {stem}_seg.nii.gz under {labels / rel_dir}")
                case_id = (rel_dir / stem).as_posix()
                if len(pairs) > 1 and volumes.parent != root:  # e.g. train/ and test/ copies
                    case_id = f"{volumes.parent.relative_to(root).as_posix()}/{case_id}"
                yield CaseSource(
                    case_id, "ctspine1k", image, "nifti",
                    mask_paths=(mask,) if mask else (),
                    mask_format="labelmap" if mask else None,
                    vocabulary=CTSPINE1K if mask else None,
                )


def _flat_pairs(root: Path) -> list[dict[str, Any]]:
    """Images with a ``_seg`` mask beside them (and a centroid JSON if present), any folder."""
    pairs: list[dict[str, Any]] = []
    for dirpath, _, filenames in _walk(root, DETECT_DEPTH):
        names = set(filenames)
        for fname in sorted(filenames):
            if not is_nifti_name(fname) or _MASK_STEM.search(nifti_stem(fname)):
                continue
            stem = nifti_stem(fname)
            key = stem[:-3] if stem.lower().endswith("_ct") else stem
            mask = _first_name(names, [
                f"{s}{m}{ext}"
                for s in (stem, key) for m in ("_seg", "_seg-vert_msk") for ext in (".nii.gz", ".nii")
            ])
            ctd = _first_name(names, [
                f"{s}{c}" for s in (stem, key) for c in ("_ctd.json", "_iso-ctd.json", "_seg-subreg_ctd.json")
            ])
            if mask is None and ctd is None:
                continue
            pairs.append({
                "image": dirpath / fname, "key": key,
                "mask": dirpath / mask if mask else None,
                "centroid": dirpath / ctd if ctd else None,
            })
    return pairs


def _flat_cases(root: Path, kind: DatasetKind, notes: list[str]) -> Iterator[CaseSource]:
    vocabulary = VERSE if kind == "verse" else CTSPINE1K
    for pair in _flat_pairs(root):
        image: Path = ensure_inside(root, pair["image"])
        mask: Path | None = pair["mask"]
        rel = image.parent.relative_to(root)
        case_id = pair["key"] if rel == Path(".") else f"{rel.as_posix()}/{pair['key']}"
        if mask is None:
            notes.append(f"{case_id}: no mask beside {image.name}")
        yield CaseSource(
            case_id, kind, image, "nifti",
            mask_paths=(ensure_inside(root, mask),) if mask else (),
            mask_format="labelmap" if mask else None,
            vocabulary=vocabulary if mask else None,
            centroid_path=ensure_inside(root, pair["centroid"]) if pair["centroid"] else None,
        )


# --- plain DICOM --------------------------------------------------------------------------------


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` has the DICOM Part 10 preamble (``DICM`` at byte 128), or starts like a
    data set written without it (:func:`~spine_core.io.dicom_scan.looks_like_raw_dataset`): such
    a file is read and then imported or refused by name, never silently left out."""
    from spine_core.io.dicom_scan import looks_like_raw_dataset

    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return (len(head) == 132 and head[128:132] == b"DICM") or looks_like_raw_dataset(head)


def _not_dicom_reason(root: Path) -> str | None:
    """Why the files under ``root`` that look meant as DICOM (named .dcm, or gzip-compressed) are
    not: the first one named, with what to do; None when there is none."""
    for dirpath, _, filenames in _walk(root):
        for fname in filenames:
            path = dirpath / fname
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            try:
                with path.open("rb") as handle:
                    magic = handle.read(2)
            except OSError:
                continue
            if magic == b"\x1f\x8b" and not fname.lower().endswith(".nii.gz"):
                return (f"{rel} is gzip-compressed, not a DICOM file; unpack it (gunzip) and "
                        "import the folder again")
            if fname.lower().endswith((".dcm", ".dicom")):
                return (f"{rel} is named {path.suffix} but is not a DICOM file (no 'DICM' preamble "
                        "and no data set at its start); re-export it as DICOM Part 10")
    return None


def _first_dicom(root: Path) -> Path | None:
    for dirpath, _, filenames in _walk(root):
        for fname in filenames:
            path = dirpath / fname
            if not path.is_symlink() and is_dicom_file(path):
                return path
    return None


def _dicom_cases(root: Path, notes: list[str]) -> Iterator[CaseSource]:
    for dirpath, _, filenames in _walk(root):
        files = []
        for path in (dirpath / f for f in filenames):
            if path.is_symlink() and not path.exists():  # dangling, or a loop: nothing to read
                notes.append(f"{path.relative_to(root)}: a symbolic link to nothing (dangling, or "
                              "part of a loop of links); left out — remove it")
                continue
            files.append(ensure_inside(root, path))
        for path in files:
            if path.suffix.lower() == ".dcm" and not is_dicom_file(path):
                notes.append(f"{path.relative_to(root)}: named .dcm but not a DICOM file (no 'DICM' "
                             "preamble and file meta header); left out — re-export it as DICOM "
                             "Part 10")
        if any(is_dicom_file(p) for p in files):
            case_id = root.name if dirpath == root else dirpath.relative_to(root).as_posix()
            yield CaseSource(case_id, "dicom", dirpath, "dicom")


# --- radiograph images ---------------------------------------------------------------------------


def _radiograph_images(root: Path) -> list[Path]:
    """PNG/JPEG files under ``root`` (symbolic links left out), sorted."""
    from spine_core.io.radiograph_image import IMAGE_SUFFIXES

    return [dirpath / f for dirpath, _, filenames in _walk(root) for f in filenames
            if f.lower().endswith(IMAGE_SUFFIXES) and not (dirpath / f).is_symlink()]


def _image_cases(root: Path) -> Iterator[CaseSource]:
    for path in _radiograph_images(root):
        image = ensure_inside(root, path)
        sidecar = image.with_suffix(".json")
        if sidecar.exists():
            ensure_inside(root, sidecar)  # a sidecar linked from elsewhere is refused
        case_id = image.relative_to(root).with_suffix("").as_posix()
        yield CaseSource(case_id, "images", image, "image")


# --- helpers ------------------------------------------------------------------------------------


def _walk(root: Path, max_depth: int | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """``os.walk`` in sorted order, not following symlinked folders, to ``max_depth`` levels."""
    base_depth = len(root.parts)
    for dirpath_str, dirnames, filenames in os.walk(root, followlinks=False):
        dirpath = Path(dirpath_str)
        dirnames.sort()
        filenames.sort()
        if max_depth is not None and len(dirpath.parts) - base_depth >= max_depth:
            dirnames[:] = []
        yield dirpath, dirnames, filenames


def _first_existing(root: Path, folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` that is a file in ``folder`` (checked to stay inside ``root``)."""
    for name in names:
        candidate = folder / name
        if candidate.is_file():
            return ensure_inside(root, candidate)
    return None


def _first_name(names: set[str], candidates: list[str]) -> str | None:
    return next((c for c in candidates if c in names), None)
