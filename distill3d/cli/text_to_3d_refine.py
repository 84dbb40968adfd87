"""``distill3d text-to-3d-refine COARSE_RUN --out RUN_DIR``: Consistent3D's mesh refinement of a NeRF run."""

from __future__ import annotations

import argparse
from pathlib import Path

from distill3d.cli.dataclass_args import add_config_options, config_from_args
from distill3d.cli.run_options import add_run_folder_options, print_run_summary


def register(commands, help_text: str) -> None:
    from distill3d.methods.mesh_refine import MeshRefineConfig

    p = commands.add_parser("text-to-3d-refine", help=help_text,
                            usage="distill3d text-to-3d-refine COARSE_RUN --out RUN [options]",
                            description="Consistent3D's mesh refinement stage (Sec. 4.3): the NeRF of a finished "
                                        "`distill3d text-to-3d --representation nerf` run becomes a DMTet mesh, "
                                        "refined by the run's guidance at the teacher's resolution with normal "
                                        "consistency and Laplacian smoothness; writes mesh.glb and mesh.obj "
                                        "(textured), a turntable, config.json, checkpoints and summary.json.")
    p.add_argument("coarse_run", type=Path, help="a finished text-to-3d NeRF run folder")
    add_run_folder_options(p)
    add_config_options(p, MeshRefineConfig)
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from distill3d.methods.mesh_refine import MeshRefineConfig, refine_mesh

    config = config_from_args(MeshRefineConfig, args)  # every option checked before any work
    summary = refine_mesh(args.coarse_run, config, args.out, resume=args.resume)
    print_run_summary(summary, ("prompt", "steps", "seconds", "final_loss"))
    return 0
