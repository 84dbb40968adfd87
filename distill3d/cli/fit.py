"""``distill3d fit DATA --out RUN_DIR``: multi-view reconstruction of one sequence of a data set."""

from __future__ import annotations

import argparse

from distill3d.cli.dataclass_args import add_config_options, config_from_args
from distill3d.cli.run_options import add_run_folder_options, print_run_summary
from distill3d.cli.view import add_live_viewer_options, live_viewer


def register(commands, help_text: str) -> None:
    from distill3d.methods.fit import FitConfig

    p = commands.add_parser("fit", help=help_text, usage="distill3d fit DATA --out RUN [options]",
                            description="Fit a 3D representation to the posed images of a multi-view data set; "
                                        "writes checkpoints, summary.json (held-out PSNR/SSIM), the asset and "
                                        "a turntable into --out.")
    p.add_argument("data", help="multi-view data set folder (distill3d world dataset multiview ...) or a CO3Dv2 "
                                "folder (a root or one category; frames cropped about their masks)")
    add_run_folder_options(p)
    add_live_viewer_options(p)
    add_config_options(p, FitConfig, skip={"data"})
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from distill3d.methods.fit import FitConfig, fit

    config = config_from_args(FitConfig, args, data=str(args.data))
    with live_viewer(args, f"fit {args.data}"):
        summary = fit(config, args.out, resume=args.resume)
    print_run_summary(summary, ("heldout", "seconds"))
    return 0
