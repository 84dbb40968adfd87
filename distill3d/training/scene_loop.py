"""The one optimisation loop of per-scene methods (``distill3d fit``, ``distill3d text-to-3d``, ...).

A method hands the loop a ``SceneJob``: the modules and optimiser to checkpoint, its step
function ``step(i, timer) -> (loss, stats)`` and the extra state a resumed run needs (random
generators, a fixed noise). The loop does the rest, the same way for every method:

- resume: modules, optimiser, extra state, step count and elapsed time from the checkpoint;
- a progress bar with the loss and the time left;
- backward, the optimiser step and the job's ``after_step`` (densification, say);
- an atomic checkpoint every ``checkpoint_every`` steps and at the end (``RunDir`` keeps the
  one before, so a damaged file costs one interval);
- a NaN guard: a loss that is not finite stops the run before the optimiser step, and
  parameters that are not finite are never checkpointed, so the last checkpoint is good
  (``NonFiniteLoss`` says which step and what to do);
- ``finish_run`` writes summary.json and exports the asset (an export that fails is a warning:
  the run itself is kept);
- watchers: ``watch_loops(fn)`` calls ``fn(LoopTick)`` after every step of the loops run inside
  it (the live viewer, ``distill3d fit --viewer``); with no watcher a step pays one list check.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill3d.errors import NonFiniteLoss, UserError
from distill3d.training.run_dir import RunDir
from distill3d.training.step_timer import StepTimer

StepFn = Callable[[int, StepTimer], tuple[Tensor, dict[str, float]]]
"""step(i, timer) -> (scalar loss, stats of the step); ``timer.lap(name)`` after each phase."""


@dataclass
class LoopConfig:
    """How the shared optimisation loop checkpoints and measures a run."""

    checkpoint_every: int = 500  # steps between atomic checkpoints (the last step is always saved)
    profile: bool = False        # synchronise each step to split its time into phases (summary.json)

    def __post_init__(self) -> None:
        if self.checkpoint_every <= 0:
            raise UserError("--checkpoint-every must be positive")


@dataclass
class SceneJob:
    """What a method hands to ``run_loop``."""

    modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    step: StepFn
    state_tensors: Callable[[], dict[str, Tensor]] = dict  # extra state to checkpoint (generators, noise)
    load_state_tensors: Callable[[dict[str, Tensor]], None] = lambda tensors: None
    # after_step(steps done) after each optimiser step, e.g. densification; returns stats to report
    after_step: Callable[[int], dict[str, float]] | None = None


@dataclass
class LoopResult:
    """Where the loop ended."""

    step: int
    seconds: float
    loss: float | None
    stats: dict[str, float] = field(default_factory=dict)
    seconds_per_phase: dict[str, float] = field(default_factory=dict)  # with ``profile``


@dataclass
class LoopTick:
    """What a watcher of the loop sees after a step: the run, how far it is and its modules (live, not
    copies: a watcher that keeps them beyond the call must copy them)."""

    run: RunDir
    step: int
    steps: int
    loss: float
    seconds: float
    modules: dict[str, nn.Module]


_watchers: list[Callable[[LoopTick], None]] = []


@contextmanager
def watch_loops(watcher: Callable[[LoopTick], None]) -> Iterator[None]:
    """Call ``watcher(tick)`` after every step of every ``run_loop`` inside the block (on the loop's
    thread, so it must return quickly: hand the work to a thread of its own)."""
    _watchers.append(watcher)
    try:
        yield
    finally:
        _watchers.remove(watcher)


def _parameters_finite(modules: dict[str, nn.Module]) -> bool:
    return all(bool(torch.isfinite(p).all()) for m in modules.values() for p in m.parameters())


def run_loop(run: RunDir, job: SceneJob, *, steps: int, config: LoopConfig, resuming: bool,
             device: torch.device, desc: str, progress: bool = True) -> LoopResult:
    """Optimise ``job`` for ``steps`` steps in ``run`` (continuing its checkpoint when ``resuming``)."""
    step, elapsed, loss_value, saved_step = 0, 0.0, None, 0
    if resuming:
        step, extra, tensors = run.load_checkpoint(job.modules, {"adam": job.optimizer}, device=device)
        elapsed, loss_value, saved_step = float(extra.get("seconds", 0.0)), extra.get("loss"), step
        job.load_state_tensors(tensors)
    bar = tqdm(total=steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True)
    start = time.perf_counter() - elapsed
    stats: dict[str, float] = {}
    timer = StepTimer(device, config.profile)

    def stop(what: str) -> NonFiniteLoss:
        bar.close()
        kept = f"the checkpoint of step {saved_step} is kept" if saved_step else "no checkpoint was written"
        return NonFiniteLoss(f"{what} at step {step + 1}; stopped before saving, so {kept} in {run.path}. "
                             "A run resumes only with its own settings: start again in a new --out folder "
                             "with lower learning rates or another --seed")

    while step < steps:
        timer.start()
        loss, stats = job.step(step, timer)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise stop(f"the loss is {loss_value}")
        job.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        job.optimizer.step()
        timer.lap("backward")
        step += 1
        if job.after_step is not None:
            stats = {**stats, **job.after_step(step)}
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4g}")
        if _watchers:
            tick = LoopTick(run, step, steps, loss_value, time.perf_counter() - start, job.modules)
            for watcher in _watchers:
                watcher(tick)
        if step % config.checkpoint_every == 0 or step == steps:
            if not _parameters_finite(job.modules):
                step -= 1
                raise stop("the parameters are no longer finite")
            run.save_checkpoint(step, job.modules, {"adam": job.optimizer}, extra_tensors=job.state_tensors(),
                                extra={"seconds": time.perf_counter() - start, "loss": loss_value})
            saved_step = step
    bar.close()
    return LoopResult(step=step, seconds=time.perf_counter() - start, loss=loss_value, stats=stats,
                      seconds_per_phase=timer.means())


def finish_run(run: RunDir, summary: dict, export: Callable[[], dict[str, Path]]) -> dict:
    """Write summary.json, then the outputs of ``export`` (listed in the summary under ``outputs``).

    An export that fails with a ``UserError`` (a field with no surface yet, say) is recorded and
    printed as a warning: the run itself is kept.
    """
    run.write_summary(summary)
    try:
        summary["outputs"] = {k: str(v) for k, v in export().items()}
    except UserError as err:
        summary["outputs"] = {"error": str(err)}
        print(f"distill3d: warning: export failed: {err}", file=sys.stderr)
    run.write_summary(summary)
    return summary
