"""``distill3d demo``: the main job on the embedded default, end to end on a laptop CPU.

Until text-to-3D lands, the demo shows the pipeline that exists: the world renders an object
exactly (a turntable), writes a multi-view data set of it, and ``fit`` reconstructs it as 3D
Gaussians, scored on views it never saw. Every output lands in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distill3d.errors import UserError

DEFAULT_PROMPT = "a green checkered house"


def register(commands) -> None:
    p = commands.add_parser("demo", help="run the embedded-default pipeline end to end (a few minutes on a CPU)",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("distill3d-demo"), help="output folder (default: distill3d-demo)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"a world prompt (default: '{DEFAULT_PROMPT}')")
    p.add_argument("--steps", type=int, default=1500, help="reconstruction steps (default: 1500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from distill3d.data.world_datasets import write_world_dataset
    from distill3d.export import render_frames, turntable_cameras, write_video
    from distill3d.methods.fit import FitConfig, fit
    from distill3d.world import is_heldout, parse_prompt, render_reference

    obj, _ = parse_prompt(args.prompt)
    if args.steps <= 0:
        raise UserError("--steps must be positive")
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise UserError(f"{out} is not empty; pass --resume to continue the demo there or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    print(f"[1/3] reference turntable of '{obj.prompt}'")
    frames = render_frames(lambda cams: render_reference(obj, cams), turntable_cameras(36, resolution=128, distance=2.7))
    reference = write_video(out / "reference_turntable.gif", frames, fps=12)

    print("[2/3] a multi-view data set: 40 views at 64x64 (32 to train on, 8 held out)")
    split = "heldout" if is_heldout(obj) else "train"
    data = out / "data"
    write_world_dataset("multiview", data, 1, split=split, views=40, resolution=64, seed=args.seed,
                        resume=args.resume and data.exists(), objects=[obj])

    print(f"[3/3] fitting 3D Gaussians for {args.steps} steps")
    config = FitConfig(data=str(data), representation="gaussians", steps=args.steps, seed=args.seed,
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
