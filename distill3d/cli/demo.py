"""``distill3d demo``: the main job on the embedded default, end to end on a laptop CPU.

Text-to-3D (Consistent3D's pipeline) for one world prompt with the shipped teacher, cut down
so that it ends in a few minutes on 2 CPU cores: 3D Gaussians, 2 cameras per step instead of
12, 180 steps instead of 2000, and SDS, which costs one teacher call a step where CDS costs
two and scores higher with this teacher (benchmarks/RESULTS.md). The result is a grainy blob in
the prompt's colour, not the object: the teacher's 64x64 forward pass costs about 0.2 s per
image here, so the time budget buys a few hundred teacher images. The world's exact turntable of
the same prompt is written beside it, and the world classifier scores the result.

``--reconstruct`` runs the earlier demo instead: a multi-view data set of the object, fitted
as 3D Gaussians and scored on views it never saw. Every output lands in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distill3d.errors import UserError

DEFAULT_PROMPT = "an orange striped sphere"
RECONSTRUCT_PROMPT = "a green checkered house"
TEXT_TO_3D_STEPS = 180
RECONSTRUCT_STEPS = 1500


def register(commands) -> None:
    p = commands.add_parser("demo", help="run the embedded-default pipeline end to end (a few minutes on a CPU)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("distill3d-demo"), help="output folder (default: distill3d-demo)")
    p.add_argument("--prompt", default=None,
                   help=f"a world prompt (default: '{DEFAULT_PROMPT}'; with --reconstruct '{RECONSTRUCT_PROMPT}')")
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimisation steps (default: {TEXT_TO_3D_STEPS}; with --reconstruct {RECONSTRUCT_STEPS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reconstruct", action="store_true", help="the multi-view reconstruction demo instead")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.set_defaults(run=run_demo)


def prepare_out(args: argparse.Namespace) -> Path:
    """--out, created; a non-empty one only with --resume."""
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"{out} is not empty; pass --resume to continue the demo there or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_demo(args: argparse.Namespace) -> int:
    if args.steps is not None and args.steps <= 0:
        raise UserError("--steps must be positive")
    return run_reconstruction(args) if args.reconstruct else run_text_to_3d(args)


def reference_turntable(obj, path: Path) -> Path:
    """The world's exact turntable of ``obj`` (36 frames, 128x128) as a GIF."""
    from distill3d.export import render_frames, turntable_cameras, write_video
    from distill3d.world import render_reference

    frames = render_frames(lambda cams: render_reference(obj, cams), turntable_cameras(36, resolution=128, distance=2.7))
    return write_video(path, frames, fps=12)


def run_text_to_3d(args: argparse.Namespace) -> int:
    from distill3d.eval.classifier import WorldClassifier
    from distill3d.eval.text_to_3d import TextTo3DEvalConfig, evaluate_run
    from distill3d.methods.consistent3d import WORLD_TEACHER, Consistent3DConfig, check_prompt, text_to_3d
    from distill3d.world import parse_prompt

    prompt = args.prompt or DEFAULT_PROMPT
    obj, _ = parse_prompt(check_prompt(prompt, WORLD_TEACHER))
    out = prepare_out(args)
    start = time.perf_counter()
    print(f"[1/3] the world's exact turntable of '{obj.prompt}'")
    reference = reference_turntable(obj, out / "reference_turntable.gif")

    steps = args.steps or TEXT_TO_3D_STEPS
    print(f"[2/3] text-to-3D: {steps} SDS steps on 3D Gaussians, 2 cameras a step (CPU: about 1 s a step)")
    config = Consistent3DConfig(representation="gaussians", guidance="sds", steps=steps, seed=args.seed,
                                cameras_per_step=2, num_gaussians=5000, checkpoint_every=50, turntable_frames=36)
    run_dir = out / "text-to-3d"
    summary = text_to_3d(obj.prompt, config, run_dir, resume=args.resume and (run_dir / "config.json").exists())

    print("[3/3] scoring 120 views with the world classifier")
    scores = evaluate_run(run_dir, WorldClassifier.from_pretrained(), TextTo3DEvalConfig())

    print(f"\ndone in {time.perf_counter() - start:.0f} s")
    print(f"  reference turntable: {reference}")
    for kind, path in summary["outputs"].items():
        print(f"  text-to-3D {kind}: {path}")
    print(f"  world classifier on 120 views: R-precision {scores['r_precision']:.2f}, shape {scores['shape_accuracy']:.2f}, "
          f"colour {scores['colour_accuracy']:.2f}, pattern {scores['pattern_accuracy']:.2f}")
    print(f"  summary: {run_dir / 'summary.json'}")
    return 0


def run_reconstruction(args: argparse.Namespace) -> int:
    from distill3d.data.world_datasets import write_world_dataset
    from distill3d.methods.fit import FitConfig, fit
    from distill3d.world import is_heldout, parse_prompt

    obj, _ = parse_prompt(args.prompt or RECONSTRUCT_PROMPT)
    steps = args.steps or RECONSTRUCT_STEPS
    out = prepare_out(args)
    start = time.perf_counter()

    print(f"[1/3] reference turntable of '{obj.prompt}'")
    reference = reference_turntable(obj, out / "reference_turntable.gif")

    print("[2/3] a multi-view data set: 40 views at 64x64 (32 to train on, 8 held out)")
    split = "heldout" if is_heldout(obj) else "train"
    data = out / "data"
    write_world_dataset("multiview", data, 1, split=split, views=40, resolution=64, seed=args.seed,
                        resume=args.resume and data.exists(), objects=[obj])

    print(f"[3/3] fitting 3D Gaussians for {steps} steps")
    config = FitConfig(data=str(data), representation="gaussians", steps=steps, seed=args.seed,
                       num_gaussians=5000, views_per_step=4, checkpoint_every=250, turntable_frames=36)
    summary = fit(config, out / "gaussians", resume=args.resume)

    held = summary["heldout"]
    print(f"\ndone in {time.perf_counter() - start:.0f} s")
    print(f"  reference turntable: {reference}")
    for kind, path in summary["outputs"].items():
        print(f"  fitted {kind}: {path}")
    print(f"  unseen views: PSNR {held['psnr']:.2f} dB, SSIM {held['ssim']:.3f}, mask IoU {held['mask_iou']:.3f}")
    print(f"  summary: {out / 'gaussians' / 'summary.json'}")
    return 0
