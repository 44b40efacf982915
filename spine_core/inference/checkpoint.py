"""Resumable training: the state of each training phase, saved as it trains, so that a run stopped
by a crash, a killed worker or a reboot goes on where it stopped when it is started again with the
same options.

A run's checkpoints live in ``<out>/checkpoint/<kind>/`` (``kind``: ``ct``, ``xray``, ``whole``):

* ``run.json``: the run's fingerprint (a hash of the settings that shape its result) and when it
  began. A run of other settings does not resume from it: the folder is emptied and it starts
  from the beginning, saying so.
* ``<phase>.pt``: one file per phase (``seg``, ``fracture``, ``U-Net`` ...): the network and the
  optimiser, the step reached, both random generators (NumPy's for the batches, torch's for
  dropout and noise), the time already trained and the phase's record. Written every
  ``every_s`` seconds and when the phase ends, each time to a temporary file renamed over the
  last, so a kill during a write leaves the previous checkpoint whole.

A resumed phase continues with the same batches, learning rate and random draws it would have had;
its time budget counts the time trained before. When the run has written its weights and card, its
checkpoint folder is removed: the next ``spine train`` into that folder starts afresh.

``spine train`` calls :func:`save_on_sigterm`: a SIGTERM (a worker stopping the training, from the
Models page or its own shutdown) lets the phase under way finish its step, save it and exit, so a
stopped training resumes where it was stopped; outside a phase the process exits at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

Log = Callable[[str], None]

#: Settings left out of a run's fingerprint: they change how fast it trains, not what it learns
#: (a run resumed with more threads or a longer budget is still the same run).
UNSHAPING = frozenset({"threads", "budget_minutes", "device", "precision"})
#: Seconds between two checkpoints of a phase (and one at its end).
EVERY_S = 60.0


class _StopRequest:
    """Whether a SIGTERM asked the training to stop, and how many phases are training now."""

    asked: bool = False
    phases: int = 0


_stop = _StopRequest()


def save_on_sigterm() -> None:
    """From here on (main thread), SIGTERM makes the phase under way save itself at the end of its
    step and the process exit with status 143; outside a phase the process exits at once."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, _frame: object) -> None:
    if _stop.phases > 0:
        _stop.asked = True
    else:
        raise SystemExit(128 + signum)


@dataclass
class PhaseState:
    """Where a phase stood at its last checkpoint (after :meth:`TrainingCheckpoint.restore` put its
    network, optimiser and generators back)."""

    step: int  # iterations done
    seconds: float  # time trained so far, over every process that trained it
    record: dict[str, Any]  # the loop's own record (losses ...), as the loop saved it
    done: bool  # the phase had ended: the network is final, nothing to train


def fingerprint(settings: Any) -> str:
    """SHA-256 of the settings that shape a run's result (a dataclass or a mapping), as JSON."""
    is_instance = dataclasses.is_dataclass(settings) and not isinstance(settings, type)
    data = dataclasses.asdict(settings) if is_instance else dict(settings)
    shaping = {k: v for k, v in data.items() if k not in UNSHAPING}
    text = json.dumps(shaping, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class TrainingCheckpoint:
    """The checkpoint folder of one training run (module docstring)."""

    def __init__(self, folder: Path, every_s: float = EVERY_S, log: Log | None = None) -> None:
        self.folder = folder
        self.every_s = every_s
        self._say = log or (lambda _m: None)
        self._last_save: dict[str, float] = {}

    @classmethod
    def open(cls, out_dir: str | Path, kind: str, settings: Any, *, fresh: bool = False,
             every_s: float = EVERY_S, log: Log | None = None) -> TrainingCheckpoint:
        """The checkpoint of the run of ``settings`` writing to ``out_dir``: kept when it is this
        run's (same fingerprint) and ``fresh`` is not asked, else emptied and begun anew."""
        ckpt = cls(Path(out_dir) / "checkpoint" / kind, every_s, log)
        key = fingerprint(settings)
        meta = ckpt.folder / "run.json"
        previous = _read_json(meta)
        if previous is not None and previous.get("fingerprint") == key and not fresh:
            phases = sorted(p.stem for p in ckpt.folder.glob("*.pt"))
            if phases:
                ckpt._say(f"checkpoint: resuming the run begun {previous.get('began', '?')} "
                          f"({', '.join(phases)} saved in {ckpt.folder})")
            return ckpt
        if previous is not None or ckpt.folder.exists():
            why = "--fresh was given" if fresh else "it was a run of other options"
            ckpt._say(f"checkpoint: starting from the beginning; the checkpoint in {ckpt.folder} "
                      f"is discarded ({why})")
            shutil.rmtree(ckpt.folder, ignore_errors=True)
        ckpt.folder.mkdir(parents=True, exist_ok=True)
        began = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        _write_atomic(meta, (json.dumps({"fingerprint": key, "began": began}) + "\n").encode("utf-8"))
        return ckpt

    def path(self, phase: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in phase)
        return self.folder / f"{safe}.pt"

    def resume(self, phase: str, net: nn.Module, opt: torch.optim.Optimizer | None,
               rng: np.random.Generator) -> PhaseState | None:
        """Put ``phase``'s saved network, optimiser and generators back; None when nothing of it
        was saved (the phase starts from its first step). Unless it had ended, the phase trains
        from here: a SIGTERM now waits for the end of its step."""
        file = self.path(phase)
        if not file.is_file():
            self._begin(phase)
            return None
        state = torch.load(file, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        if opt is not None and state.get("opt") is not None:
            opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        out = PhaseState(int(state["step"]), float(state["seconds"]), dict(state["record"]),
                         bool(state["done"]))
        self._last_save[phase] = time.monotonic()
        if not out.done:
            self._begin(phase)
        self._say(f"{phase}: done in an earlier run ({out.step} iterations), kept from the checkpoint"
                  if out.done else
                  f"{phase}: resuming at iteration {out.step + 1} from the checkpoint "
                  f"({out.seconds:.0f} s trained before)")
        return out

    def _begin(self, phase: str) -> None:
        _stop.phases += 1
        self._last_save.setdefault(phase, time.monotonic())

    def due(self, phase: str) -> bool:
        """Whether ``phase`` is to be saved now: ``every_s`` has passed since its last save (or
        its start here), or a SIGTERM asked the training to stop."""
        last = self._last_save.setdefault(phase, time.monotonic())
        return _stop.asked or time.monotonic() - last >= self.every_s


    def save(self, phase: str, net: nn.Module, opt: torch.optim.Optimizer | None,
             rng: np.random.Generator, *, step: int, seconds: float, record: Mapping[str, Any],
             done: bool = False) -> None:
        """Write ``phase``'s state (atomically: a temporary file renamed over the last); then,
        when a SIGTERM asked the training to stop, exit with status 143."""
        import io

        state = {"net": net.state_dict(), "opt": opt.state_dict() if opt is not None else None,
                 "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "step": step, "seconds": seconds, "record": dict(record), "done": done}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _write_atomic(self.path(phase), buffer.getvalue())
        self._last_save[phase] = time.monotonic()
        if done:
            _stop.phases = max(0, _stop.phases - 1)
        if _stop.asked:
            if not done:
                self._say(f"{phase}: stopped after iteration {step}, saved in the checkpoint; "
                          "the same command goes on from there")
            raise SystemExit(128 + signal.SIGTERM)

    def finish(self) -> None:
        """Remove the run's checkpoints: its weights and card are written."""
        shutil.rmtree(self.folder, ignore_errors=True)
        parent = self.folder.parent
        if parent.name == "checkpoint" and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
