"""``distill3d data``: build data sets from folders of real meshes.

    distill3d data render-meshes DIR --out OUT [--kind multiview|text-image|multiview-groups]
                                 [--views N] [--resolution R] [--seed S] [--resume]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill3d.data.kinds import KINDS
from distill3d.data.layout import REPORT_FILE
from distill3d.data.mesh_datasets import DEFAULT_VIEWS, write_mesh_dataset
from distill3d.data.meshes import UP_AXES
from distill3d.data.shards import DEFAULT_SHARD_SIZE


def register(subparsers, help_text: str) -> None:
    data = subparsers.add_parser("data", help=help_text,
                                 description="Build data sets (docs/data-layout.md) from folders of meshes.")
    commands = data.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    views_help = ", ".join(f"{k}: {v}" for k, v in DEFAULT_VIEWS.items())
    p = commands.add_parser(
        "render-meshes", help="render every mesh file under a folder into a data set",
        description="Render every glTF/GLB, OBJ, PLY, STL and OFF file under DIR (recursively) into a data "
                    "set. Files that cannot be used are skipped and listed in OUT/report.json.")
    p.add_argument("mesh_dir", metavar="DIR", type=Path, help="folder of mesh files")
    p.add_argument("--out", required=True, type=Path, help="data set folder to write")
    p.add_argument("--kind", choices=KINDS, default="multiview", help="data set kind (default: %(default)s)")
    p.add_argument("--views", type=int, default=None,
                   help=f"frames per mesh (multiview) or items per mesh (others); default {views_help}")
    p.add_argument("--targets", type=int, default=4,
                   help="target views per group, multiview-groups (default: %(default)s)")
    p.add_argument("--resolution", type=int, default=64,
                   help="image width and height in pixels (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random cameras (default: %(default)s)")
    p.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE,
                   help="items per shard folder (default: %(default)s)")
    p.add_argument("--up", choices=UP_AXES, default="auto",
                   help="up axis of the files (default: auto: y for glTF/GLB/OBJ, z for PLY/STL/OFF)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in OUT")
    p.set_defaults(run=_render_meshes)


def _render_meshes(args: argparse.Namespace) -> int:
    result = write_mesh_dataset(args.mesh_dir, args.out, kind=args.kind, views=args.views, targets=args.targets,
                                resolution=args.resolution, seed=args.seed, resume=args.resume,
                                shard_size=args.shard_size, up=args.up)
    print(f"rendered {result.rendered} mesh(es) into {result.out_dir}; skipped {len(result.skipped)}")
    for skipped in result.skipped:
        print(f"  skipped {skipped['file']}: {skipped['reason']}")
    print(f"report: {result.out_dir / REPORT_FILE}")
    return 0
