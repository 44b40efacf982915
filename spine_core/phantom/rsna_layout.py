"""Write synthetic studies in the RSNA 2022 cervical-spine fracture layout.

Layout (``out_dir``)::

    train_images/<StudyInstanceUID>/<InstanceNumber>.dcm   CT Image Storage, one file per slice
    segmentations/<StudyInstanceUID>.nii                    vertebra labels 1–19, stored sagittal
    train.csv                  StudyInstanceUID,patient_overall,C1..C7   (what the report says)
    train_bounding_boxes.csv   StudyInstanceUID,x,y,width,height,slice_number
    readers_boxes.csv          StudyInstanceUID,slice_number,x,y,width,height,reader,level
    readers_levels.csv         StudyInstanceUID,reader,level,call
    reports.csv                StudyInstanceUID,text
    manifest.json              the truth: fractured, reported and missed levels per study

As in RSNA, ``train.csv`` and ``train_bounding_boxes.csv`` hold the reported labels: a fracture the
report missed is visible in the image and found by (most) readers but absent from both files.
InstanceNumber runs superior->inferior in some studies and inferior->superior in others;
``slice_number`` is the InstanceNumber of the slice a box lies on. The segmentation's data array is
stored with its first axis running left-right and flipped axes (as RSNA's files are), with a correct
affine: only mapping through the affines puts the labels on the right voxels.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.errors import InputError
from spine_core.io.dicom_write import SeriesInfo, write_series
from spine_core.labels import CERVICAL
from spine_core.phantom.study import PhantomStudy, generate_study
from spine_core.volume import Volume

TRAIN_COLUMNS = ("StudyInstanceUID", "patient_overall", *CERVICAL)
BOX_COLUMNS = ("StudyInstanceUID", "x", "y", "width", "height", "slice_number")
READER_BOX_COLUMNS = ("StudyInstanceUID", "slice_number", "x", "y", "width", "height", "reader",
                      "level")
READER_LEVEL_COLUMNS = ("StudyInstanceUID", "reader", "level", "call")
REPORT_COLUMNS = ("StudyInstanceUID", "text")
MANIFEST = "manifest.json"
#: Everything a demo dataset of any layout writes (replaced when a new one is written there).
_OWNED = ("train_images", "segmentations", "train.csv", "train_bounding_boxes.csv",
          "readers_boxes.csv", "readers_levels.csv", "reports.csv", MANIFEST,
          "rawdata", "derivatives", "raw_data", "metadata", "genant_grades.csv")


@dataclass(frozen=True)
class DemoStudy:
    """What is true about one written study."""

    study_uid: str
    seed: int
    shape: tuple[int, int, int]
    superior_first: bool
    fractured: tuple[str, ...]
    reported: tuple[str, ...]
    missed: tuple[str, ...]
    kinds: dict[str, str]
    n_boxes: int
    segmentation_axcodes: tuple[str, str, str]


@dataclass(frozen=True)
class DemoManifest:
    """A written demo dataset: its folder, how it was drawn and the truth per study."""

    root: Path
    seed: int
    shape: tuple[int, int, int]
    studies: tuple[DemoStudy, ...] = field(default_factory=tuple)

    @property
    def images_dir(self) -> Path:
        return self.root / "train_images"

    @property
    def segmentations_dir(self) -> Path:
        return self.root / "segmentations"

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def boxes_csv(self) -> Path:
        return self.root / "train_bounding_boxes.csv"

    @property
    def readers_boxes_csv(self) -> Path:
        return self.root / "readers_boxes.csv"

    @property
    def readers_levels_csv(self) -> Path:
        return self.root / "readers_levels.csv"

    @property
    def reports_csv(self) -> Path:
        return self.root / "reports.csv"

    def series_dir(self, study_uid: str) -> Path:
        return self.images_dir / study_uid

    def segmentation_path(self, study_uid: str) -> Path:
        return self.segmentations_dir / f"{study_uid}.nii"

    def save(self) -> Path:
        doc = {"seed": self.seed, "shape": list(self.shape),
               "studies": [asdict(s) for s in self.studies]}
        path = self.root / MANIFEST
        path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, root: Path) -> DemoManifest:
        """Read ``root/manifest.json`` written by :func:`write_rsna_dataset`."""
        path = Path(root) / MANIFEST
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path} not found: {root} is not a dataset written by "
                             "write_rsna_dataset (run `spine demo` to create one)") from None
        studies = tuple(
            DemoStudy(**{**s, "shape": tuple(s["shape"]), "fractured": tuple(s["fractured"]),
                         "reported": tuple(s["reported"]), "missed": tuple(s["missed"]),
                         "segmentation_axcodes": tuple(s["segmentation_axcodes"])})
            for s in doc["studies"]
        )
        shape = tuple(int(v) for v in doc["shape"])
        return cls(Path(root), int(doc["seed"]), shape, studies)  # type: ignore[arg-type]


@dataclass
class _Rows:
    """Everything one study contributes to the CSVs and the manifest (small, picklable)."""

    study: DemoStudy
    train: list[Any]
    boxes: list[list[Any]]
    reader_boxes: list[list[Any]]
    reader_levels: list[list[Any]]
    report: list[Any]


def write_segmentation(labels: Volume, path: Path, axcodes: tuple[str, str, str]) -> Path:
    """Write a label volume as uint8 NIfTI whose array axes point along ``axcodes``."""
    import nibabel as nib

    data, ras = labels.reoriented(axcodes).to_nifti_arrays()
    img = nib.Nifti1Image(np.asarray(data, dtype=np.uint8), ras)
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_study(study: PhantomStudy, root: Path) -> _Rows:
    """Write one study's DICOM series and segmentation under ``root``; return its CSV rows."""
    uid = study.study_uid
    write_series(
        study.image,
        root / "train_images" / uid,
        SeriesInfo(study_uid=uid, series_uid=study.series_uid, patient_id=f"PHANTOM-{study.seed}",
                   patient_name=f"Phantom^{study.seed}"),
        instance_numbers=study.instance_numbers,
    )
    write_segmentation(study.labels, root / "segmentations" / f"{uid}.nii", study.nifti_axcodes)

    reported = study.reported_levels
    train = [uid, int(bool(reported)), *(int(lv in reported) for lv in CERVICAL)]
    boxes = sorted(
        ([uid, b.x, b.y, b.width, b.height, study.slice_number(b.slice_index)]
         for b in study.boxes if b.level in reported),
        key=lambda r: (r[5], r[1], r[2]),
    )
    reader_boxes = sorted(
        ([uid, study.slice_number(b.slice_index), b.x, b.y, b.width, b.height, b.reader, b.level]
         for b in study.reader_boxes),
        key=lambda r: (r[6], r[1], r[2], r[3]),
    )
    reader_levels = [[uid, reader, lv, calls[lv]]
                     for reader, calls in study.reader_calls.items() for lv in CERVICAL]
    info = DemoStudy(
        study_uid=uid,
        seed=study.seed,
        shape=study.image.shape,
        superior_first=study.superior_first,
        fractured=tuple(lv for lv in CERVICAL if lv in study.fractured_levels),
        reported=tuple(lv for lv in CERVICAL if lv in reported),
        missed=tuple(lv for lv in CERVICAL if lv in study.missed_levels),
        kinds={f.level: f.kind for f in study.fractures},
        n_boxes=len(study.boxes),
        segmentation_axcodes=study.nifti_axcodes,
    )
    return _Rows(info, train, boxes, reader_boxes, reader_levels, [uid, study.report])


