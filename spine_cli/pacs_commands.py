"""`spine import dicomweb`, `spine export seg|sr`, `spine push`: the PACS and DICOM side of the CLI.

Credentials are read from the settings (``SPINE_DICOMWEB_USER`` / ``_PASSWORD`` / ``_TOKEN``),
never from the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spine_core.config import Settings
from spine_core.errors import SpineError

MODALITIES = ("CT", "CR", "DX")


def add_dicomweb_import_options(p: argparse.ArgumentParser) -> None:
    """Options of ``spine import dicomweb URL`` (on the ``import`` parser)."""
    p.add_argument("url", nargs="?", help="dicomweb only: the DICOMweb URL of the PACS (default "
                                          "SPINE_DICOMWEB_URL); credentials come from SPINE_DICOMWEB_*")
    p.add_argument("--study", action="append", default=None, metavar="UID",
                   help="dicomweb only: StudyInstanceUID to import (repeatable; default: all found)")
    p.add_argument("--patient", metavar="ID", help="dicomweb only: only this PatientID")
    p.add_argument("--modality", choices=MODALITIES, help="dicomweb only: only studies and series of "
                                                          "this modality (default CT, CR and DX series)")
    p.add_argument("--since", metavar="DATE", help="dicomweb only: studies from this date on (YYYY-MM-DD)")


def dicomweb_options_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) for k in ("url", "study", "patient", "modality", "since"))


def cmd_import_dicomweb(args: argparse.Namespace, settings: Settings) -> int:
    from db.pacs import import_dicomweb

    report = import_dicomweb(settings, args.url, study_uids=args.study or (), patient_id=args.patient,
                             modality=args.modality, since=args.since, actor=args.actor,
                             progress=not args.no_progress)
    print(report.summary())
    for warning in report.warnings:
        print(f"note {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"failed {problem}", file=sys.stderr)
    return 0 if report.ok else 3


def dicom_object_import(path: Path, settings: Settings, args: argparse.Namespace) -> int | None:
    """``spine import FILE.dcm`` of a DICOM SEG or SR (None: not one, the ordinary import runs)."""
    if not path.is_file():
        return None
    from db.dicom_import import dicom_object_kind, import_dicom_object

    if dicom_object_kind(path) is None:
        return None
    outcome = import_dicom_object(settings, path, actor=getattr(args, "actor", "cli"))
    print(outcome.summary())
    return 0


def cmd_export_dicom(args: argparse.Namespace, settings: Settings) -> int:
    from db import dicom_export

    out = Path(args.out)
    if args.kind == "seg":
        paths = [dicom_export.export_seg(settings, args.study, out, source=args.source or "final")]
    else:
        if args.source:
            raise SpineError("--source applies to export seg only")
        paths = dicom_export.export_sr(settings, args.study, out)
    for path in paths:
        print(path)
    return 0


def cmd_push(args: argparse.Namespace, settings: Settings) -> int:
    from db.dicom_export import push_study

    sent = push_study(settings, args.study, args.to, source=args.source)
    for line in sent:
        print(line)
    return 0


def add_push_parser(add: object) -> None:
    """``spine push STUDY [--to URL]`` (``add`` is build_parser's helper)."""
    p = add("push", cmd_push,  # type: ignore[operator]
            "Send a study's results to the PACS by STOW-RS: its vertebra mask as DICOM SEG and the "
            "readers' work and final labels as a TID 1500 Structured Report.")
    p.add_argument("study", help="StudyInstanceUID")
    p.add_argument("--to", metavar="URL", help="DICOMweb URL (default SPINE_DICOMWEB_URL); credentials "
                                               "come from SPINE_DICOMWEB_*")
    p.add_argument("--source", default="final",
                   help="mask sent as SEG: final (the study's vertebra mask), prediction, or none")
