"""Files written whole or not at all: through a temporary sibling and an atomic rename.

An interrupted write leaves the previous file (or none), never half of one; the temporary
sibling (``<name>.tmp``) is overwritten by the next attempt.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from distill3d.errors import UserError


def temporary_sibling(path: str | Path) -> Path:
    """``dir/name.tmp.ext`` beside ``path`` (the extension kept, for writers that read it)."""
    path = Path(path)
    return path.with_name(path.stem + ".tmp" + path.suffix)


def output_with_temporary(path: str | Path, formats: tuple[str, ...], what: str) -> tuple[Path, str, Path]:
    """(path, format from its extension, temporary sibling to write before an atomic rename); the
    folder is created, and an extension outside ``formats`` is a ``UserError``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in formats:
        raise UserError(f"{what} format must be one of {', '.join(formats)}, got '{fmt}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, fmt, temporary_sibling(path)


def json_default(value: Any) -> Any:
    """JSON form of the values configs and summaries hold beside plain JSON types."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON with sorted keys."""
    path = Path(path)
    tmp = temporary_sibling(path)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=json_default) + "\n")
    os.replace(tmp, path)
    return path


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file (tensors must be contiguous)."""
    path = Path(path)
    tmp = temporary_sibling(path)
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path
