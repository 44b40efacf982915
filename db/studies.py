"""Open an imported study's image and mask for viewing, export and inference.

The database row of a series says where its files are and what they looked like at import
(fingerprint). Opening checks that they are still there and unchanged, then goes through the
memory-mapped cache, so the second opening of a series costs milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from db import models as m
from db.workspace import Workspace
from spine_core.errors import CacheError, MaskError, SourceChangedError
from spine_core.volume import Volume


def series_files(series: m.Series) -> list[Path]:
    """Absolute source files of a series, in the stored (sorted) order."""
    root = Path(series.source_dir)
    return [root / f for f in series.files] if series.files else [root]


def check_sources(series: m.Series) -> list[Path]:
    """The series' files, after checking they still exist and match the import fingerprint."""
    from spine_core.io.cache import fingerprint_files

    files = series_files(series)
    missing = [p for p in files if not p.exists()]
    if missing:
        raise SourceChangedError(
            f"{len(missing)} of {len(files)} files of series {series.series_uid} are missing "
            f"(first: {missing[0]}); restore them or re-import the study with `spine import`"
        )
    if series.fingerprint and fingerprint_files(files) != series.fingerprint:
        raise SourceChangedError(
            f"the files of series {series.series_uid} changed since they were imported; "
            "re-import the study (`spine import PATH`) so geometry and labels are checked again"
        )
    return files


def open_image(ws: Workspace, series: m.Series) -> Volume:
    """The series' image volume (memory-mapped from the cache after the first opening)."""
    files = check_sources(series)

    def load() -> Volume:
        if series.source_format == "nifti":
            from spine_core.io.nifti import load_nifti

            return load_nifti(files[0])
        if is_radiograph_series(series):
            return _load_radiograph(series, files[0])
        from spine_core.io.decode_check import check_pixels_decode
        from spine_core.io.dicom import load_series, plan_series

        plan = plan_series(files)
        if any(h.pixel_offset is None for h in plan.series.headers):
            # compressed: a damaged slice must not abort this process (exit 134), so the
            # files are first decoded in child processes that name the one that fails
            check_pixels_decode(plan.files, label=f"series {series.series_uid}")
        return load_series(plan)

    try:
        volume = ws.cache.get_or_load(series.series_uid, files, load)
    except CacheError:
        ws.cache.evict(series.series_uid)
        volume = ws.cache.get_or_load(series.series_uid, files, load)
    if volume.shape != tuple(series.shape):
        raise SourceChangedError(
            f"series {series.series_uid} now has shape {volume.shape}, {tuple(series.shape)} at "
            "import; re-import the study"
        )
    if not np.allclose(volume.affine, np.asarray(series.affine), atol=1e-3):
        raise SourceChangedError(
            f"the geometry of series {series.series_uid} differs from the one checked at import; "
            "re-import the study"
        )
    return volume


def is_radiograph_series(series: m.Series) -> bool:
    """True for a one-image series (a radiograph): a CT or MR volume has at least two slices."""
    return series.source_format == "image" or (series.source_format == "dicom"
                                               and len(series.shape) == 3 and series.shape[0] == 1)


def _load_radiograph(series: m.Series, path: Path) -> Volume:
    """A radiograph's one-slice volume; compressed pixels are first decoded in a child process."""
    if series.source_format == "image":
        from spine_core.io.radiograph_image import load_image_radiograph

        return load_image_radiograph(path)
    from spine_core.io.decode_check import check_pixels_decode
    from spine_core.io.dicom_scan import read_header
    from spine_core.io.radiograph import load_radiograph

    if read_header(path).pixel_offset is None:
        check_pixels_decode([path], label=f"radiograph {series.series_uid}")
    return load_radiograph(path)


def primary_mask(series: m.Series) -> m.Mask | None:
    """The dataset's own vertebra mask of a series (not a model's prediction), if any."""
    for mask in series.masks:
        if mask.source == "dataset":
            return mask
    return None


def open_mask(ws: Workspace, series: m.Series, image: Volume, mask_row: m.Mask | None = None) -> Volume | None:
    """The vertebra mask (canonical ids, uint8) on the image's grid, or None if the study has none.

    Raises:
        MaskError: when the mask file is gone or no longer fits the image (the message says to
            re-import or open the study without the mask).
    """
    row = mask_row or primary_mask(series)
    if row is None:
        return None
    path = Path(row.path)
    if not path.exists():
        raise MaskError(
            f"the mask file {path} of study {series.study.study_uid} is missing; open the study "
            "without the mask or re-import it"
        )
    from spine_core.io.masks import align_mask_to_image
    from spine_core.io.nifti import load_nifti
    from spine_core.labels import VOCABULARIES

    def load() -> Volume:
        aligned = align_mask_to_image(load_nifti(path), image, vocabulary=VOCABULARIES[row.vocabulary])
        return image.with_array(np.asarray(aligned.array, dtype=np.uint8),
                                warnings=list(aligned.warnings), kind="mask")

    key = f"{series.series_uid}.mask{row.id}"
    try:
        return ws.cache.get_or_load(key, [path, *series_files(series)[:1]], load)
    except MaskError as exc:
        raise MaskError(f"{exc} — open the study without the mask, or fix and re-import it") from None
