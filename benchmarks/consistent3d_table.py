"""Consistent3D results table: SDS, CDS and the paper's ablations (a)-(c) on held-out world prompts.

Every row uses the same prompts, steps and seeds (``--seeds 0,1,2``: mean over all runs, spread = standard
deviation of the per-seed means); each run is scored by ``distill3d eval
text-to-3d`` (world R-precision over 120 views, attribute accuracy, mask IoU / PSNR against
the reference after the best rotation about the up axis).

    python benchmarks/consistent3d_table.py --out runs/c3d_table --representation gaussians \\
        --steps 800 --prompts 16 --seeds 0,1,2 --workers 16

Runs are spread over ``--workers`` processes, round-robin over ``--gpus`` GPUs. Processes on
one GPU are time-sliced, so the gain is modest once the teacher runs from CUDA graphs. A finished run keeps its metrics
JSON, so the command can be repeated to finish an interrupted table. ``--strips K`` writes an
8-view PNG strip and a 48-frame turntable (turntable.npz, uint8 [48, 128, 128, 3]) of the first K
prompts of every row; ``benchmarks/turntable_sheet.py`` puts the turntables side by side.

The NeRF rows run the default scene (4 cameras a step, 32 samples, 8 hash levels up to 512); the paper's
(12 cameras, 64 samples) costs 0.24 s a step on an H200, e.g. for a few rows

    python benchmarks/consistent3d_table.py --out runs/c3d_paper_scene --representation nerf --steps 500 \\
        --cameras-per-step 12 --num-samples 64 --hash-levels 16 --hash-max-resolution 4096 --variants sds,cds
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

PAPER_CDS = ["cds.weighting=one_minus_alpha_bar", "cds.weight_by=t2", "cds.gap_form=paper", "cds.cfg_form=standard",
             "cds.cfg_start=50", "cds.cfg_end=20", "cds.share_noise_across_views=false",
             "cds.grad_clip_start=none", "cds.grad_clip_end=none"]
"""CDS as the paper writes it (Sec. 4.2-4.3, B.1; lambda = 1 - abar(t2), our reading of the unstated weight)."""
CODE_CDS = ["cds.weighting=uniform", "cds.weight_by=t1", "cds.gap_form=code", "cds.cfg_form=code",
            "cds.cfg_start=100", "cds.cfg_end=50", "cds.share_noise_across_views=true",
            "cds.grad_clip_start=2", "cds.grad_clip_end=8"]
"""CDS as the authors' coarse config computes it (configs/consistency-coarse.yaml, guidance/cds.py)."""
PAPER_CAMERAS = ["cameras.distance_min=1.5", "cameras.distance_max=2.0", "cameras.fovy_min=30", "cameras.fovy_max=45"]
TEACHER_CAMERAS = ["cameras.distance_min=1.5", "cameras.distance_max=3.0", "cameras.fovy_min=30", "cameras.fovy_max=45"]
FAR_CAMERAS = ["cameras.distance_min=2.5", "cameras.distance_max=3.0", "cameras.fovy_min=30", "cameras.fovy_max=45"]
THREESTUDIO_CAMERAS = ["cameras.distance_min=1.5", "cameras.distance_max=2.0", "cameras.fovy_min=40",
                       "cameras.fovy_max=70"]

OLD_GAUSSIANS = ["densify_gaussians=false", "optim.means_lr_end=none", "scene.gaussians.count=20000",
                 "scene.gaussians.radius=0.9", "optim.gaussians.means=1.6e-4", "optim.gaussians.quats=1e-3",
                 "optim.gaussians.sh_dc=2.5e-3", "optim.gaussians.sh_rest=1.25e-4"]
"""The Gaussians' start and schedule before DreamGaussian's recipe: a 20000-point ball filling the frame, 3DGS's
rates, no densification."""


def sds(*fields: str) -> list[str]:
    return ["guidance=sds", *fields]


def cds(*fields: str) -> list[str]:
    return ["guidance=cds", *fields]


