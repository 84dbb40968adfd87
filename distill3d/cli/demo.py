"""``distill3d demo``: the main job on the embedded default, end to end on a laptop CPU.

Text-to-3D (Consistent3D's pipeline) for one world prompt with the shipped teacher, cut down
so that it ends in a few minutes on 2 CPU cores: 3D Gaussians, 2 cameras per step instead of
12, 180 steps instead of 800, and SDS (the default), which costs one teacher call a step where
CDS costs two. The teacher's 64x64 forward pass costs about 0.2 s per image here, so the time
budget buys a few hundred teacher images: the result has the prompt's shape and colour with a
speckled surface (benchmarks/RESULTS.md shows and scores it). The world's exact turntable of the same prompt is written beside it, and the world
classifier scores the result; the scores and what they mean are saved in summary.json.

``--reconstruct`` runs the reconstruction demo instead: a multi-view data set of the object,
fitted as 3D Gaussians and scored on views it never saw. Every output lands in ``--out``,
which ``distill3d export`` reads like the run it holds.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from distill3d.errors import UserError

DEFAULT_PROMPT = "an orange striped sphere"
RECONSTRUCT_PROMPT = "a green checkered house"
TEXT_TO_3D_STEPS = 180
RECONSTRUCT_STEPS = 1500
TEXT_TO_3D_MEANING = {
    "r_precision": "share of the 120 views whose most likely prompt, among all world prompts, is the demo's own "
                   "(the world's CLIP R-precision; 1 is perfect, chance is 1 in the number of world prompts)",
    "shape_accuracy": "share of views in which the world classifier reads the right shape",
    "colour_accuracy": "share of views in which it reads the right colour",
    "pattern_accuracy": "share of views in which it reads the right pattern",
    "mask_iou": "overlap of the result's silhouette with the true object's, at the best turn about the up axis "
                "(1: the same outline)",
    "psnr": "PSNR in dB of the result's views against the exact renders at that turn (higher is closer)",
}
RECONSTRUCT_MEANING = {
    "psnr": "PSNR in dB of the fitted Gaussians against the exact renders, on 8 views never trained on",
    "ssim": "structural similarity on those views (1: identical)",
    "mask_iou": "overlap of the silhouettes on those views (1: the same outline)",
}


def register(commands, help_text: str) -> None:
    p = commands.add_parser("demo", help=help_text, description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("distill3d-demo"), help="output folder (default: distill3d-demo)")
    p.add_argument("--prompt", default=None,
                   help=f"a world prompt (default: '{DEFAULT_PROMPT}'; with --reconstruct '{RECONSTRUCT_PROMPT}')")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimisation steps (default: {TEXT_TO_3D_STEPS}; with --reconstruct {RECONSTRUCT_STEPS})")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (default: 0)")
    p.add_argument("--reconstruct", action="store_true", help="the multi-view reconstruction demo instead")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.set_defaults(run=run_demo)


def prepare_out(args: argparse.Namespace, settings: dict) -> Path:
    """--out, created, with the demo's config.json; a non-empty one only with --resume."""
    from distill3d import __version__
    from distill3d.atomic_files import write_json_atomic

    out: Path = args.out
    config = {"method": "demo", "distill3d_version": __version__, **settings}
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; give --out a folder for the demo")
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"{out} is not empty; pass --resume to continue the demo there or choose another --out")
    if args.resume and (out / "config.json").is_file():
        old = json.loads((out / "config.json").read_text())
        changed = sorted(k for k in settings if old.get(k) != settings[k])
        if changed:
            raise UserError(f"cannot resume the demo in {out} with other settings ({', '.join(changed)}); "
                            "choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", config)
    return out


