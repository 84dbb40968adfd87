"""The one network trainer: any ``TrainingTask`` (a model, a batch source, a loss), resumable,
time-boxed, on one GPU or many.

A run is a folder (``distill3d.training.run_dir.RunDir``)::

    config.json             the resolved training config (also what loaders read)
    checkpoint.safetensors  model, EMA, optimiser, step (atomic; written by rank 0)
    pool-rank<r>.safetensors  that process's batch source (e.g. render pool) and random generators
    model.safetensors       EMA weights for inference (float16 for the diffusion models)
    log.jsonl               one line per ``log_every`` steps: step, loss, lr, images/s, ...

The loop runs under ``accelerate`` (``accelerate launch`` spreads it over GPUs with no code
change; every process fills its own batch source from its own seed and the batch size is per
process), with bf16 autocast on CUDA and full precision on CPU, AdamW with linear warm-up
(and optionally a linear decay to zero at the end, ``distill3d.optim``), gradient clipping,
an EMA of the weights, and a time budget: with ``max_minutes`` it saves and returns before
the budget is spent, and ``resume`` continues exactly where it stopped (same data, same
random streams, so the next step is the one an uninterrupted run takes). A loss that is not
finite stops the run before it is saved (``NonFiniteLoss``), so the last checkpoint is good.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill3d.atomic_files import save_safetensors_atomic
from distill3d.errors import NonFiniteLoss, UserError
from distill3d.model_folder import (
    WEIGHTS_FILE,
    export_folder,
    load_weights,
    resolve_model_folder,
    save_weights,
)
from distill3d.optim import OptimConfig, lr_at
from distill3d.random_streams import Generators
from distill3d.training.ema import EMA
from distill3d.training.run_dir import RunDir

LOG_NAME = "log.jsonl"


@dataclass
class RunOptions:
    """How one invocation runs; not part of the run's identity (may change between resumes)."""

    out: Path
    method: str = "train"  # the command recorded in config.json
    resume: bool = False
    max_minutes: float | None = None
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    export_to: Path | None = None
    init_from: Path | None = None  # start from the weights of a model folder (fresh optimiser)
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    compile: bool = False
    progress: bool = True


class BatchSource(Protocol):
    """Where a task draws its batches from: a render pool, a data set, tensors in memory."""

    render_seconds: float  # seconds spent making data so far (rendering, loading)

    def fill(self, generator: torch.Generator, progress: bool = True) -> None:
        """Make the data of a fresh run."""

    def maybe_refresh(self, step: int, generator: torch.Generator) -> bool:
        """Called before each step: renew part of the data if this source does (True if it did)."""

    def state_tensors(self) -> dict[str, Tensor]:
        """What a resumed run needs to continue with the same data."""

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        ...


class TrainingTask(Protocol):
    """What a method supplies to ``run_training``."""

    config: Any  # a dataclass with ``kind: str``, ``steps: int`` and ``optim: OptimConfig``
    export_dtype: torch.dtype

    def build_model(self) -> nn.Module:
        """The network to train (on CPU, freshly initialised)."""

    def build_source(self, device: torch.device) -> BatchSource:
        """The (empty) batch source of one process."""

    def loss(self, model: nn.Module, source: Any, batch_size: int, generators: Generators) -> Tensor:
        """Scalar training loss of one batch drawn from ``source``."""


class StaticBatchSource:
    """The no-op part of ``BatchSource`` for data that never changes (in memory, or read once): nothing to
    fill, refresh or save with a checkpoint. Subclasses set ``render_seconds`` and define ``sample``."""

    render_seconds: float = 0.0

    def fill(self, generator: torch.Generator, progress: bool = True) -> None:
        pass

    def maybe_refresh(self, step: int, generator: torch.Generator) -> bool:
        return False

    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        pass


class TensorBatches(StaticBatchSource):
    """A ``BatchSource`` of fixed tensors in memory (all of the same length N): ``sample(b, generator)``
    draws b rows uniformly. For tasks whose data fits in memory and never changes."""

    def __init__(self, tensors: dict[str, Tensor], device: torch.device | str = "cpu"):
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"the tensors of a TensorBatches source must have one length, got {sorted(lengths)}")
        self.tensors = {k: v.to(device) for k, v in tensors.items()}
        self.render_seconds = 0.0

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def sample(self, batch: int, generator: torch.Generator) -> dict[str, Tensor]:
        index = torch.randint(len(self), (batch,), generator=generator)
        return {k: v[index.to(v.device)] for k, v in self.tensors.items()}


def make_accelerator(device: str = "auto"):
    """accelerate's Accelerator: bf16 autocast on CUDA, full precision on CPU."""
    from accelerate import Accelerator

    use_cpu = device == "cpu" or not torch.cuda.is_available()
    if device == "cuda" and use_cpu:
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return Accelerator(cpu=use_cpu, mixed_precision="no" if use_cpu else "bf16")


def _source_path(run: RunDir, rank: int) -> Path:
    return run.path / f"pool-rank{rank}.safetensors"


def _save_source(path: Path, step: int, source: BatchSource, generators: Generators) -> None:
    tensors = {f"pool.{k}": v.detach().contiguous().cpu() for k, v in source.state_tensors().items()}
    tensors.update({f"generator.{k}": v for k, v in generators.state_tensors().items()})
    save_safetensors_atomic(tensors, path, {"step": str(step)})


