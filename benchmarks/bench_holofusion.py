"""HoloFusion speed: training steps per second (3D denoiser + renderer + super-resolution, Eq. 5 + Eq. 7) and
sampling seconds per object, at the default size (or ``--tiny`` for a CPU smoke test).

    python benchmarks/bench_holofusion.py --device cuda --out holofusion_h200.json
    python benchmarks/bench_holofusion.py --device cpu --tiny --steps 3 --count 2 --sample-steps 5

Training runs the task's own loss as the shared trainer does (AdamW, bf16 autocast on CUDA), from a world
render pool of ``--pool`` groups (pool filling and refreshes are timed apart). Sampling times
``sample_grids`` (``--sample-steps`` denoising steps, ``--count`` objects in batches of ``--batch-size``)
and ``write_sample`` of one object (turntable of 48 frames at 128 px, mesh at 64^3). With
``--distill-steps N``, the distillation of one sample (Sec. 3.3.2, ``distill_sample`` at the default
``DistillConfig``: bank of K = 5 per camera, patch remix) for N steps, bank and steps timed apart, so
that a full run's time is bank + steps x (seconds per step). No weights needed: the model is freshly
initialised (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch

from distill3d.export.scene import ExportConfig
from distill3d.export.video import render_frames, turntable_cameras
from distill3d.methods.holofusion.distill import DistillConfig, distill_sample
from distill3d.methods.holofusion.sample import (
    TURNTABLE_DISTANCE,
    sample_grids,
    write_sample,
)
from distill3d.methods.holofusion.train import (
    HoloFusionTask,
    HoloFusionTrainConfig,
    tiny_holofusion,
)
from distill3d.random_streams import Generators
from distill3d.scene.voxel_grid import VoxelRadianceField


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="the tiny test config (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--batch-size", type=int, default=None, help="groups per step (default: the config's)")
    parser.add_argument("--pool", type=int, default=128, help="groups in the render pool")
    parser.add_argument("--count", type=int, default=8, help="objects sampled")
    parser.add_argument("--sample-steps", type=int, default=100)
    parser.add_argument("--distill-steps", type=int, default=0, help="time the distillation of one sample")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    device = torch.device(args.device)

    config = tiny_holofusion() if args.tiny else HoloFusionTrainConfig()
    config = replace(config, world=replace(config.world, size=args.pool, objects_per_block=min(64, args.pool)))
    if args.batch_size:
        config = replace(config, optim=replace(config.optim, batch_size=args.batch_size))
    task = HoloFusionTask(config, progress=False)
    torch.manual_seed(0)
    model = task.build_model().to(device)
    parts = {"denoiser": model.denoiser, "decoder": model.decoder, "super_resolution": model.super_resolution}
    params = {k: sum(p.numel() for p in m.parameters()) if m is not None else 0 for k, m in parts.items()}
    source = task.build_source(device)
    gens = Generators.seeded(0, 0, device)
    t0 = time.perf_counter()
    source.fill(gens.data, progress=False)
    _sync(device)
    fill_seconds = time.perf_counter() - t0
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, fused=device.type == "cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    refresh_before = source.render_seconds
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            t0, refresh_before = time.perf_counter(), source.render_seconds
        source.maybe_refresh(step, gens.data)
        with autocast:
            loss = task.loss(model, source, config.optim.batch_size, gens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    train_seconds = time.perf_counter() - t0
    refresh_seconds = source.render_seconds - refresh_before
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None

    model.eval()
    generator = torch.Generator(device=device).manual_seed(0)
    with autocast:
        sample_grids(model, 1, steps=2, generator=generator)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        grids = sample_grids(model, args.count, steps=args.sample_steps, generator=generator, batch_size=8)
        _sync(device)
    sample_seconds = time.perf_counter() - t0
    timed = args.steps
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": "tiny" if args.tiny else "default",
        "grid": [config.grid.feature_dim, config.grid.resolution], "batch_size": config.optim.batch_size,
        "views": [config.views.source_views, config.views.target_views],
        "parameters": params, "parameters_total": sum(params.values()),
        "mib_float32": sum(params.values()) * 4 / 2 ** 20, "mib_float16": sum(params.values()) * 2 / 2 ** 20,
        "pool_groups": args.pool, "pool_fill_seconds": fill_seconds,
        "train_steps_per_second": timed / train_seconds,
        "train_steps_per_second_without_refresh": timed / max(1e-9, train_seconds - refresh_seconds),
        "train_groups_per_second": timed * config.optim.batch_size / train_seconds,
        "train_peak_memory_gib": peak, "last_loss": loss.item(),
        "sampling_steps": args.sample_steps, "sampling_seconds_per_object": sample_seconds / args.count,
    }
    frames, res = (4, 32) if args.tiny else (48, 128)
    cams = turntable_cameras(frames, resolution=res, distance=TURNTABLE_DISTANCE)
    _sync(device)
    t0 = time.perf_counter()
    render_frames(lambda c: model.render(grids[:1], c.to(device)), cams)
    result["turntable_render_seconds"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:  # mp4 needs imageio-ffmpeg: a machine without it says so
        t0 = time.perf_counter()
        try:
            write_sample(Path(tmp) / "s", grids[0], model, turntable_frames=frames, turntable_resolution=res,
                         mesh_resolution=16 if args.tiny else 64, mesh_threshold=None)
            result["write_sample_seconds"] = time.perf_counter() - t0
        except Exception as error:  # noqa: BLE001 - a benchmark reports what it could not time
            result["write_sample_error"] = f"{type(error).__name__}: {str(error)[:200]}"
    if args.distill_steps:
        result["distillation"] = time_distillation(model, grids[0], args.distill_steps, args.tiny, device)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def time_distillation(model, grid, steps: int, tiny: bool, device: torch.device) -> dict:
    """Seconds of the bank and of ``steps`` patch-remix steps of one sample's distillation (wall: with the
    mesh export)."""
    config = DistillConfig(steps=steps, device=str(device), export=ExportConfig(turntable_frames=0, mesh_resolution=64))
    if tiny:
        config = replace(config, num_cameras=4, low_resolution=8, num_samples=8, sampling_steps=2)
    coarse = VoxelRadianceField.from_features(grid.float(), model.decoder.float())
    with tempfile.TemporaryDirectory() as tmp:
        _sync(device)
        t0 = time.perf_counter()
        distill_sample(coarse, model.super_resolution.float(), model.sr_schedule, config, Path(tmp) / "d",
                       progress=False)
        _sync(device)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "d" / "summary.json").read_text())
    per_step = summary["seconds"] / steps  # the loop's seconds (the bank is drawn before it)
    return {"steps": steps, "wall_seconds": wall, "bank_seconds": summary["bank_seconds"],
            "seconds_per_step": per_step, "default_steps": DistillConfig().steps,
            "default_run_seconds_estimate": summary["bank_seconds"] + per_step * DistillConfig().steps}


if __name__ == "__main__":
    main()
