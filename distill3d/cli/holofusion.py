"""``distill3d holofusion train|sample|distill``: HoloFusion's 3D diffusion model (Sec. 3.2) with its jointly
trained 2D super-resolution model (Sec. 3.3.1), trained from posed views, sampled into grids, turntables and
meshes, and a sample distilled into a finer grid (Sec. 3.3.2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHIPPED_MODEL = "holofusion-world"
"""The shipped HoloFusion model of the world (distill3d/weights/holofusion-world)."""


def register(commands, help_text: str) -> None:
    p = commands.add_parser("holofusion", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="holofusion_command", metavar="STEP", required=True)

    t = sub.add_parser("train", help="train the 3D denoiser, the decoder and the super-resolution model",
                       usage="distill3d holofusion train --out RUN [--data DIR] [options]",
                       description="Train HoloFusion's voxel diffusion model from posed multi-view images: "
                                   "double denoising with a photometric loss through the volume renderer "
                                   "(Eq. 5-6), view conditioning from a random subset of 15 source views, and "
                                   "the 2D super-resolution diffusion model (Eq. 7), jointly. Without --data the "
                                   "views are reference renders of the world's training objects, made on the "
                                   "training device. Resumable (--resume), time-boxed (--max-minutes); EMA "
                                   "weights in RUN/model.safetensors; `accelerate launch -m distill3d holofusion "
                                   "train ...` runs it on several GPUs.")
    t.add_argument("--out", required=True, type=Path, help="run folder (new or empty; an existing run with --resume)")
    t.add_argument("--data", default=None, help="a multi-view data set folder (`distill3d world dataset multiview`, "
                                                "`distill3d data ...`) or a CO3D folder; default: world renders")
    t.add_argument("--resume", action="store_true", help="continue the run in --out with its own settings")
    t.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    t.add_argument("--batch-size", type=int, default=None, help="groups of views per step and process")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: HoloFusion's 5e-5)")
    t.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="any field of the training config, dots walk into nested settings, e.g. "
                        "--set grid.feature_dim=64 --set conditioning.empty_probability=0.5")
    t.add_argument("--max-minutes", type=float, default=None, help="save and stop before this many minutes")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--export-to", type=Path, default=None, help="also copy config.json + model.safetensors here")
    t.add_argument("--init-from", type=Path, default=None, help="start from the weights of this model folder")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--tiny", action="store_true", help="a tiny model on 8^3 grids, for CPU tests")
    t.set_defaults(run=_train)

    s = sub.add_parser("sample", help="sample grids and write each one's grid, turntable and mesh",
                       usage="distill3d holofusion sample [--model RUN_OR_MODEL] --count N --out DIR [options]",
                       description="Sample voxel grids from noise with the trained denoiser (unconditional, or "
                                   "conditioned on the posed views of --condition) and write, per sample, "
                                   "DIR/sample-NNN/: grid.safetensors, turntable.mp4/.gif, mesh.glb/.ply and "
                                   "summary.json; DIR/summary.json holds the seconds per object.")
    s.add_argument("--model", default=SHIPPED_MODEL,
                   help=f"a holofusion run folder, model folder or shipped name (default: {SHIPPED_MODEL})")
    s.add_argument("--count", type=int, default=4, help="samples to draw (default: 4)")
    s.add_argument("--out", required=True, type=Path, help="output folder")
    s.add_argument("--condition", default=None, help="posed source views: a multi-view sequence folder, a data set or a CO3D folder "
                                                     "(frames/*.png + cameras.json; of a data set, its first sequence)")
    s.add_argument("--steps", type=int, default=100, help="denoising steps (default: 100)")
    s.add_argument("--eta", type=float, default=1.0, help="1: ancestral sampling (default), 0: deterministic DDIM")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=8, help="grids denoised together")
    s.add_argument("--device", default="auto", help="auto: cuda when available, else cpu (default: auto)")
    s.add_argument("--turntable-frames", type=int, default=48, help="frames of each turntable; 0: none")
    s.add_argument("--turntable-resolution", type=int, default=128)
    s.add_argument("--mesh-resolution", type=int, default=64, help="marching-cubes grid size")
    s.add_argument("--mesh-threshold", type=float, default=None, help="density of the mesh surface (default: 10)")
    s.add_argument("--super-resolve", action="store_true",
                   help="also write turntable_sr.mp4: each frame rendered at S and super-resolved (HoloDiffusion*)")
    s.set_defaults(run=_sample)

    from distill3d.cli.holofusion_distill import add_distill_arguments
    from distill3d.cli.view import add_live_viewer_options

    d = sub.add_parser("distill", help="distil super-resolved views of one sample into a finer grid (Sec. 3.3.2)",
                       usage="distill3d holofusion distill [--model RUN_OR_MODEL] --sample DIR/sample-NNN --out RUN "
                             "[options]",
                       description="Upsample a sample's grid (trilinear, S' = 2S - 1 by default), draw a bank of "
                                   "K = 5 super-resolutions from the model's D_beta for each of 32 cameras on the "
                                   "equator, and fit the fine grid with the top-k patch-remix loss over 16x16 "
                                   "patches (Eq. 8), Adam at lr 2e-4. --loss mse (K = 1) and --loss sds are the "
                                   "paper's ablations. Resumable (--resume); writes the mesh, turntable and "
                                   "summary.json into RUN.")
    d.add_argument("--model", default=None,
                   help="the holofusion run or model folder that drew the sample (default: the model named in the "
                        f"sample's summary.json, else {SHIPPED_MODEL})")
    d.add_argument("--sample", required=True, type=Path,
                   help="a sample folder written by `holofusion sample` (or its grid.safetensors)")
    add_distill_arguments(d)
    add_live_viewer_options(d)
    d.set_defaults(run=_distill)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distill3d.cli.config_overrides import apply_overrides
    from distill3d.configs import config_from_dict
    from distill3d.errors import UserError
    from distill3d.methods.holofusion.train import (
        HoloFusionTask,
        HoloFusionTrainConfig,
        tiny_holofusion,
    )
    from distill3d.training.network_trainer import RunOptions, run_training
    from distill3d.training.run_dir import RunDir

    method = "holofusion train"
    run = RunDir(args.out)
    run.check(method=method, resume=args.resume)  # the folder, before any work
    if args.resume and run.config_path.exists():
        config = config_from_dict(HoloFusionTrainConfig, run.read_config())
        if args.steps is not None:  # a resume may extend the run
            config = replace(config, steps=args.steps)
    else:
        config = tiny_holofusion() if args.tiny else HoloFusionTrainConfig()
        if args.data:
            if not Path(args.data).is_dir():
                raise UserError(f"--data {args.data}: no such folder")
            config = replace(config, data=str(Path(args.data).resolve()))
        optim = config.optim
        for name in ("batch_size", "lr"):
            if getattr(args, name) is not None:
                optim = replace(optim, **{name: getattr(args, name)})
        config = replace(config, optim=optim, **({"steps": args.steps} if args.steps is not None else {}))
        try:
            config = apply_overrides(config, args.overrides)
        except ValueError as error:
            raise UserError(str(error)) from None
    if config.steps <= 0 or config.optim.batch_size <= 0:
        raise UserError("--steps and --batch-size must be positive")
    task = HoloFusionTask(config)
    options = RunOptions(out=args.out, method=method, resume=args.resume, max_minutes=args.max_minutes,
                         device=args.device, export_to=args.export_to, init_from=args.init_from,
                         log_every=args.log_every)
    summary = run_training(task, options)
    state = "finished" if summary["finished"] else "stopped (resume with --resume)"
    if summary["main_process"]:
        print(f"holofusion: step {summary['step']}/{summary['steps']} {state}; run folder {summary['out']}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    import time

    import torch

    from distill3d.atomic_files import write_json_atomic
    from distill3d.devices import pick_device
    from distill3d.errors import UserError
    from distill3d.methods.holofusion.sample import (
        load_holofusion,
        read_condition,
        sample_grids,
        write_sample,
    )

    if args.count <= 0 or args.batch_size <= 0:
        raise UserError("--count and --batch-size must be positive")
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"{args.out} is a file; give --out a folder")
    device = pick_device(args.device)
    model = load_holofusion(args.model, device)
    condition = read_condition(args.condition) if args.condition else None
    generator = torch.Generator(device=device).manual_seed(args.seed)
    started = time.monotonic()
    grids = sample_grids(model, args.count, steps=args.steps, eta=args.eta, condition=condition,
                         generator=generator, batch_size=args.batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    sampling_seconds = time.monotonic() - started
    samples = []
    for i, grid in enumerate(grids):
        extra = {"index": i, "seed": args.seed, "steps": args.steps, "eta": args.eta, "model": str(args.model),
                 "condition": args.condition}
        summary = write_sample(args.out / f"sample-{i:03d}", grid, model, turntable_frames=args.turntable_frames,
                               turntable_resolution=args.turntable_resolution, mesh_resolution=args.mesh_resolution,
                               mesh_threshold=args.mesh_threshold, super_resolve_frames=args.super_resolve,
                               generator=generator, extra=extra)
        samples.append(summary)
    total = {"count": args.count, "steps": args.steps, "eta": args.eta, "seed": args.seed, "device": str(device),
             "sampling_seconds": sampling_seconds, "sampling_seconds_per_object": sampling_seconds / args.count,
             "write_seconds": sum(s["write_seconds"] for s in samples),
             "samples": [f"sample-{i:03d}" for i in range(args.count)]}
    write_json_atomic(args.out / "summary.json", total)
    print(json.dumps({k: total[k] for k in ("count", "sampling_seconds_per_object", "write_seconds")}, indent=2))
    return 0


def _distill(args: argparse.Namespace) -> int:
    from distill3d.cli.holofusion_distill import run_distill
    from distill3d.cli.view import live_viewer
    from distill3d.devices import pick_device
    from distill3d.errors import UserError
    from distill3d.methods.holofusion.sample import load_holofusion, read_sample_grid

    grid = args.sample / "grid.safetensors" if args.sample.is_dir() else args.sample
    if not grid.is_file():
        raise UserError(f"--sample {args.sample}: no grid.safetensors (give a folder written by `holofusion sample`)")
    device = pick_device(args.device)
    if args.model is None:
        args.model = _sample_model(args.sample if args.sample.is_dir() else args.sample.parent)
    model = load_holofusion(args.model, device)
    if model.super_resolution is None:
        raise UserError(f"{args.model} was trained without its super-resolution model; nothing to distil from")
    coarse = read_sample_grid(grid, device)
    with live_viewer(args, f"holofusion distill {args.sample}"):
        return run_distill(args, coarse, model.super_resolution, model.sr_schedule)


def _sample_model(folder: Path) -> str:
    """The model named in a sample folder's summary.json (``holofusion sample`` records it), else the shipped one."""
    try:
        return str(json.loads((folder / "summary.json").read_text())["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return SHIPPED_MODEL
