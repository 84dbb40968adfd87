"""``distill3d fit`` (multi-view reconstruction) and ``distill3d export`` (assets of a run)."""

from __future__ import annotations

import json
from pathlib import Path

from distill3d.cli.dataclass_args import add_config_options, config_from_args
from distill3d.errors import UserError


def register(commands) -> None:
    from distill3d.methods.fit import FitConfig
    from distill3d.methods.fit_scenes import EXPORT_FORMATS

    p = commands.add_parser("fit", help="reconstruct one multi-view sequence with a voxel grid, NeRF or Gaussians",
                            description="Fit a 3D representation to the posed images of a multi-view data set; "
                                        "writes checkpoints, summary.json (held-out PSNR/SSIM), the asset and "
                                        "a turntable into --out.")
    p.add_argument("data", help="multi-view data set folder (distill3d world dataset multiview ...)")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    add_config_options(p, FitConfig, skip={"data"})
    p.set_defaults(run=_run_fit)

    e = commands.add_parser("export", help="export the asset of a run (ply, glb, obj, mp4, gif)")
    e.add_argument("run_dir", type=Path, help="a run folder written by distill3d fit")
    e.add_argument("--format", required=True, choices=EXPORT_FORMATS, dest="formats", action="append",
                   help="repeat for several formats")
    e.set_defaults(run=_run_export)


def _run_fit(args) -> int:
    from distill3d.methods.fit import FitConfig, fit

    config = config_from_args(FitConfig, args, data=str(args.data))
    summary = fit(config, args.out, resume=args.resume)
    print(json.dumps({"heldout": summary["heldout"], "seconds": summary["seconds"]}, indent=2))
    for kind, path in summary["outputs"].items():
        print(f"{kind}: {path}")
    return 0


def _run_export(args) -> int:
    from distill3d.devices import pick_device
    from distill3d.methods.fit import FitConfig
    from distill3d.methods.fit_scenes import scene_for_checkpoint
    from distill3d.run_dir import RunDir

    run = RunDir(args.run_dir)
    config = FitConfig(**run.read_config())
    if not run.has_checkpoint():
        raise UserError(f"{run.path} has no checkpoint yet; nothing to export")
    device = pick_device()  # a run made on a GPU exports on a CPU too
    scene = scene_for_checkpoint(config, run, device)
    run.load_checkpoint(scene.modules(), device=device)
    for fmt, path in scene.export(run.path, config, tuple(args.formats)).items():
        print(f"{fmt}: {path}")
    return 0
