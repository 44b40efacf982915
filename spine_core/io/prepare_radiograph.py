"""Pass 1 of an import for radiographs: one image checked and described, nothing decoded but a
trial decode of compressed pixel data in a child process (as for CT).

A radiograph becomes a one-slice series: shape ``(1, rows, columns)``, the display-frame affine of
:mod:`spine_core.io.radiograph` (pixel steps when the spacing is unknown), its modality and SOP
Instance UID as in the file. How it is to be shown (spacing source, view, window) travels in
``PreparedSeries.details`` and is read again from the file whenever it is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spine_core.errors import InputError, SpineError
from spine_core.io.dicom_scan import DicomScan, SeriesHeaders, SizeLimits
from spine_core.io.prepare import PreparedSeries, _nifti_uid
from spine_core.io.radiograph import display_affine, read_radiograph_header


def prepare_dicom_radiograph(folder: Path, scan: DicomScan, chosen: SeriesHeaders,
                             limits: SizeLimits) -> PreparedSeries:
    """The one radiograph of ``chosen`` (a CR/DX/SC series of one file), checked.

    Raises:
        InputError: several images in the series, several frames, colour, a size outside the
            limits, pixel data that cannot be decoded — one line naming the file.
    """
    from spine_core.io.cache import fingerprint_files

    if len(chosen.headers) > 1:
        names = ", ".join(h.path.name for h in chosen.headers[:3])
        raise InputError(
            f"{folder.name}: series {chosen.series_uid} holds {len(chosen.headers)} radiographs "
            f"({names}{', ...' if len(chosen.headers) > 3 else ''}); a case is one image — put "
            "each radiograph in its own folder")
    path = chosen.headers[0].path
    where = f"{folder.name}/{path.relative_to(folder)}"
    try:
        header = read_radiograph_header(path, limits)
    except SpineError as exc:
        raise InputError(f"{where}: {str(exc).removeprefix(f'{path}: ')}") from None
    h = header.file
    if h.pixel_offset is None:  # compressed: trial-decode, isolated in a child process
        from spine_core.io.decode_check import check_pixels_decode

        try:
            check_pixels_decode([path])
        except SpineError as exc:
            raise InputError(f"{folder.name}/{exc}; radiograph {chosen.series_uid} was not "
                             "imported") from None
    warnings = list(header.warnings)
    if len(scan.series) > 1:
        warnings.append(f"{len(scan.series) - 1} other series in the folder were not imported")
    details = {"spacing_source": header.spacing.source,
               "spacing_mm": list(header.spacing.mm) if header.spacing.mm else None,
               "view": header.view, "window_source": header.window_source,
               "photometric": h.photometric, "sop_uid": h.sop_uid}
    return PreparedSeries(
        study_uid=chosen.study_uid, series_uid=chosen.series_uid, source_format="dicom",
        source_dir=str(folder.resolve()), files=[str(path.relative_to(folder))],
        shape=(1, h.rows, h.columns), affine=display_affine(header.spacing.mm).tolist(),
        instance_numbers=[h.instance_number], fingerprint=fingerprint_files([path]),
        modality=chosen.modality or "OT", patient_id=chosen.patient_id,
        description=chosen.description or f"{header.view} radiograph", warnings=warnings,
        details=details,
    )


def prepare_image_radiograph(path: Path, case: Any, limits: SizeLimits) -> PreparedSeries:
    """A PNG/JPEG radiograph (with its sidecar, if any), checked from its header and sidecar."""
    from spine_core.io.cache import fingerprint_files
    from spine_core.io.radiograph_image import image_size, read_sidecar, sidecar_path

    side = read_sidecar(path)
    rows, columns = image_size(path, limits)
    uid = _nifti_uid(case.dataset, case.case_id)
    sidecar = sidecar_path(path)
    sources = [path, sidecar] if sidecar.is_file() else [path]  # a changed sidecar re-imports
    details = {"spacing_source": side.spacing.source,
               "spacing_mm": list(side.spacing.mm) if side.spacing.mm else None,
               "view": side.view, "window_source": "", "photometric": "MONOCHROME2"}
    return PreparedSeries(
        study_uid=uid, series_uid=f"{uid}.1", source_format="image",
        source_dir=str(path.parent.resolve()), files=[p.name for p in sources],
        shape=(1, rows, columns),
        affine=display_affine(side.spacing.mm).tolist(), instance_numbers=[1],
        fingerprint=fingerprint_files(sources), modality=side.modality,
        patient_id=side.patient_id, description=side.description or path.name,
        warnings=list(side.warnings), details=details,
    )