def _load_source(path: Path, step: int, source: BatchSource, generators: Generators) -> bool:
    """Restore a process's batch source and generators saved at ``step``; False when there is none."""
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        saved_step = int((f.metadata() or {}).get("step", -1))
    if saved_step != step:
        return False
    tensors = load_file(str(path))
    source.load_state_tensors({k[len("pool."):]: v for k, v in tensors.items() if k.startswith("pool.")})
    generators.load_state_tensors({k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")})
    return True


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_training(task: TrainingTask, options: RunOptions) -> dict:
    """Train ``task`` in ``options.out`` until ``config.steps`` or the time budget; returns a summary (and
    ``main_process``: whether this process reports, under a multi-process launcher)."""
    started = time.monotonic()
    cfg: OptimConfig = task.config.optim
    total_steps: int = task.config.steps
    accelerator = make_accelerator(options.device)
    device, rank = accelerator.device, accelerator.process_index
    run = RunDir(options.out)
    if accelerator.is_main_process:
        run.prepare(task.config, method=options.method, resume=options.resume)
    accelerator.wait_for_everyone()

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    raw_model = task.build_model()
    if options.init_from is not None:
        folder, _ = resolve_model_folder(options.init_from, task.config.kind)
        load_weights(raw_model, folder / WEIGHTS_FILE, allow_missing=True)
    ema = EMA(raw_model, cfg.ema_decay)
    fused = device.type == "cuda"
    raw_optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    model, optimizer = accelerator.prepare(raw_model, raw_optimizer)
    if options.compile:
        model = torch.compile(model)
    ema.module.to(device)
    generators = Generators.seeded(cfg.seed, rank, device)
    source = task.build_source(device)

    step = 0
    if options.resume and run.has_checkpoint():
        step, _, _ = run.load_checkpoint({"model": raw_model, "ema": ema.module}, {"optimizer": raw_optimizer},
                                         device=device)
        if not _load_source(_source_path(run, rank), step, source, generators):
            print(f"distill3d: no batch source saved at step {step} for process {rank}; making a new one")
            generators = Generators.seeded(cfg.seed + step, rank, device)
            source.fill(generators.data, progress=options.progress and accelerator.is_main_process)
    else:
        source.fill(generators.data, progress=options.progress and accelerator.is_main_process)
    first_step = step

    def check_finite(at_step: int) -> None:
        """Stop, before anything is saved, when a loss since the last check was not finite (on any process)."""
        bad = torch.logical_not(torch.isfinite(running_loss)).float()
        if accelerator.num_processes > 1:
            bad = accelerator.reduce(bad, reduction="max")
        if bad.item() > 0:
            bar.close()
            raise NonFiniteLoss(f"the loss was not finite by step {at_step}; stopped without saving, so "
                                f"{run.path} keeps its last good checkpoint and weights. A run resumes only with "
                                f"its own settings: start a new --out with a lower --lr and --init-from {run.path}")

    def save(at_step: int) -> float:
        check_finite(at_step)
        t0 = time.monotonic()
        _save_source(_source_path(run, rank), at_step, source, generators)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            run.save_checkpoint(at_step, {"model": raw_model, "ema": ema.module}, {"optimizer": raw_optimizer})
            save_weights(ema.module, run.path / WEIGHTS_FILE, task.export_dtype, {"step": str(at_step)})
        accelerator.wait_for_everyone()
        return time.monotonic() - t0

    budget = None if options.max_minutes is None else 60.0 * options.max_minutes
    reserve = 30.0  # seconds kept for the final save until one has been timed
    last_save = time.monotonic()
    running_loss = torch.zeros((), device=device)
    window_steps, window_start, window_render = 0, time.monotonic(), source.render_seconds
    step_seconds = 0.0
    bar = tqdm(total=total_steps, initial=step, desc="training", disable=not (options.progress and accelerator.is_main_process))
    model.train()
    while step < total_steps:
        now = time.monotonic()
        flags = [float(budget is not None and now - started + step_seconds + reserve > budget),
                 float(now - last_save > 60.0 * options.checkpoint_minutes)]
        if accelerator.num_processes > 1:  # every process must stop / save at the same step
            flags = accelerator.reduce(torch.tensor(flags, device=device), reduction="max").tolist()
        if flags[0] > 0:
            break
        if flags[1] > 0:
            reserve = max(10.0, 3.0 * save(step))
            last_save = time.monotonic()
        t0 = time.monotonic()
        source.maybe_refresh(step, generators.data)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step, total_steps)
        loss = task.loss(model, source, cfg.batch_size, generators)
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.update(raw_model, step)
        step += 1
        running_loss += loss.detach().float()
        window_steps += 1
        step_seconds = 0.9 * step_seconds + 0.1 * (time.monotonic() - t0) if step > first_step + 1 else time.monotonic() - t0
        if step % options.log_every == 0 or step == total_steps:
            check_finite(step)
            mean_loss = running_loss.item() / window_steps
            seconds = time.monotonic() - window_start
            record = {"step": step, "loss": mean_loss, "lr": lr_at(cfg, step - 1, total_steps),
                      "images_per_second": window_steps * cfg.batch_size * accelerator.num_processes / seconds,
                      "seconds": seconds, "render_seconds": source.render_seconds - window_render,
                      "elapsed_minutes": (time.monotonic() - started) / 60.0}
            if accelerator.is_main_process:
                _append_log(run.path / LOG_NAME, record)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            running_loss.zero_()
            window_steps, window_start, window_render = 0, time.monotonic(), source.render_seconds
        bar.update(1)
    bar.close()
    save(step)
    finished = step >= total_steps
    if options.export_to is not None and accelerator.is_main_process:
        export_folder(run.path, Path(options.export_to))
    summary = {"step": step, "steps": total_steps, "finished": finished, "steps_this_run": step - first_step,
               "minutes": (time.monotonic() - started) / 60.0, "render_seconds": source.render_seconds,
               "out": str(run.path), "exported_to": str(options.export_to) if options.export_to else None}
    if accelerator.is_main_process:
        run.write_summary(summary)
    return {**summary, "main_process": accelerator.is_main_process}

