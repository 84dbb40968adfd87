"""The ``distill3d`` command. One module per command, each with ``register(commands, help)``.

Only the module of the command being run is imported (and with it torch and the models):
``distill3d --help`` lists the commands from ``COMMANDS`` alone, in a fraction of a second.

A ``UserError`` (bad prompt, missing file, wrong option) is printed as one line and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from distill3d import __version__
from distill3d.errors import UserError

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("distill3d.cli.demo", "run the embedded-default pipeline end to end (a few minutes on a CPU)"),
    "world": ("distill3d.cli.world", "the embedded world: list its vocabulary, render objects, write data sets"),
    "data": ("distill3d.cli.data", "build data sets from folders of meshes"),
    "fit": ("distill3d.cli.fit", "reconstruct one multi-view sequence with a voxel grid, NeRF or Gaussians"),
    "text-to-3d": ("distill3d.cli.text_to_3d", "distil a text prompt into a NeRF (mesh) or 3D Gaussians"),
    "text-to-3d-refine": ("distill3d.cli.text_to_3d_refine",
                          "refine a text-to-3d NeRF run into a textured mesh (Consistent3D's second stage)"),
    "image-to-3d": ("distill3d.cli.image_to_3d", "3D Gaussians from one image with a trained DD3G student"),
    "dd3g": ("distill3d.cli.dd3g", "DD3G: collect the multi-view teacher's quadruples, check them, train the student"),
    "holofusion": ("distill3d.cli.holofusion",
                   "HoloFusion: train the 3D voxel diffusion model from posed views, sample grids, turntables, meshes"),
    "view": ("distill3d.cli.view", "look at a run folder in the browser (viser), or with --viewer while it trains"),
    "export": ("distill3d.cli.export", "write the assets of a run folder (ply, glb, obj, mp4, gif, model)"),
    "teacher": ("distill3d.cli.teacher", "train, sample and evaluate the world teachers and classifier"),
    "eval": ("distill3d.cli.eval", "score finished runs against the world's ground truth"),
}
"""Command -> (module that registers it, one-line help)."""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the command named in ``argv`` (if any) registered in full and the others listed."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="distill3d", description="Turn diffusion models into 3D assets.")
    parser.add_argument("--version", action="version", version=f"distill3d {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(commands, help_text)
        else:
            commands.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except UserError as err:
        print(f"distill3d: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("distill3d: interrupted; partial outputs are kept and --resume continues.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