VARIANTS: dict[str, list[str]] = {  # Consistent3DConfig fields of each row, as ``--set FIELD=VALUE``
    # the paper's rows
    "sds": sds(),                                                       # DreamFusion baseline (the default)
    "cds_a_random_t": cds("cds.t_sampling=random"),                     # ablation (a)
    "cds_b_predetermined_t": cds("cds.t_sampling=predetermined"),       # ablation (b)
    "cds_c_fresh_noise": cds("cds.fixed_noise=false"),                  # ablation (c)
    "cds": cds(),                                                       # (d) full CDS
    "cds_x0_skip": cds("cds.skip_jacobian_of=x0"),   # the other reading of Sec. 4.2 (guidance/cds.py)
    # CDS as the paper or the authors' code writes it, and the cameras
    "cds_paper": cds(*PAPER_CDS),
    "cds_code": cds(*CODE_CDS),
    "cds_paper_cameras": cds(*PAPER_CAMERAS),
    "cds_teacher_cameras": cds(*TEACHER_CAMERAS),
    "cds_far_cameras": cds(*FAR_CAMERAS),
    "cds_threestudio_cameras": cds(*THREESTUDIO_CAMERAS),
    "cds_code_paper_cameras": cds(*CODE_CDS, *PAPER_CAMERAS),
    "cds_code_teacher_cameras": cds(*CODE_CDS, *TEACHER_CAMERAS),
    "cds_code_far_cameras": cds(*CODE_CDS, *FAR_CAMERAS),
    "cds_paper_teacher_cameras": cds(*PAPER_CDS, *TEACHER_CAMERAS),
    "sds_paper_cameras": sds(*PAPER_CAMERAS),
    "sds_teacher_cameras": sds(*TEACHER_CAMERAS),
    "sds_far_cameras": sds(*FAR_CAMERAS),
    "sds_threestudio_cameras": sds(*THREESTUDIO_CAMERAS),
    # which of the Gaussians' choices matter: each row undoes one of the default's
    "sds_no_densify": sds("densify_gaussians=false"),
    "sds_random_background": sds("shading.random_background_share=0.5"),
    "sds_constant_means_lr": sds("optim.means_lr_end=none"),
    "sds_old_gaussians": sds(*OLD_GAUSSIANS),
    "sds_grey_start": sds("scene.gaussians.colour=grey"),               # DreamGaussian's start colour
    "sds_3dgs_colour_lr": sds("optim.gaussians.sh_dc=2.5e-3"),          # 3DGS's colour rate, not DreamGaussian's
    "cds_no_densify": cds("densify_gaussians=false"),
    "cds_random_background": cds("shading.random_background_share=0.5"),
    "cds_constant_means_lr": cds("optim.means_lr_end=none"),
    "cds_old_gaussians": cds(*OLD_GAUSSIANS),
    # the guidance's own settings
    "sds_cfg_30": sds("sds.guidance_scale=30"),
    "sds_t_max_annealed": sds("sds.t_max_end=0.5"),
}
SCENE_OPTIONS = {"cameras_per_step": "cameras.cameras_per_step", "num_samples": "scene.num_samples",
                 "hash_levels": "scene.nerf.num_levels", "hash_max_resolution": "scene.nerf.max_resolution"}
"""Options of this script -> the Consistent3DConfig field each sets for every row (a cheaper NeRF for the table)."""
TURNTABLE_FRAMES = 48
STRIP_VIEWS = 8  # a divisor of TURNTABLE_FRAMES: the strip is every 6th turntable frame
METRICS = ("r_precision", "shape_accuracy", "colour_accuracy", "pattern_accuracy", "mask_iou", "psnr")


