"""The `spine` command: batch work on datasets, the database and the models.

Every subcommand has ``--help``. Errors are printed as one clear line on stderr with a non-zero
exit status (2 for bad input, 1 for an unexpected failure); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spine_core.config import Settings, load_settings
from spine_core.errors import SpineError
from spine_core.roles import role_names

Handler = Callable[[argparse.Namespace, Settings], int]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        db_url=getattr(args, "db", None),
        data_dir=getattr(args, "data_dir", None),
        workers=getattr(args, "workers", None),
    )


def _cmd_info(args: argparse.Namespace, settings: Settings) -> int:
    from db.bootstrap import database_summary

    for key, value in database_summary(settings).items():
        print(f"{key}: {value}")
    return 0


def _cmd_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    from db.bootstrap import bootstrap

    for line in bootstrap(settings, progress=not args.no_progress):
        print(line)
    print("ready")
    return 0


def _cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import select
    from tqdm import tqdm

    from db import models as m
    from db.predictions import predict_many
    from db.workspace import open_workspace
    from spine_core.inference.select import predictor_from_settings

    if not args.ray and (args.ray_address or args.actors is not None or args.gpus_per_actor is not None):
        raise SpineError("--ray-address, --actors and --gpus-per-actor need --ray")
    ws = open_workspace(settings)
    with ws.sessions() as session:
        stmt = select(m.Study.id, m.Study.study_uid).order_by(m.Study.id)
        if args.study:
            stmt = stmt.where(m.Study.study_uid.in_(args.study))
        rows = session.execute(stmt).all()
    if args.study and len(rows) != len(set(args.study)):
        missing = sorted(set(args.study) - {uid for _, uid in rows})
        raise SpineError(f"not imported: {', '.join(missing)}")
    if settings.external_worker and not args.ray:
        from spine_cli.job_commands import queue_batch

        return queue_batch(ws, [sid for sid, _ in rows], actor=args.actor,
                           replace=args.replace, wait=args.wait)
    if args.wait:
        raise SpineError("--wait follows a batch queued for `spine worker`; it needs "
                         "SPINE_WORKER=external (without --ray)")
    bar = tqdm(total=len(rows), unit="study", disable=args.no_progress, desc="predict")

    def step(study_id: int, outcome: str) -> None:
        bar.update(1)
        bar.set_postfix_str(outcome)

    ids = [sid for sid, _ in rows]
    if args.ray:
        import os

        from db.ray_batch import RayBatchOptions, predict_many_ray

        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # our progress bar, not Ray Data's log

        options = RayBatchOptions(address=args.ray_address, actors=args.actors,
                                  gpus_per_actor=args.gpus_per_actor,
                                  local_cpus=settings.workers if args.workers else None)
        report = predict_many_ray(ws, ids, actor=args.actor, replace=args.replace, options=options,
                                  on_study=step)
    else:
        predictor = predictor_from_settings(settings)
        report = predict_many(ws, predictor, ids, actor=args.actor, replace=args.replace,
                              on_study=step)
    bar.close()
    print(report.summary())
    for problem in report.problems:
        print(f"failed {problem}", file=sys.stderr)
    return 0 if not report.problems and not report.stopped else 3


def _training_options(args: argparse.Namespace) -> list[str]:
    """The options this ``spine train`` was given, for a worker to run them: without
    ``--queue``/``--actor``, and ``--out`` as an absolute path (the worker runs elsewhere)."""
    argv = list(getattr(args, "argv", []))
    given = argv[argv.index("train") + 1:] if "train" in argv else []
    out: list[str] = []
    skip = False
    for arg in given:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in ("--out", "--actor"):
            skip = "=" not in arg
            continue
        if name != "--queue":
            out.append(arg)
    return [*out, "--out", str(Path(args.out).resolve())]


def _cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "queue", False):
        from db.workspace import open_workspace
        from spine_cli.job_commands import queue_training

        if getattr(args, "modality", "ct") == "ct" and getattr(args, "stage", "both") == "both":
            from spine_core.inference.train.run import settings_from_args

            settings_from_args(args)  # a bad option is said now, not by the worker later
        return queue_training(open_workspace(settings), _training_options(args),
                              actor=args.actor)
    if getattr(args, "modality", "ct") == "xray":
        from spine_core.inference.xray.train import run_xray_from_args

        return run_xray_from_args(args)
    if getattr(args, "stage", "both") == "labelling-whole":
        from spine_core.inference.wholespine.train import run_whole_spine_from_args

        return run_whole_spine_from_args(args)
    from spine_core.inference.train import run_from_args

    return run_from_args(args)


def _cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from spine_core.errors import InputError
    from spine_core.inference.loading import default_weights_dir
    from spine_core.inference.train import calibrate_weights

    try:
        shape = tuple(int(v) for v in str(args.shape).lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise InputError(f"--shape must be SLICESxROWSxCOLS with each at least 16, got '{args.shape}'")
    import torch

    folder = args.models_dir or settings.models_dir or default_weights_dir()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    try:
        summary = calibrate_weights(folder, args.studies, args.test_studies, fit_seed=args.fit_seed,
                                    test_seed=args.test_seed, shape=shape)
    finally:
        torch.set_num_threads(previous)
    measured = summary.get("measured_on", {})
    print(json.dumps({k: v for k, v in measured.items() if not k.startswith("reliability")}, indent=2))
    print(f"temperature {summary['temperature']} written to {folder}/fracture.json; ECE "
          f"{measured.get('ece_before')} -> {measured.get('ece_after')} on {measured.get('n_studies')} "
          "held-out studies")
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.ray:
        from spine_core.inference.ray_serve import RayServeOptions, serve_ray

        options = RayServeOptions(
            replicas=args.replicas, max_concurrent_jobs=args.max_concurrent_jobs,
            max_request_mb=args.max_request_mb,
            job_timeout_s=args.job_timeout_s if args.job_timeout_s is not None else settings.backend_timeout_s,
            queue_wait_s=args.queue_wait_s, gpus_per_replica=args.gpus_per_replica,
        )
        serve_ray(settings, options, host=args.host, port=args.port, address=args.ray_address)
        return 0
    if args.replicas != 1 or args.ray_address or args.gpus_per_replica is not None:
        raise SpineError("--replicas, --ray-address and --gpus-per-replica need --ray")
    from spine_core.inference.server import serve

    serve(settings, host=args.host, port=args.port, max_concurrent_jobs=args.max_concurrent_jobs,
          max_request_mb=args.max_request_mb, job_timeout_s=args.job_timeout_s,
          queue_wait_s=args.queue_wait_s)
    return 0


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from db.migrate import current_revision, upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.database_url)
    print(f"database at revision {current_revision(settings.database_url)}")
    return 0


def _cmd_demo_xray(args: argparse.Namespace, settings: Settings) -> int:
    from spine_core.phantom.xray_layout import write_xray_dataset

    region = args.region
    if region not in ("cervical", "lumbar"):
        raise SpineError(f"--modality xray takes --region cervical or lumbar, not {args.region}")
    if args.layout != "rsna" or args.shape:
        raise SpineError("--modality xray writes the RSNA-like radiograph layout at the film's "
                         "own size: leave out --layout and --shape")
    truth = write_xray_dataset(Path(args.out), region=region, n_studies=args.studies,
                               seed=args.seed, workers=settings.workers)
    print(f"wrote {args.studies} synthetic lateral {region} radiographs (DX) to {args.out}; "
          f"truth in {truth.name}")
    if args.do_import:
        _ensure_demo_readers(settings)
        return _run_import(Path(args.out), settings, args)
    return 0


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from spine_core.phantom.demo import DEFAULT_SHAPES, check_region_layout, write_demo_dataset

    if args.modality == "xray":
        return _cmd_demo_xray(args, settings)
    check_region_layout(args.region, args.layout)
    out = Path(args.out)
    text = args.shape or "x".join(str(v) for v in DEFAULT_SHAPES[args.region])
    try:
        shape = tuple(int(v) for v in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise SpineError(f"--shape must be SLICESxROWSxCOLS, got '{args.shape}'")
    write_demo_dataset(out, region=args.region, layout=args.layout, n_studies=args.studies,
                       seed=args.seed, shape=shape, workers=settings.workers)
    names = {"rsna": "RSNA", "verse": "VerSe 2020", "ctspine1k": "CTSpine1K"}
    print(f"wrote {args.studies} synthetic {args.region} studies in the {names[args.layout]} "
          f"layout to {out}")
    if args.do_import:
        _ensure_demo_readers(settings)
        return _run_import(out, settings, args)
    return 0


def _ensure_demo_readers(settings: Settings) -> None:
    """The demo's readers' work names reader1..3: create the demo accounts first (those that are
    missing), so it is imported instead of refused row by row."""
    from db.session import unit_of_work
    from db.users import ensure_demo_users
    from db.workspace import open_workspace

    with unit_of_work(open_workspace(settings).sessions) as session:
        made = ensure_demo_users(session, actor="spine demo")
    if made:
        print(f"created the demo accounts {', '.join(made)} (password = user name; change them "
              "with `spine users`)")


def _run_import(path: Path, settings: Settings, args: argparse.Namespace) -> int:
    from db.importer import import_path

    report = import_path(
        path,
        settings,
        actor=getattr(args, "actor", "cli"),
        progress=not getattr(args, "no_progress", False),
    )
    print(report.summary())
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"skipped {problem}", file=sys.stderr)
    return 0 if report.ok else 3


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from spine_cli.pacs_commands import cmd_import_dicomweb, dicomweb_options_given

    if args.path == "dicomweb":
        return cmd_import_dicomweb(args, settings)
    if dicomweb_options_given(args):
        raise SpineError("URL, --study, --patient, --modality and --since apply to `spine import dicomweb` only")
    from spine_cli.pacs_commands import dicom_object_import

    if (done := dicom_object_import(Path(args.path), settings, args)) is not None:
        return done
    return _run_import(Path(args.path), settings, args)


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from db import exporter

    out = Path(args.out)
    if args.kind in ("seg", "sr"):
        from spine_cli.pacs_commands import cmd_export_dicom

        return cmd_export_dicom(args, settings)
    if args.source:
        raise SpineError("--source applies to export seg only")
    if args.kind == "rsna":
        result = exporter.export_rsna(settings, out, include_undecided=args.include_undecided)
        paths = result.paths
        if result.undecided:
            print(result.note(), file=sys.stderr)
    elif args.kind == "nifti":
        paths = exporter.export_nifti(settings, args.study, out)
    elif args.kind == "readers":
        paths = exporter.export_readers(settings, out)
    elif args.kind == "coco":
        paths = exporter.export_coco(settings, out)
    elif args.kind == "decisions":
        paths = exporter.export_decisions(settings, out)
    elif args.kind in ("verse", "ctspine1k"):
        from db.layout_export import export_layout

        written = export_layout(settings, args.kind, out)
        for line in written.warnings:
            print(f"warning: {line}", file=sys.stderr)
        paths = written.paths
    elif args.kind == "film-masks":
        from db.film_export import export_film_masks
        from db.workspace import open_workspace

        films = export_film_masks(open_workspace(settings), out)
        for line in films.skipped:
            print(f"skipped: {line}", file=sys.stderr)
        if not films.paths:
            raise SpineError("no radiograph has a final truth yet (readers submitted, its "
                             "labelling not disputed), so there is no film mask to export")
        paths = films.paths
    else:  # pragma: no cover - argparse restricts the choices
        raise SpineError(f"unknown export kind {args.kind}")
    for p in paths:
        print(p)
    return 0


def _cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    from db.users import create_user, list_users, set_role
    from db.workspace import open_workspace

    ws = open_workspace(settings)
    with ws.sessions.begin() as session:
        if args.users_cmd == "add":
            password = args.password or _read_password()
            create_user(session, args.username, password, args.role, actor="cli",
                        display_name=args.name or args.username)
            print(f"added {args.username} ({args.role})")
        elif args.users_cmd == "set-role":
            set_role(session, args.username, args.role, actor="cli")
            print(f"{args.username} is now {args.role}")
        else:
            for user in list_users(session):
                state = "" if user.active else " (inactive)"
                print(f"{user.username}\t{user.role}{state}")
    return 0


def _cmd_disputes(args: argparse.Namespace, settings: Settings) -> int:
    from db import disputes

    if args.disputes_cmd == "refresh":
        from db.workspace import open_workspace

        ws = open_workspace(settings)
        with ws.sessions.begin() as session:
            results = disputes.refresh_all(session, settings, actor=args.actor)
        opened = sum(len(r.opened) for r in results)
        still_open = sum(r.open_disputes for r in results)
        print(f"{len(results)} studies checked: {opened} disputes opened, {still_open} open in all")
        return 0
    from spine_cli.dispute_list import disputes_list_csv, disputes_list_table

    write = disputes_list_csv if args.format == "csv" else disputes_list_table
    write(settings, sys.stdout, status=args.status)
    return 0


def _read_password() -> str:
    import getpass

    if not sys.stdin.isatty():
        line = sys.stdin.readline().rstrip("\n")
        if line:
            return line
        raise SpineError("no password given: pass --password or type it on standard input")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise SpineError("the two passwords differ; nothing was changed")
    return first


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="database URL (default: SPINE_DB_URL or SQLite under --data-dir)")
    p.add_argument("--data-dir", help="folder for the database, caches and predictions (default ./var)")
    p.add_argument("--workers", type=int, help="parallel workers (default: CPU count, at most 4)")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of the `spine` command (exposed for tests and docs).

    The options of ``train`` come from the training module, which imports PyTorch; they are
    only added when ``argv`` asks for ``train`` (or is not given), so other commands start fast.
    """
    parser = argparse.ArgumentParser(
        prog="spine", description="SpineReview: spine CT datasets, annotations and models."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Handler] = {}

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p)
        p.set_defaults(handler=handler)
        handlers[name] = handler
        return p

    add("info", _cmd_info, "Show the settings in force and what the database holds.")

    p = add("bootstrap", _cmd_bootstrap,
            "Prepare the embedded default: migrations, demo users, demo studies on first start.")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("db", _cmd_db_upgrade, "Database maintenance.")
    p.add_argument("action", choices=["upgrade"], help="upgrade: apply all migrations")

    p = add("demo", _cmd_demo, "Write synthetic spine CT studies in a published dataset layout.")
    p.add_argument("--out", default="var/demo", help="output folder (default var/demo)")
    p.add_argument("--studies", type=int, default=10, help="number of studies (default 10)")
    p.add_argument("--seed", type=int, default=2022, help="random seed (default 2022)")
    p.add_argument("--modality", choices=["ct", "xray"], default="ct",
                   help="ct (default) or xray: lateral radiographs projected from the whole-spine "
                        "phantom (DX DICOM + truth.csv)")
    p.add_argument("--region", choices=["cervical", "thoracolumbar", "whole", "lumbar"],
                   default="cervical",
                   help="part of the spine (default cervical; lumbar for --modality xray)")
    p.add_argument("--layout", choices=["rsna", "verse", "ctspine1k"], default="rsna",
                   help="dataset layout: rsna (DICOM + CSVs, cervical only), verse (VerSe 2020), "
                        "ctspine1k (default rsna)")
    p.add_argument("--shape", default=None,
                   help="SLICESxROWSxCOLS (default 200x256x256 cervical, 320x256x256 "
                        "thoracolumbar, 512x256x256 whole)")
    p.add_argument("--import", dest="do_import", action="store_true",
                   help="import the written studies into the database")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = add("import", _cmd_import,
            "Import a dataset folder (RSNA, VerSe, CTSpine1K, TotalSegmentator output or plain "
            "DICOM), or a readers' boxes / labels CSV.")
    p.add_argument("path", help="dataset folder or CSV file, or 'dicomweb' to import from a PACS")
    p.add_argument("--actor", default="cli", help="user name recorded in the audit log")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    from spine_cli.pacs_commands import add_dicomweb_import_options, add_push_parser

    add_dicomweb_import_options(p)

    p = add("export", _cmd_export, "Export labels, boxes and volumes.")
    p.add_argument("kind", choices=["rsna", "nifti", "readers", "coco", "decisions", "verse",
                                    "ctspine1k", "seg", "sr", "film-masks"],
                   help="rsna: train.csv + train_bounding_boxes.csv of the final labels and union "
                        "boxes; nifti: image and mask of one study; readers: every reader's boxes "
                        "and labels; coco: axial slices with boxes; decisions: adjudication record; "
                        "verse / ctspine1k: images, masks, centroids and final Genant grades in "
                        "that dataset's layout; seg: a vertebra mask as DICOM SEG; sr: readers' boxes, "
                        "calls and final labels as a DICOM TID 1500 Structured Report; film-masks: "
                        "each radiograph's final vertebra boxes as a PNG label map")
    p.add_argument("study", nargs="?", help="StudyInstanceUID (nifti, seg and sr only)")
    p.add_argument("out", nargs="?", help="output folder (default ./export)")
    p.add_argument("--include-undecided", action="store_true",
                   help="rsna only: also export studies with undecided levels (open disputes; "
                        "left out by default), each such level at its provisional label: the "
                        "report's label, as the 'report' adjudication policy gives while a "
                        "dispute is open (0 where the report does not label the level)")

    p.add_argument("--source", help="seg only: final (the study's vertebra mask, default), "
                                    "reader:NAME, or prediction (the latest model's mask)")

    add_push_parser(add)

    p = add("users", _cmd_users, "Manage user accounts.")
    users_sub = p.add_subparsers(dest="users_cmd", required=True, metavar="ACTION")
    ua = users_sub.add_parser("add", help="add a user (password from --password or stdin)")
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=role_names())
    ua.add_argument("--name", help="display name")
    ua.add_argument("--password", help="password (prefer standard input)")
    users_sub.add_parser("list", help="list users and roles")
    us = users_sub.add_parser("set-role", help="change a user's role")
    us.add_argument("username")
    us.add_argument("role", choices=role_names())

    p = add("disputes", _cmd_disputes, "Adjudication disputes: list them, or re-check studies.")
    disputes_sub = p.add_subparsers(dest="disputes_cmd", required=True, metavar="ACTION")
    dl = disputes_sub.add_parser("list", help="list disputes, most urgent first")
    dl.add_argument("--format", choices=["table", "csv"], default="table")
    dl.add_argument("--status", choices=["open", "decided", "all"], default="open")
    dr = disputes_sub.add_parser("refresh",
                                 help="re-check every read study: disputes, final labels, status")
    dr.add_argument("--actor", default="cli", help="user name recorded in the audit log")

    p = add("predict", _cmd_predict,
            "Run the models on imported studies and store the predictions (resumable: studies "
            "already predicted by the same model version are skipped). With "
            "SPINE_WORKER=external the batch is queued for `spine worker` instead.")
    p.add_argument("--study", action="append", help="StudyInstanceUID (repeatable; default: all)")
    p.add_argument("--replace", action="store_true", help="predict again even if already predicted")
    p.add_argument("--actor", default="cli", help="user name recorded in the audit log")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--ray", action="store_true",
                   help="predict on Ray actors (each loads the models once; needs the 'ray' extra); "
                        "without --ray-address a local Ray is started for the run (all CPUs, or --workers)")
    p.add_argument("--ray-address", help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001")
    p.add_argument("--actors", type=int, help="Ray model actors (default: one per GPU, else per CPU)")
    p.add_argument("--gpus-per-actor", type=float,
                   help="GPUs per Ray actor (default: 1 when the cluster has GPUs, else 0)")
    p.add_argument("--wait", action="store_true",
                   help="with SPINE_WORKER=external (the batch is queued for `spine worker`): "
                        "print its progress until it ends")

    from spine_cli.job_commands import add_worker_parser

    add_worker_parser(add)

    p = add("train", _cmd_train,
            "Train the two demo models (vertebra segmentation, fracture classifier) on synthetic "
            "studies and write small weights with a model card; with --modality xray, the "
            "radiograph U-Net + detector ensemble on synthetic lateral films.")
    p.add_argument("--queue", action="store_true",
                   help="queue the training for a `spine worker` (run outside this shell, one at "
                        "a time; progress on the Models page) instead of running it here")
    p.add_argument("--actor", default="cli", help="who queued it (with --queue; default cli)")
    if argv is None or "train" in argv:
        from spine_core.inference.train import add_arguments
        from spine_core.inference.wholespine.train import add_whole_spine_arguments
        from spine_core.inference.xray.train import add_xray_arguments

        add_arguments(p)
        add_xray_arguments(p)
        add_whole_spine_arguments(p)

    p = add("calibrate", _cmd_calibrate,
            "Fit the fracture model's temperature (calibrated probabilities) for existing CT "
            "weights on fresh synthetic studies, write it into fracture.json and the ECE before "
            "and after into the model card.")
    p.add_argument("--models-dir", help="weights folder (default SPINE_MODELS_DIR, else the shipped "
                                        "demo weights)")
    p.add_argument("--studies", type=int, default=16, help="studies to fit on (default 16)")
    p.add_argument("--test-studies", type=int, default=16,
                   help="other studies to measure ECE on (default 16)")
    p.add_argument("--fit-seed", type=int, default=2022700, help="first fit seed (default 2022700)")
    p.add_argument("--test-seed", type=int, default=2022800, help="first test seed (default 2022800)")
    p.add_argument("--shape", default="200x256x256",
                   help="phantom SLICESxROWSxCOLS (default 200x256x256, the training shape)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")

    p = add("serve", _cmd_serve,
            "Run the HTTP inference backend (loads the models once; GPU when present). "
            "Clients need SPINE_BACKEND_TOKEN.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--max-concurrent-jobs", type=int, default=1, help="jobs run at once (default 1)")
    p.add_argument("--max-request-mb", type=float, default=1024.0, help="largest request body in MB")
    p.add_argument("--job-timeout-s", type=float, default=None, help="seconds before a job answers 504")
    p.add_argument("--queue-wait-s", type=float, default=0.0,
                   help="seconds a request waits for a free slot before 503 (default 0)")
    p.add_argument("--ray", action="store_true",
                   help="serve the same API from Ray Serve replicas (needs the 'ray' extra); "
                        "the limits above apply per replica")
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (default 1)")
    p.add_argument("--ray-address", help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 "
                                         "(default: start a local Ray)")
    p.add_argument("--gpus-per-replica", type=float,
                   help="GPUs per replica (default: 1 when the cluster has GPUs, else 0)")

    return parser


def _fix_export_args(args: argparse.Namespace, extra: list[str],
                     parser: argparse.ArgumentParser) -> None:
    """Sort out export's positionals (``nifti STUDY [OUT]``, ``KIND [OUT]``); any other command
    takes no ``extra`` arguments.

    argparse gives the optional positionals up (``None``) when an option comes before them
    (``export rsna --include-undecided OUT``): what it left over in ``extra`` fills them.
    """
    if args.command != "export" or any(a.startswith("-") for a in extra):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return
    given = [a for a in (args.study, args.out) if a is not None] + extra
    if args.include_undecided and args.kind != "rsna":
        parser.error("--include-undecided applies to export rsna only")
    if args.kind in ("nifti", "seg", "sr"):
        if not given:
            parser.error(f"export {args.kind} needs a StudyInstanceUID: spine export {args.kind} STUDY OUT")
        if len(given) > 2:
            parser.error(f"unrecognized arguments: {' '.join(given[2:])}")
        args.study, args.out = given[0], given[1] if len(given) > 1 else "export"
        return
    if len(given) > 1:
        parser.error(f"export {args.kind} takes only OUT, not a study")
    args.study, args.out = None, given[0] if given else "export"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments)
    args, extra = parser.parse_known_args(arguments)
    args.argv = arguments  # `spine train --queue` hands its options on to a worker
    _fix_export_args(args, extra, parser)
    debug = bool(getattr(args, "debug", False))
    try:
        settings = _settings(args)
        handler: Any = args.handler
        return int(handler(args, settings))
    except SpineError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; work committed so far is kept, run the command again to resume",
              file=sys.stderr)
        return 130
    except OSError as exc:
        if debug:
            raise
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI must never show a traceback unasked
        if debug:
            raise
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):  # never the SQL or the row's values
            from db.db_errors import database_refusal

            print(f"error: {database_refusal(exc)}", file=sys.stderr)
            return 1
        print(f"internal error: {type(exc).__name__}: {_first_line(exc)} (run again with --debug "
              "for details)", file=sys.stderr)
        return 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


#: What to do about an operating-system error, by errno name.
_OS_HINTS = {
    "EEXIST": "exists already (a file where a folder is needed?); choose another path or remove it",
    "ENOENT": "does not exist; check the path",
    "ENOTDIR": "a part of this path is a file, not a folder; check the path",
    "EISDIR": "is a folder, not a file; give a file",
    "EACCES": "permission denied; choose a path you may use or change its permissions",
    "EPERM": "operation not permitted; choose a path you may use",
    "ENOSPC": "the disk is full; free some space and run the command again",
    "ELOOP": "symbolic links form a loop; remove the link",
    "EROFS": "the file system is read-only; choose another path",
}


def describe_os_error(exc: OSError) -> str:
    """An operating-system error as one line: the path and what to do (no '[Errno 17]')."""
    import errno

    name = errno.errorcode.get(exc.errno or -1, "")
    what = _OS_HINTS.get(name) or (exc.strerror or _first_line(exc) or type(exc).__name__)
    path = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        path = f"{path} -> {exc.filename2}"
    if not path and exc.errno is None:
        return _first_line(exc) or type(exc).__name__
    return f"{path}: {what}" if path else what


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
