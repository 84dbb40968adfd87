"""A trained world model is a folder: ``config.json`` + ``model.safetensors``.

``config.json`` is the resolved training config of the run that made the weights (its
``kind`` says which model it is); ``model.safetensors`` holds the EMA weights. The models
that ship with distill3d live in ``distill3d/weights/<name>/`` and are found by name
(``distill3d/weights/README.md`` says how each one is reproduced). Loading needs no network.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from distill3d.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
"""Folder of the shipped models (package data)."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

T = TypeVar("T")


def shipped_names() -> list[str]:
    """Names of the model folders shipped in the package."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def resolve_model_folder(name_or_path: str | Path, kind: str) -> tuple[Path, dict]:
    """The folder of a model given by path or shipped name, checked to hold a ``kind`` model.

    Returns (folder, config dict). Raises ``UserError`` saying what is missing and how to get it.
    """
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        shipped = WEIGHTS_DIR / str(name_or_path)
        if "/" in str(name_or_path) or not shipped.is_dir():
            raise UserError(f"no model folder {name_or_path!r}: give a folder holding {CONFIG_FILE} and "
                            f"{WEIGHTS_FILE}, or a shipped name ({', '.join(shipped_names()) or 'none shipped'}; "
                            "distill3d/weights/README.md says how each is trained)")
        path = shipped
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise UserError(f"{path} lacks {CONFIG_FILE} or {WEIGHTS_FILE}; shipped weights are reproduced with the "
                        "commands in distill3d/weights/README.md, a training run folder holds both once it saved")
    config = json.loads(config_path.read_text())
    if config.get("kind") != kind:
        raise UserError(f"{path} holds a {config.get('kind')!r} model, not a {kind!r} model")
    return path, config


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) config dataclass from its ``asdict`` / JSON form (lists -> tuples)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)
