"""The training loop shared by the world teachers and the world classifier.

A run is a folder (``distill3d.run_dir.RunDir``)::

    config.json             the resolved training config (also what loaders read)
    checkpoint.safetensors  model, EMA, optimiser, step (atomic; written by rank 0)
    pool-rank<r>.safetensors  that process's render pool and random generators (atomic)
    model.safetensors       EMA weights for inference (float16 for the diffusion models)
    log.jsonl               one line per ``log_every`` steps: step, loss, lr, images/s, ...

The loop runs under ``accelerate`` (``accelerate launch`` spreads it over GPUs with no code
change; every process renders its own pool from its own seed and the batch size is per
process), with bf16 autocast on CUDA and full precision on CPU, AdamW with linear warm-up
(and optionally a linear decay to zero at the end), gradient clipping, an EMA of the weights,
and a time budget: with ``max_minutes`` it saves and returns before the budget is spent, and
``resume`` continues exactly where it stopped (same pool, same random streams, so the next
step is the one an uninterrupted run takes).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill3d.diffusion.model_folder import WEIGHTS_FILE, resolve_model_folder
from distill3d.diffusion.parameterization import v_from_x0_eps
from distill3d.diffusion.world_render_pool import RenderPool
from distill3d.errors import UserError
from distill3d.run_dir import CONFIG_NAME, RunDir, save_safetensors_atomic

WEIGHTS_NAME = WEIGHTS_FILE
LOG_NAME = "log.jsonl"


@dataclass
class OptimConfig:
    """Optimisation settings shared by the world trainers (the step count is the config's ``steps``)."""

    batch_size: int = 256  # per process
    lr: float = 2e-4
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    anneal_steps: int = 0  # linear decay of lr to 0 over the run's last anneal_steps steps (0: constant)


@dataclass
class RunOptions:
    """How one invocation runs; not part of the run's identity (may change between resumes)."""

    out: Path
    resume: bool = False
    max_minutes: float | None = None
    device: str = "auto"  # "auto" (CUDA when available), "cpu" or "cuda"
    export_to: Path | None = None
    init_from: Path | None = None  # start from the weights of a model folder (fresh optimiser)
    log_every: int = 50
    checkpoint_minutes: float = 5.0
    compile: bool = False
    progress: bool = True


@dataclass
class Generators:
    """Random streams of one process: data (CPU: objects, cameras, batch indices) and noise (device)."""

    data: torch.Generator
    noise: torch.Generator

    @staticmethod
    def seeded(seed: int, rank: int, device: torch.device) -> "Generators":
        data = torch.Generator().manual_seed(1_000_003 * seed + 2 * rank)
        noise = torch.Generator(device=device).manual_seed(1_000_003 * seed + 2 * rank + 1)
        return Generators(data, noise)

    def state_tensors(self) -> dict[str, Tensor]:
        return {"data": self.data.get_state(), "noise": self.noise.get_state()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.data.set_state(tensors["data"].cpu())
        self.noise.set_state(tensors["noise"].cpu())


class TrainingTask(Protocol):
    """What a trainer supplies to ``run_training``."""

    config: Any  # a dataclass with ``kind: str``, ``steps: int`` and ``optim: OptimConfig``
    export_dtype: torch.dtype

    def build_model(self) -> nn.Module:
        """The network to train (on CPU, freshly initialised)."""

    def build_pool(self, device: torch.device) -> RenderPool:
        """The (empty) render pool of one process."""

    def loss(self, model: nn.Module, pool: RenderPool, batch_size: int, generators: Generators) -> Tensor:
        """Scalar training loss of one batch drawn from ``pool``."""


class EMA:
    """Exponential moving average of a model's weights, with the usual warm-up of the decay."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)


def diffusion_loss(prediction: Tensor, x0: Tensor, eps: Tensor, abar: Tensor, prediction_type: str,
                   min_snr_gamma: float | None = None) -> Tensor:
    """Mean squared error of a network's prediction [B, ...] against its target, optionally Min-SNR weighted.

    The target is eps, v (``v_from_x0_eps``) or x0 by ``prediction_type``. With ``min_snr_gamma``
    each sample's loss is weighted so that it equals min(SNR, gamma) * |x0_hat - x0|^2
    (Min-SNR-gamma, Hang et al. 2023, Eq. 9, gamma = 5 there): for v that is
    min(SNR, gamma) / (SNR + 1), for eps min(SNR, gamma) / SNR. abar: [B]. For v the weight
    goes to 0 with the SNR, so the steps near pure noise are hardly trained: teachers trained so
    never learned the first sampling steps (benchmarks/RESULTS.md, session 13).
    """
    targets = {"epsilon": eps, "v_prediction": v_from_x0_eps(x0, eps, abar), "sample": x0}
    if prediction_type not in targets:
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    per_sample = (prediction.float() - targets[prediction_type].float()).square().flatten(1).mean(dim=1)
    if min_snr_gamma is None:
        return per_sample.mean()
    snr = abar.float() / (1.0 - abar.float()).clamp_min(1e-8)
    clipped = snr.clamp(max=min_snr_gamma)
    weight = {"epsilon": clipped / snr.clamp_min(1e-8), "v_prediction": clipped / (snr + 1.0),
              "sample": clipped}[prediction_type]
    return (weight * per_sample).mean()


def make_accelerator(device: str = "auto"):
    """accelerate's Accelerator: bf16 autocast on CUDA, full precision on CPU."""
    from accelerate import Accelerator

    use_cpu = device == "cpu" or not torch.cuda.is_available()
    if device == "cuda" and use_cpu:
        raise UserError("--device cuda was asked for but no CUDA device is available")
    return Accelerator(cpu=use_cpu, mixed_precision="no" if use_cpu else "bf16")


def lr_at(config: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warm-up to ``lr``, then constant (the EMA does the averaging); with
    ``anneal_steps`` a linear decay to 0 at ``total_steps`` over that many last steps."""
    lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
    if config.anneal_steps > 0:
        lr *= min(1.0, max(0.0, (total_steps - step) / config.anneal_steps))
    return lr


def save_weights(module: nn.Module, path: Path, dtype: torch.dtype, metadata: dict[str, str] | None = None) -> Path:
    """Write a module's state dict as safetensors (floating tensors in ``dtype``), atomically."""
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in module.state_dict().items()}
    return save_safetensors_atomic(tensors, path, metadata)


def load_weights(module: nn.Module, path: Path, *, allow_missing: bool = False) -> dict[str, str]:
    """Load safetensors weights into ``module`` (cast to its dtypes); returns the file's metadata.

    ``allow_missing``: tensors of ``module`` that the file lacks keep their initial values (for
    ``--init-from`` weights of a model that a new part has since been added to); a tensor in the
    file that ``module`` lacks, or one of another shape, is an error either way.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no weights file {path}")
    state = load_file(str(path))
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if (missing and not allow_missing) or unexpected or reshaped:
        raise UserError(f"{path} does not match the model of its config.json "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shape {reshaped[:3]})")
    if missing:
        print(f"distill3d: {len(missing)} tensors not in {path} keep their initial values "
              f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=not missing)
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def export_folder(run_dir: Path, target: Path) -> Path:
    """Copy a run's config.json and model.safetensors into ``target`` (each atomically)."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        tmp = target / (name + ".tmp")
        shutil.copyfile(Path(run_dir) / name, tmp)
        os.replace(tmp, target / name)
    return target


def _pool_path(run: RunDir, rank: int) -> Path:
    return run.path / f"pool-rank{rank}.safetensors"


def _save_pool(path: Path, step: int, pool: RenderPool, generators: Generators) -> None:
    tensors = {f"pool.{k}": v.detach().contiguous().cpu() for k, v in pool.state_tensors().items()}
    tensors.update({f"generator.{k}": v for k, v in generators.state_tensors().items()})
    save_safetensors_atomic(tensors, path, {"step": str(step)})


def _load_pool(path: Path, step: int, pool: RenderPool, generators: Generators) -> bool:
    """Restore a process's pool and generators saved at ``step``; False when there is none."""
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        saved_step = int((f.metadata() or {}).get("step", -1))
    if saved_step != step:
        return False
    tensors = load_file(str(path))
    pool.load_state_tensors({k[len("pool."):]: v for k, v in tensors.items() if k.startswith("pool.")})
    generators.load_state_tensors({k[len("generator."):]: v for k, v in tensors.items() if k.startswith("generator.")})
    return True


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def run_training(task: TrainingTask, options: RunOptions) -> dict:
    """Train ``task`` in ``options.out`` until ``config.steps`` or the time budget; returns a summary."""
    started = time.monotonic()
    cfg: OptimConfig = task.config.optim
    total_steps: int = task.config.steps
    accelerator = make_accelerator(options.device)
    device, rank = accelerator.device, accelerator.process_index
    run = RunDir(options.out)
    if accelerator.is_main_process:
        run.prepare(task.config, resume=options.resume)
    accelerator.wait_for_everyone()

    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convolutions
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)  # the same initial weights in every process
    raw_model = task.build_model()
    if options.init_from is not None:
        folder, _ = resolve_model_folder(options.init_from, task.config.kind)
        load_weights(raw_model, folder / WEIGHTS_NAME, allow_missing=True)
    ema = EMA(raw_model, cfg.ema_decay)
    fused = device.type == "cuda"
    raw_optimizer = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    model, optimizer = accelerator.prepare(raw_model, raw_optimizer)
    if options.compile:
        model = torch.compile(model)
    ema.module.to(device)
    generators = Generators.seeded(cfg.seed, rank, device)
    pool = task.build_pool(device)

    step = 0
    if options.resume and run.has_checkpoint():
        step, _, _ = run.load_checkpoint({"model": raw_model, "ema": ema.module}, {"optimizer": raw_optimizer},
                                         device=device)
        if not _load_pool(_pool_path(run, rank), step, pool, generators):
            print(f"distill3d: no render pool saved at step {step} for process {rank}; rendering a new one")
            generators = Generators.seeded(cfg.seed + step, rank, device)
            pool.fill(generators.data, progress=options.progress and accelerator.is_main_process)
    else:
        pool.fill(generators.data, progress=options.progress and accelerator.is_main_process)
    first_step = step

    def save(at_step: int) -> float:
        t0 = time.monotonic()
        _save_pool(_pool_path(run, rank), at_step, pool, generators)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            run.save_checkpoint(at_step, {"model": raw_model, "ema": ema.module}, {"optimizer": raw_optimizer})
            save_weights(ema.module, run.path / WEIGHTS_NAME, task.export_dtype, {"step": str(at_step)})
        accelerator.wait_for_everyone()
        return time.monotonic() - t0

    budget = None if options.max_minutes is None else 60.0 * options.max_minutes
    reserve = 30.0  # seconds kept for the final save until one has been timed
    last_save = time.monotonic()
    running_loss = torch.zeros((), device=device)
    window_steps, window_start, window_render = 0, time.monotonic(), pool.render_seconds
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
        pool.maybe_refresh(step, generators.data)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step, total_steps)
        loss = task.loss(model, pool, cfg.batch_size, generators)
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
            mean_loss = running_loss.item() / window_steps
            seconds = time.monotonic() - window_start
            record = {"step": step, "loss": mean_loss, "lr": lr_at(cfg, step - 1, total_steps),
                      "images_per_second": window_steps * cfg.batch_size * accelerator.num_processes / seconds,
                      "seconds": seconds, "render_seconds": pool.render_seconds - window_render,
                      "elapsed_minutes": (time.monotonic() - started) / 60.0}
            if accelerator.is_main_process:
                _append_log(run.path / LOG_NAME, record)
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            running_loss.zero_()
            window_steps, window_start, window_render = 0, time.monotonic(), pool.render_seconds
        bar.update(1)
    bar.close()
    save(step)
    finished = step >= total_steps
    if options.export_to is not None and accelerator.is_main_process:
        export_folder(run.path, Path(options.export_to))
    summary = {"step": step, "steps": total_steps, "finished": finished, "steps_this_run": step - first_step,
               "minutes": (time.monotonic() - started) / 60.0, "render_seconds": pool.render_seconds,
               "out": str(run.path), "exported_to": str(options.export_to) if options.export_to else None}
    if accelerator.is_main_process:
        run.write_summary(summary)
    return summary

