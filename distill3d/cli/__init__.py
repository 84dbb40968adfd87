"""The ``distill3d`` command. Each topic module adds its sub-commands with ``register``.

A ``UserError`` (bad prompt, missing file, wrong option) is printed as one line and exits
with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from distill3d import __version__
from distill3d.cli import data as data_cli
from distill3d.cli import demo as demo_cli
from distill3d.cli import eval as eval_cli
from distill3d.cli import fit as fit_cli
from distill3d.cli import teacher as teacher_cli
from distill3d.cli import text_to_3d as text_to_3d_cli
from distill3d.cli import world as world_cli
from distill3d.errors import UserError

TOPICS = (demo_cli, world_cli, data_cli, fit_cli, teacher_cli, text_to_3d_cli, eval_cli)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="distill3d", description="Turn diffusion models into 3D assets.")
    parser.add_argument("--version", action="version", version=f"distill3d {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for topic in TOPICS:
        topic.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