def run_demo(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps <= 0:
        raise UserError("--steps must be positive")
    return run_reconstruction(args) if args.reconstruct else run_text_to_3d(args)


def reference_turntable(obj, path: Path) -> Path:
    """The world's exact turntable of ``obj`` (36 frames, 128x128) as a GIF."""
    from distill3d.export.scene import TURNTABLE_DISTANCE
    from distill3d.export.video import render_frames, turntable_cameras, write_video
    from distill3d.world import render_reference

    cameras = turntable_cameras(36, resolution=128, distance=TURNTABLE_DISTANCE)
    return write_video(path, render_frames(lambda cams: render_reference(obj, cams), cameras), fps=12)


def report(out: Path, summary: dict, meaning: dict[str, str], scores: dict[str, float], start: float) -> None:
    """Write the demo's summary.json (outputs, scores and what they mean) and print it in words."""
    from distill3d.atomic_files import write_json_atomic

    summary.update(seconds=round(time.perf_counter() - start, 1), scores={k: scores[k] for k in meaning},
                   what_the_scores_mean=meaning)
    write_json_atomic(out / "summary.json", summary)
    print(f"\ndone in {summary['seconds']:.0f} s")
    for kind, path in summary["outputs"].items():
        print(f"  {kind}: {path}")
    print("  scores:")
    for key, text in meaning.items():
        print(f"    {key} = {scores[key]:.3f}: {text}")
    print(f"  the run's own summary: {Path(summary['run']) / 'summary.json'}")
    print(f"  the demo's summary, with these scores: {out / 'summary.json'}")


def run_text_to_3d(args: argparse.Namespace) -> int:
    from distill3d.eval.text_to_3d import TextTo3DEvalConfig, evaluate_run
    from distill3d.methods.consistent3d import Consistent3DConfig, text_to_3d
    from distill3d.teacher_loading import WORLD_TEACHER, check_prompt
    from distill3d.world import parse_prompt
    from distill3d.world_models.classifier import WorldClassifier

    obj, _ = parse_prompt(check_prompt(args.prompt or DEFAULT_PROMPT, WORLD_TEACHER))
    steps = args.steps or TEXT_TO_3D_STEPS
    out = prepare_out(args, {"run": "text-to-3d", "prompt": obj.prompt, "steps": steps, "seed": args.seed})
    start = time.perf_counter()
    print(f"[1/3] the world's exact turntable of '{obj.prompt}'")
    reference = reference_turntable(obj, out / "reference_turntable.gif")

    print(f"[2/3] text-to-3D: {steps} SDS steps on 3D Gaussians, 2 cameras a step (CPU: about 1 s a step)")
    base = Consistent3DConfig()
    config = Consistent3DConfig(guidance="sds", steps=steps, seed=args.seed,
                                scene=replace(base.scene, representation="gaussians"),
                                cameras=replace(base.cameras, cameras_per_step=2),
                                loop=replace(base.loop, checkpoint_every=50),
                                export=replace(base.export, turntable_frames=36))
    run_dir = out / "text-to-3d"
    summary = text_to_3d(obj.prompt, config, run_dir, resume=args.resume and (run_dir / "config.json").exists())

    print("[3/3] scoring 120 views with the world classifier")
    scores = evaluate_run(run_dir, WorldClassifier.from_pretrained(), TextTo3DEvalConfig())
    outputs = {"reference turntable": str(reference),
               **{f"text-to-3D {kind}": path for kind, path in summary["outputs"].items()}}
    report(out, {"prompt": obj.prompt, "outputs": outputs, "run": str(run_dir)}, TEXT_TO_3D_MEANING, scores, start)
    return 0


def run_reconstruction(args: argparse.Namespace) -> int:
    from distill3d.data.world_datasets import write_world_dataset
    from distill3d.methods.fit import FitConfig, fit
    from distill3d.scene.factory import GaussianInitConfig
    from distill3d.world import is_heldout, parse_prompt

    obj, _ = parse_prompt(args.prompt or RECONSTRUCT_PROMPT)
    steps = args.steps or RECONSTRUCT_STEPS
    out = prepare_out(args, {"run": "gaussians", "prompt": obj.prompt, "steps": steps, "seed": args.seed,
                             "reconstruct": True})
    start = time.perf_counter()

    print(f"[1/3] reference turntable of '{obj.prompt}'")
    reference = reference_turntable(obj, out / "reference_turntable.gif")

    print("[2/3] a multi-view data set: 40 views at 64x64 (32 to train on, 8 held out)")
    split = "heldout" if is_heldout(obj) else "train"
    data = out / "data"
    write_world_dataset("multiview", data, 1, split=split, views=40, resolution=64, seed=args.seed,
                        resume=args.resume and data.exists(), objects=[obj])

    print(f"[3/3] fitting 3D Gaussians for {steps} steps")
    base = FitConfig(data=str(data))
    config = replace(base, steps=steps, seed=args.seed, views_per_step=4,
                     scene=replace(base.scene, representation="gaussians", gaussians=GaussianInitConfig(count=5000)),
                     export=replace(base.export, turntable_frames=36))
    run_dir = out / "gaussians"
    summary = fit(config, run_dir, resume=args.resume and (run_dir / "config.json").exists())
    outputs = {"reference turntable": str(reference),
               **{f"fitted {kind}": path for kind, path in summary["outputs"].items()}}
    report(out, {"prompt": obj.prompt, "outputs": outputs, "run": str(run_dir)}, RECONSTRUCT_MEANING,
           summary["heldout"], start)
    return 0
