"""Batch prediction of a whole workspace on Ray (``spine predict --ray``).

Ray Data's recommended shape for offline batch inference: a dataset of small rows (one per study:
its id and where its image lies) mapped by a callable class on a fixed pool of actors
(``ActorPoolStrategy``), each of which loads the models once. Each actor opens the study's image
itself from the memory-mapped volume cache or the source files (shared storage: the same paths
on every node), so no volume travels through the driver; it sends back the prediction in the
compressed wire format of the HTTP backend (:mod:`spine_core.inference.wire`).

The driver stores every answer as soon as it arrives through
:func:`db.predictions.store_prediction`, so each study is stored whole or not at all, and an
interrupted run resumes: studies already predicted by the same model version are skipped before
anything is sent to Ray. A study that fails (missing files, a model error) is reported by its UID
and the others go on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from db.workspace import Workspace
from spine_core.config import Settings
from spine_core.errors import ClusterError, InputError, PredictionError, SpineError
from spine_core.inference.protocol import ModelInfo
from spine_core.inference.ray_runtime import cluster_cpus, cluster_gpus, ray_connection, require_ray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayBatchOptions:
    """Where and how wide a Ray batch runs.

    Attributes:
        address: Ray cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``); None starts
            a local Ray for the run.
        actors: model actors; None = one per GPU of the cluster, or one per CPU without GPUs
            (never more than the studies to predict).
        gpus_per_actor: GPUs per actor; None = 1 when the cluster has GPUs, else 0.
        cpus_per_actor: CPUs per actor (also the torch threads of a CPU actor).
        local_cpus: CPUs of a local Ray started for the run (None = all of this machine's).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    local_cpus: int | None = None

    def check(self) -> None:
        """Raises InputError naming the first option out of range."""
        if self.actors is not None and self.actors < 1:
            raise InputError(f"--actors must be at least 1, got {self.actors}")
        if self.cpus_per_actor <= 0 or (self.gpus_per_actor is not None and self.gpus_per_actor < 0):
            raise InputError("CPUs per actor must be positive and GPUs per actor not negative")


def worker_settings(settings: Settings) -> Settings:
    """What the actors need: absolute paths of the cache and models; no database URL, no token."""
    data_dir = settings.data_dir.resolve()
    return replace(
        settings,
        data_dir=data_dir,
        cache_dir=settings.volume_cache_dir.resolve(),
        models_dir=settings.models_dir.resolve() if settings.models_dir is not None else None,
        db_url="",
        backend_url="",
        backend_token="",
    )


def series_reference(series: Any) -> str:
    """JSON of what an actor needs to open a series' image (paths, fingerprint, grid)."""
    return json.dumps({
        "series_uid": series.series_uid,
        "source_format": series.source_format,
        "source_dir": str(Path(series.source_dir).resolve()),
        "files": list(series.files or []),
        "fingerprint": series.fingerprint,
        "shape": [int(s) for s in series.shape],
        "affine": [[float(v) for v in row] for row in series.affine],
    })


class StudyPredictor:
    """Ray Data callable class: loads the models once per actor, predicts a batch of studies.

    Input rows: ``study_id`` and ``series`` (:func:`series_reference`). Output rows:
    ``study_id``, ``payload`` (wire-encoded prediction, empty on failure), ``error`` (empty on
    success) and ``load_s`` (seconds to open the image).
    """

    def __init__(self, settings: Settings) -> None:
        from spine_core.inference.select import load_local_predictor

        self.workspace = Workspace(settings)
        self.predictor = load_local_predictor(settings)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ids, payloads, errors, load_times = [], [], [], []
        for study_id, reference in zip(batch["study_id"], batch["series"]):
            payload, error, load_s = self.predict_one(str(reference), int(study_id))
            ids.append(int(study_id))
            payloads.append(payload)
            errors.append(error)
            load_times.append(load_s)
        return {
            "study_id": np.asarray(ids, dtype=np.int64),
            "payload": np.asarray(payloads, dtype=object),
            "error": np.asarray(errors, dtype=object),
            "load_s": np.asarray(load_times, dtype=np.float64),
        }

    def predict_one(self, reference: str, study_id: int) -> tuple[bytes, str, float]:
        """(payload, "", load seconds) or (b"", error message, load seconds) for one study."""
        from db import models as m
        from db.film_views import image_to_predict
        from spine_core.inference import wire

        started = time.perf_counter()
        load_s = 0.0
        try:
            series = m.Series(**json.loads(reference))
            volume = image_to_predict(self.workspace, series, study_id)
            load_s = time.perf_counter() - started
            result = self.predictor.predict(volume)
            return wire.encode_prediction(result, volume.affine, volume.shape), "", load_s
        except SpineError as exc:
            return b"", str(exc), load_s
        except Exception as exc:  # noqa: BLE001 - one broken study must not end the batch
            log.exception("prediction failed unexpectedly")
            return b"", f"unexpected {type(exc).__name__}: {exc}", load_s


def _model_info(settings: Settings) -> ModelInfo:
    """The model name, version and card, read by loading the models here once on CPU (studies
    already predicted by this version are skipped before anything is sent to Ray)."""
    from spine_core.inference.select import load_local_predictor

    return load_local_predictor(replace(settings, device="cpu")).info()


def _actor_resources(options: RayBatchOptions, pending: int) -> tuple[int, float]:
    """(actors, GPUs per actor) for the connected cluster."""
    gpus = cluster_gpus()
    per_actor = options.gpus_per_actor
    if per_actor is None:
        per_actor = 1.0 if gpus > 0 else 0.0
    if options.actors is not None:
        actors = options.actors
    elif per_actor > 0:
        actors = max(1, int(gpus // per_actor))
    else:
        actors = max(1, int(cluster_cpus() // options.cpus_per_actor))
    return max(1, min(actors, pending)), per_actor


def predict_many_ray(
    ws: Workspace,
    study_ids: Iterable[int],
    *,
    actor: str,
    replace: bool = False,
    options: RayBatchOptions | None = None,
    on_study: Callable[[int, str], None] | None = None,
) -> Any:
    """Predict studies on Ray actors and store each answer as it arrives (see module docstring).

    The models are loaded here once on CPU to learn their name and version; studies already
    predicted by that version are skipped (unless ``replace``) before Ray is started or joined,
    so a run with nothing left to do costs no Ray start.

    Returns the :class:`db.predictions.BatchReport` of the run; ``on_study(study_id, outcome)``
    is told "predicted", "skipped" or "failed" for each study. A failure of the whole Ray run
    (e.g. the models cannot be loaded on a worker, an actor died) ends the batch with
    ``stopped`` saying why; what was stored before stays.

    Raises:
        ClusterError: Ray is missing or the cluster cannot be reached.
        ModelLoadError: the models cannot be loaded here.
        InputError: an option out of range.
    """
    from db.predictions import BatchReport, _study_uids, series_to_predict

    options = options or RayBatchOptions()
    options.check()
    ids = [int(i) for i in study_ids]
    report = BatchReport()
    if not ids:
        return report
    ray = require_ray()
    uids = _study_uids(ws, ids)
    settings = worker_settings(ws.settings)
    info = _model_info(settings)
    pending: dict[int, Any] = {}
    for study_id in ids:
        name = uids.get(study_id, f"id {study_id}")
        try:
            series = series_to_predict(ws, study_id, info, replace=replace)
        except SpineError as exc:
            _tell(report, on_study, study_id, "failed", f"study {name}: {exc}")
            continue
        if series is None:
            _tell(report, on_study, study_id, "skipped")
        else:
            pending[study_id] = series
    if not pending:
        return report
    answered: set[int] = set()
    with ray_connection(options.address, num_cpus=options.local_cpus) as cluster:
        log.info("batch prediction of %d studies on %s", len(pending), cluster)
        try:
            for study_id, outcome, problem in _run(ray, ws, settings, pending, info, options,
                                                   actor=actor, replace=replace, uids=uids,
                                                   backend=f"ray {options.address or 'local'}"):
                answered.add(study_id)
                _tell(report, on_study, study_id, outcome, problem)
        except ClusterError as exc:
            report.stopped = str(exc)
    if len(answered) < len(pending) and not report.stopped:
        report.stopped = (f"the Ray run ended without an answer for {len(pending) - len(answered)} "
                          "studies; run again to resume")
    return report


def _run(ray: Any, ws: Workspace, settings: Settings, pending: dict[int, Any], info: ModelInfo,
         options: RayBatchOptions, *, actor: str, replace: bool, uids: dict[int, str],
         backend: str) -> Iterator[tuple[int, str, str]]:
    """Run the Ray Data pipeline; yield (study id, outcome, problem) as answers are stored."""
    from db.predictions import store_prediction
    from spine_core.inference import wire

    actors, gpus_per_actor = _actor_resources(options, len(pending))
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    rows = [{"study_id": sid, "series": series_reference(series)} for sid, series in pending.items()]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        StudyPredictor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"settings": settings},
        num_cpus=options.cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    answers = iter(dataset.iter_rows())
    while True:
        try:
            row = next(answers)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - the whole run failed (e.g. an actor died)
            raise ClusterError(f"the Ray run failed: {_cause(exc)}; studies stored so far are kept, "
                               "run again to resume") from exc
        study_id = int(row["study_id"])
        series = pending[study_id]
        name = uids.get(study_id, f"id {study_id}")
        if row["error"]:
            yield study_id, "failed", f"study {name}: {row['error']}"
            continue
        try:
            result = wire.decode_prediction(bytes(row["payload"]), expect_shape=tuple(series.shape),
                                            expect_affine=series.affine)
            if (result.model.name, result.model.version) != (info.name, info.version):
                raise PredictionError(
                    f"a Ray worker ran {result.model.name} {result.model.version} where "
                    f"{info.name} {info.version} was expected; give every node the same models "
                    "(SPINE_MODELS_DIR); nothing was stored"
                )
            stored = store_prediction(
                ws, study_id, series.series_uid, np.asarray(series.affine, dtype=np.float64),
                _shape3(series.shape), result, info, actor=actor, replace=replace,
                backend=f"{backend} ({result.device})", load_s=float(row["load_s"]),
            )
        except SpineError as exc:
            yield study_id, "failed", f"study {name}: {exc}"
            continue
        yield study_id, "skipped" if stored is None else "predicted", ""


def _tell(report: Any, on_study: Callable[[int, str], None] | None, study_id: int, outcome: str,
          problem: str = "") -> None:
    if outcome == "failed":
        report.problems.append(problem)
    elif outcome == "skipped":
        report.skipped += 1
    else:
        report.predicted += 1
    if on_study is not None:
        on_study(study_id, outcome)


def _cause(exc: BaseException) -> str:
    """The innermost message of a Ray error (RayTaskError wraps the worker's exception)."""
    cause = getattr(exc, "cause", None) or exc.__cause__
    inner = cause if isinstance(cause, BaseException) else exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[-1] if text else ''}"


def _shape3(shape: Any) -> tuple[int, int, int]:
    """A stored series shape as the (slices, rows, columns) triple."""
    a0, a1, a2 = (int(s) for s in shape)
    return a0, a1, a2