@dataclass(frozen=True)
class StudyPlan:
    """How one study of a dataset is drawn."""

    seed: int
    positive: bool
    report_miss: bool


def study_seeds(seed: int, n_studies: int) -> list[int]:
    """Seed of each study of a dataset (study i's seed does not depend on ``n_studies``)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n_studies)]


def study_plans(seed: int, n_studies: int) -> list[StudyPlan]:
    """The studies of a dataset: in each consecutive pair one is positive (which one is drawn),
    and the positive study of every fifth pair, starting with the second, has a fracture the
    report misses. Half the studies are positive and about 10 % missed, even for small datasets;
    study i's plan does not depend on ``n_studies``."""
    seeds = study_seeds(seed, n_studies)
    plans = []
    for i, s in enumerate(seeds):
        pair = i // 2
        first_positive = bool(np.random.default_rng([seed, pair, 0xB0]).random() < 0.5)
        positive = (i % 2 == 0) == first_positive
        plans.append(StudyPlan(s, positive, positive and pair % 5 == 1))
    return plans


def _generate_and_write(job: tuple[Path, StudyPlan, tuple[int, int, int], int]) -> _Rows:
    root, plan, shape, n_readers = job
    study = generate_study(plan.seed, shape, positive=plan.positive, report_miss=plan.report_miss,
                           n_readers=n_readers)
    return write_study(study, root)


def _prepare(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file: give a folder for the demo dataset")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / MANIFEST).is_file():
            raise InputError(
                f"{out_dir} is not empty and holds no demo dataset ({MANIFEST} missing): "
                "choose an empty or new folder"
            )
        for name in _OWNED:  # a previous demo dataset: replace what it wrote, nothing else
            path = out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    from spine_core.io.safe_paths import output_folder

    output_folder(out_dir)  # one line, not "[Errno 20]", when a parent is a file


def _write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_rsna_dataset(
    out_dir: Path,
    n_studies: int,
    seed: int,
    shape: tuple[int, int, int] = (200, 256, 256),
    workers: int = 2,
    *,
    n_readers: int = 3,
) -> DemoManifest:
    """Generate ``n_studies`` synthetic studies and write them in the RSNA layout.

    Half the studies are positive and about one in ten has a fracture the report misses (see
    :func:`study_plans`). Studies are generated in parallel (``workers`` processes; 1 runs in
    this process). The same arguments give byte-identical files. An existing demo dataset in
    ``out_dir`` is replaced.

    Raises:
        InputError: ``n_studies`` < 1, or ``out_dir`` is not empty and not a demo dataset.
    """
    if n_studies < 1:
        raise InputError(f"n_studies must be at least 1, got {n_studies}")
    out_dir = Path(out_dir)
    _prepare(out_dir)
    shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    jobs = [(out_dir, plan, shape, n_readers) for plan in study_plans(seed, n_studies)]
    if workers <= 1 or n_studies == 1:
        results = [_generate_and_write(job) for job in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, n_studies), mp_context=ctx) as pool:
            results = list(pool.map(_generate_and_write, jobs))

    _write_csv(out_dir / "train.csv", TRAIN_COLUMNS, [r.train for r in results])
    _write_csv(out_dir / "train_bounding_boxes.csv", BOX_COLUMNS,
               [row for r in results for row in r.boxes])
    _write_csv(out_dir / "readers_boxes.csv", READER_BOX_COLUMNS,
               [row for r in results for row in r.reader_boxes])
    _write_csv(out_dir / "readers_levels.csv", READER_LEVEL_COLUMNS,
               [row for r in results for row in r.reader_levels])
    _write_csv(out_dir / "reports.csv", REPORT_COLUMNS, [r.report for r in results])
    manifest = DemoManifest(out_dir, int(seed), shape, tuple(r.study for r in results))
    manifest.save()
    return manifest
