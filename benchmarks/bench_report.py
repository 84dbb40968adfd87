"""Shared by the benchmark scripts: print a result as JSON and, when asked, write it to a file."""

from __future__ import annotations

import json


def report(result: dict, out: str | None) -> None:
    """Print ``result`` as indented JSON; also write it to ``out`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
