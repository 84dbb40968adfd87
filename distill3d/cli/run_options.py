"""What the commands of per-scene runs share: the run folder's options and the report at the end."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_run_folder_options(parser: argparse.ArgumentParser) -> None:
    """``--out RUN`` and ``--resume``."""
    parser.add_argument("--out", required=True, type=Path,
                        help="run folder (new or empty; an existing run with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


def print_run_summary(summary: dict, keys: tuple[str, ...]) -> None:
    """The ``keys`` of a run's summary as JSON, then one line per written output."""
    print(json.dumps({k: summary[k] for k in keys}, indent=2))
    for kind, path in summary.get("outputs", {}).items():
        print(f"{kind}: {path}")