def table_prompts(count: int) -> list[str]:
    """``count`` held-out prompts spread evenly over the held-out list (deterministic)."""
    from distill3d.world.split import heldout_objects

    objects = heldout_objects()
    if count > len(objects):
        raise SystemExit(f"only {len(objects)} held-out prompts")
    return [objects[i * len(objects) // count].prompt for i in range(count)]


def seeds(args) -> list[int]:
    return [int(x) for x in str(args.seeds).split(",")]


def jobs(args) -> list[tuple[str, int, int, str]]:
    """(variant, seed, prompt index, prompt) for every cell of the table."""
    variants = args.variants.split(",")
    prompts = list(enumerate(table_prompts(args.prompts)))
    return [(v, seed, i, p) for seed in seeds(args) for v in variants for i, p in prompts]


def run_path(args, variant: str, seed: int, index: int) -> Path:
    return Path(args.out) / args.representation / variant / f"seed{seed}" / f"{index:02d}"


def scene_options(args) -> dict[str, int]:
    """The SCENE_OPTIONS given on the command line."""
    return {k: getattr(args, k) for k in SCENE_OPTIONS if getattr(args, k) is not None}


def row_config(args, variant: str, seed: int, device_name: str):
    """The Consistent3DConfig of one row of the table."""
    from distill3d.cli.config_overrides import apply_overrides
    from distill3d.methods.consistent3d import Consistent3DConfig

    # built with its representation, so that the defaults that depend on it (cameras a step) follow
    base = Consistent3DConfig(scene=dataclasses.replace(Consistent3DConfig().scene, representation=args.representation))
    common = [f"steps={args.steps}", f"seed={seed}",
              f"device={device_name}", "export.turntable_frames=0", f"loop.checkpoint_every={args.steps}"]
    common += [f"{SCENE_OPTIONS[k]}={v}" for k, v in scene_options(args).items()]
    return apply_overrides(base, common + VARIANTS[variant])


def run_worker(args) -> None:
    """Run and score this worker's share of the jobs, one after another."""
    import numpy as np
    import torch

    from distill3d.world_models.classifier import WorldClassifier
    from distill3d.eval.teacher_quality import save_grid
    from distill3d.eval.text_to_3d import TextTo3DEvalConfig, evaluate_run
    from distill3d.export.video import render_frames, turntable_cameras
    from distill3d.methods.consistent3d import text_to_3d
    from distill3d.render.scene import render_scene
    from distill3d.training.run_dir import RunDir
    from distill3d.training.run_scene import load_run_scene

    device_name = f"cuda:{args.worker % args.gpus}" if args.gpus > 1 else args.device
    device = torch.device(device_name)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    classifier = WorldClassifier.from_pretrained(args.classifier, device=device)
    eval_config = TextTo3DEvalConfig()
    mine = jobs(args)[args.worker::args.workers]
    durations: list[float] = []
    for variant, seed, index, prompt in mine:
        run_dir = run_path(args, variant, seed, index)
        metrics_path = run_dir / "metrics.json"
        if metrics_path.exists():
            continue
        expected = max(durations) if durations else 0.0
        if args.deadline and time.time() + expected > args.deadline:
            print(f"[worker {args.worker}] stopping before the deadline", flush=True)
            return
        job_start = time.time()
        config = row_config(args, variant, seed, device_name)
        summary = text_to_3d(prompt, config, run_dir, progress=False)
        metrics = evaluate_run(run_dir, classifier, eval_config, device)
        metrics.update(variant=variant, seed=seed, prompt=prompt, seconds=summary["seconds"],
                       gaussians=summary["final_stats"].get("gaussians"))
        if index < args.strips:
            scene = load_run_scene(RunDir(run_dir), device)
            frames = render_frames(lambda c: render_scene(scene, c.to(device), background=1.0),
                                   turntable_cameras(TURNTABLE_FRAMES, resolution=128))
            np.savez_compressed(run_dir / "turntable.npz", frames=frames)
            strip = frames[::TURNTABLE_FRAMES // STRIP_VIEWS]  # the 8 views at 0, 45, ... 315 degrees
            save_grid(torch.from_numpy(strip).float() / 255.0, run_dir / "strip.png", columns=STRIP_VIEWS)
        metrics_path.write_text(json.dumps(metrics, indent=2))
        durations.append(time.time() - job_start)
        print(f"[worker {args.worker}] {variant} seed {seed} {prompt!r}: R-precision {metrics['r_precision']:.3f} "
              f"IoU {metrics['mask_iou']:.3f} PSNR {metrics['psnr']:.2f} ({summary['seconds']:.0f} s)", flush=True)


def finished_runs(args, variant: str, seed: int) -> list[dict]:
    """The metrics of the finished runs of one row and seed."""
    folder = Path(args.out) / args.representation / variant / f"seed{seed}"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/metrics.json"))]


def collect(args) -> dict:
    """Per variant: the mean of every metric over all finished runs, and the spread of the per-seed means
    (their standard deviation over seeds, 0 with one seed)."""
    import statistics

    rows = {}
    for variant in args.variants.split(","):
        per_seed = {seed: found for seed in seeds(args) if (found := finished_runs(args, variant, seed))}
        runs = [r for found in per_seed.values() for r in found]
        if not runs:
            continue
        row = {"runs": len(runs), "seeds": sorted(per_seed),
               "seconds_per_run": sum(r["seconds"] for r in runs) / len(runs)}
        for m in METRICS:
            row[m] = sum(r[m] for r in runs) / len(runs)
            means = [sum(r[m] for r in found) / len(found) for found in per_seed.values()]
            row[m + "_spread"] = statistics.stdev(means) if len(means) > 1 else 0.0
        rows[variant] = row
    return rows


def warm_up(device: str) -> None:
    """Build gsplat's CUDA extension once, before the workers start (it compiles on first use)."""
    if not device.startswith("cuda"):
        return
    from distill3d.cameras import orbit_cameras
    from distill3d.render.splat import gsplat_available, render_gaussians
    from distill3d.scene.gaussians import Gaussians

    if gsplat_available():
        render_gaussians(Gaussians.random_ball(8, device=device), orbit_cameras(15.0, 0.0, 2.6, 40.0, 8, 8).to(device),
                         backend="gsplat")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--representation", choices=("gaussians", "nerf"), default="gaussians")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; every row runs each")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=1, help="spread the workers over cuda:0 .. cuda:GPUS-1")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--strips", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="start no run that would end after this many minutes (repeat the command to go on)")
    parser.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--classifier", default="world-classifier",
                        help="judge: model folder or shipped name (benchmarks/RESULTS.md names the one of each table)")
    for name, field in SCENE_OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=None,
                            help=f"Consistent3DConfig.{field} for every row (default: the config's)")
    args = parser.parse_args()
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    if args.worker is not None:
        run_worker(args)
        return
    started = time.perf_counter()
    deadline = [] if args.max_minutes is None else ["--deadline", str(time.time() + 60.0 * args.max_minutes)]
    if args.representation == "gaussians":
        warm_up(args.device)
    procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], *deadline, "--worker", str(w)])
             for w in range(args.workers)]
    codes = [p.wait() for p in procs]
    rows = collect(args)
    result = {"representation": args.representation, "steps": args.steps,
              "scene_options": scene_options(args),
              "prompts": table_prompts(args.prompts),
              "seeds": seeds(args), "classifier": args.classifier, "workers": args.workers, "gpus": args.gpus,
              "wall_seconds": time.perf_counter() - started,
              "worker_exit_codes": codes, "rows": rows,
              "runs": [{k: r[k] for k in ("variant", "seed", "prompt", "seconds", *METRICS)}
                       for v in args.variants.split(",") for seed in seeds(args) for r in finished_runs(args, v, seed)]}
    out = Path(args.out) / f"table_{args.representation}.json"
    out.write_text(json.dumps(result, indent=2))
    print("| variant | runs | " + " | ".join(METRICS) + " | s/run |")
    for variant, row in rows.items():
        cells = " | ".join(f"{row[m]:.3f} ± {row[m + '_spread']:.3f}" for m in METRICS)
        print(f"| {variant} | {row['runs']} | " + cells
              + f" | {row['seconds_per_run']:.0f} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
