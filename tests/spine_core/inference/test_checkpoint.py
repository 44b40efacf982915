"""Resumable training: each of the three training loops, interrupted and started again, ends where
an uninterrupted run ends; a killed `spine train` run goes on from its checkpoint; a run of other
settings or with --fresh starts from the beginning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from spine_core.inference.checkpoint import TrainingCheckpoint, fingerprint
from spine_core.inference.train.loop import train_phase
from spine_core.inference.wholespine.train import train_timed
from spine_core.inference.xray.loop import FilmSet, unet_loss
from spine_core.inference.xray.loop import train_phase as xray_phase

REPO = Path(__file__).resolve().parents[3]


class Interrupted(Exception):
    """Stands for the process dying at a step."""


def _net() -> nn.Module:
    torch.manual_seed(0)  # dropout draws from torch's generator: the checkpoint must restore it
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.3),
                         nn.Conv2d(4, 1, 3, padding=1))


def _draw(rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(rng.normal(size=(2, 1, 8, 8)).astype(np.float32))
    return x + 0.1 * torch.randn_like(x), x.flip(-1)


def _mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).mean()


def _stop_at(step: int) -> Callable[[str], None]:
    def log(message: str) -> None:
        if f"it {step}/" in message:
            raise Interrupted(message)
    return log


def _same(a: nn.Module, b: nn.Module, exact: bool = True) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        if exact:
            assert torch.equal(x, y), name
        else:
            torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6, msg=name)


def test_an_interrupted_phase_resumed_ends_exactly_where_an_uninterrupted_one_ends(
        tmp_path: Path) -> None:
    whole = _net()
    ref = train_phase(whole, 12, _draw, _mse, name="seg", log_every=1, lr=1e-2, seed=4)

    messages: list[str] = []
    ckpt = TrainingCheckpoint.open(tmp_path, "ct", {"run": 1}, every_s=0.0, log=messages.append)
    first = _net()
    with pytest.raises(Interrupted):
        train_phase(first, 12, _draw, _mse, name="seg", log_every=1, lr=1e-2, seed=4,
                    log=_stop_at(7), checkpoint=ckpt)
    # a new process: a fresh network, the checkpoint read again from disk
    ckpt = TrainingCheckpoint.open(tmp_path, "ct", {"run": 1}, every_s=0.0, log=messages.append)
    resumed = _net()
    out = train_phase(resumed, 12, _draw, _mse, name="seg", log_every=1, lr=1e-2, seed=4,
                      log=messages.append, checkpoint=ckpt)
    _same(whole, resumed)
    assert out.iterations == 12 and out.losses == ref.losses
    assert any("seg: resuming at iteration 7 from the checkpoint" in m for m in messages), messages
    assert any("resuming the run begun" in m for m in messages)

    # the phase ended: a third start keeps it as it is, training nothing
    again = _net()
    kept = train_phase(again, 12, _draw, _mse, name="seg", log_every=1, lr=1e-2, seed=4,
                       log=messages.append, checkpoint=ckpt)
    _same(whole, again)
    assert kept.iterations == 12 and any("done in an earlier run (12 iterations)" in m for m in messages)


def test_the_radiograph_and_whole_spine_loops_resume_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    films = FilmSet(images=torch.from_numpy(rng.random((6, 1, 16, 16), dtype=np.float32)),
                    masks=torch.from_numpy((rng.random((6, 1, 16, 16)) > 0.5).astype(np.float32)),
                    heat=torch.zeros(6, 3, 16, 16), size=torch.zeros(6, 2, 16, 16),
                    size_mask=torch.zeros(6, 1, 16, 16))

    def loss(y: torch.Tensor, b: dict[str, torch.Tensor]) -> torch.Tensor:
        return unet_loss(y, b["masks"])

    def run(ckpt: TrainingCheckpoint | None, stop: int | None) -> nn.Module:
        net = _net()

        def log(message: str) -> None:
            if stop is not None and f"iteration {stop}/" in message:
                raise Interrupted(message)

        # the learning rate decays by time too: a budget of years keeps it to the iterations
        xray_phase(net, films, loss, 300, 2, 1e-2, 3, 1e9, "U-Net", log, keys=("images", "masks"),
                   checkpoint=ckpt)
        return net

    whole = run(None, None)
    with pytest.raises(Interrupted):
        run(TrainingCheckpoint.open(tmp_path / "x", "xray", {"r": 1}, every_s=0.0), 200)
    resumed = run(TrainingCheckpoint.open(tmp_path / "x", "xray", {"r": 1}, every_s=0.0), None)
    _same(whole, resumed, exact=False)

    def timed(ckpt: TrainingCheckpoint | None, stop: int | None) -> nn.Module:
        net = _net()

        def log(message: str) -> None:
            if stop is not None and message.startswith(f"coarse it {stop} "):
                raise Interrupted(message)

        train_timed(net, _draw, _mse, budget_s=1e9, max_iterations=120, lr=1e-2, seed=2,
                    name="coarse", log=log, checkpoint=ckpt)
        return net

    whole = timed(None, None)
    with pytest.raises(Interrupted):
        timed(TrainingCheckpoint.open(tmp_path / "w", "whole", {"r": 1}, every_s=0.0), 101)
    _same(whole, timed(TrainingCheckpoint.open(tmp_path / "w", "whole", {"r": 1}, every_s=0.0), None),
          exact=False)


def test_other_settings_or_fresh_start_from_the_beginning(tmp_path: Path) -> None:
    messages: list[str] = []
    ckpt = TrainingCheckpoint.open(tmp_path, "ct", {"seed": 1, "threads": 2}, every_s=0.0)
    net = _net()
    with pytest.raises(Interrupted):
        train_phase(net, 10, _draw, _mse, name="seg", log_every=1, lr=1e-2, seed=4,
                    log=_stop_at(5), checkpoint=ckpt)
    assert ckpt.path("seg").is_file()

    # more threads or a longer budget: the same run, it resumes
    same = TrainingCheckpoint.open(tmp_path, "ct", {"seed": 1, "threads": 8, "budget_minutes": 40},
                                   log=messages.append)
    assert same.path("seg").is_file() and "resuming" in messages[-1]
    # another seed: another run, its checkpoint is discarded (and said so)
    other = TrainingCheckpoint.open(tmp_path, "ct", {"seed": 2}, log=messages.append)
    assert not other.path("seg").exists()
    assert "discarded (it was a run of other options)" in messages[-1]
    assert fingerprint({"seed": 2}) == json.loads((other.folder / "run.json").read_text())["fingerprint"]
    # --fresh: discarded although the settings match
    net = _net()
    with pytest.raises(Interrupted):
        train_phase(net, 10, _draw, _mse, name="seg", log_every=1, lr=1e-2, seed=4,
                    log=_stop_at(5), checkpoint=TrainingCheckpoint.open(tmp_path, "ct", {"seed": 2},
                                                                        every_s=0.0))
    fresh = TrainingCheckpoint.open(tmp_path, "ct", {"seed": 2}, fresh=True, log=messages.append)
    assert not fresh.path("seg").exists() and "(--fresh was given)" in messages[-1]
    fresh.finish()
    assert not (tmp_path / "checkpoint").exists()


_KILLED_RUN = """
import sys
sys.path.insert(0, {tests!r})
from spine_core.inference.checkpoint import save_on_sigterm
from spine_core.inference.train import train
from tests.spine_core.inference.test_train import _tiny_settings
save_on_sigterm()  # as spine train does
train({out!r}, _tiny_settings(), log=lambda m: print(m, flush=True), checkpoint_every_s={every})
"""


def _start_tiny_run(out: Path, every_s: float) -> tuple[subprocess.Popen[str], list[str]]:
    """The tiny two-stage run in a process of its own, read until its segmentation logs
    iteration 26."""
    code = _KILLED_RUN.format(tests=str(REPO), out=str(out), every=every_s)
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[str] = []
    assert child.stdout is not None
    deadline = time.monotonic() + 240
    for line in child.stdout:
        seen.append(line.rstrip())
        if line.startswith("seg it 26/") or time.monotonic() > deadline:
            break
    assert any(line.startswith("seg it 26/") for line in seen), seen[-5:]
    return child, seen


@pytest.mark.slow
def test_a_stopped_training_saves_its_phase_at_the_end_of_the_step_and_exits(tmp_path: Path) -> None:
    """SIGTERM (what a worker sends when the training is stopped) in the segmentation phase,
    whose periodic checkpoint is an hour away: the step ends, is saved, and the process exits."""
    out = tmp_path / "weights"
    child, _ = _start_tiny_run(out, every_s=3600.0)
    child.send_signal(signal.SIGTERM)
    rest, _ = child.communicate(timeout=120)
    assert child.returncode == 143, rest[-2000:]
    assert "seg: stopped after iteration" in rest and "saved in the checkpoint" in rest, rest[-2000:]
    saved = torch.load(out / "checkpoint" / "ct" / "seg.pt", weights_only=True)
    assert 26 <= saved["step"] < 80 and not saved["done"]
    assert f"stopped after iteration {saved['step']}," in rest


@pytest.mark.slow
def test_a_killed_training_run_goes_on_from_its_checkpoint(tmp_path: Path) -> None:
    """The tiny two-stage run in a process of its own, killed (SIGKILL) in its segmentation
    phase, then started again: it resumes after the iteration it had saved, and finishes."""
    from spine_core.inference.train import train
    from tests.spine_core.inference.test_train import _tiny_settings

    out = tmp_path / "weights"
    child, _ = _start_tiny_run(out, every_s=0.0)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    saved = torch.load(out / "checkpoint" / "ct" / "seg.pt", weights_only=True)
    assert 25 <= saved["step"] < 80 and not saved["done"]

    messages: list[str] = []
    report = train(out, _tiny_settings(), log=messages.append)
    resumed = [m for m in messages if "seg: resuming at iteration" in m]
    assert resumed and f"iteration {saved['step'] + 1} " in resumed[0], messages[:12]
    assert not any(m.startswith("seg it 1/") for m in messages)  # not from the beginning
    training = report.card["stages"]["segmentation"]["training"]
    assert training["iterations"] == 80
    assert (out / "segmentation.pt").is_file() and (out / "fracture.pt").is_file()
    assert not (out / "checkpoint").exists()  # the finished run leaves none behind
