"""``distill3d text-to-3d PROMPT --out RUN_DIR``: Consistent3D (CDS) or SDS distillation into a NeRF or Gaussians."""

from __future__ import annotations

import argparse

from distill3d.cli.dataclass_args import add_config_options, config_from_args
from distill3d.cli.run_options import add_run_folder_options, print_run_summary
from distill3d.cli.view import add_live_viewer_options, live_viewer


def register(commands, help_text: str) -> None:
    from distill3d.methods.consistent3d import Consistent3DConfig

    p = commands.add_parser("text-to-3d", help=help_text, usage="distill3d text-to-3d PROMPT --out RUN [options]",
                            description="Consistent3D text-to-3D (coarse stage): CDS or SDS guidance from the "
                                        "world teacher or a Stable Diffusion folder; writes config.json, "
                                        "checkpoints, summary.json, the asset (mesh.glb or gaussians.ply) and "
                                        "a turntable into --out. On a 2-core CPU a default run takes the better "
                                        "part of an hour: use a GPU, or the cut-down `distill3d demo`.")
    p.add_argument("prompt", help='e.g. "a red striped torus" (views are added per camera)')
    add_run_folder_options(p)
    add_live_viewer_options(p)
    add_config_options(p, Consistent3DConfig)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from distill3d.methods.consistent3d import Consistent3DConfig, text_to_3d

    config = config_from_args(Consistent3DConfig, args)  # every option checked before any work
    with live_viewer(args, args.prompt):
        summary = text_to_3d(args.prompt, config, args.out, resume=args.resume)
    print_run_summary(summary, ("prompt", "steps", "seconds", "final_loss"))
    return 0
