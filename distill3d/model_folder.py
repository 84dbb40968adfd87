"""A trained model is a folder: ``config.json`` + ``model.safetensors``.

``config.json`` is the resolved training config of the run that made the weights (its
``kind`` says which model it is); ``model.safetensors`` holds the EMA weights. The models
that ship with distill3d live in ``distill3d/weights/<name>/`` and are found by name
(``distill3d/weights/README.md`` says how each one is reproduced). Loading needs no network.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open
from torch import nn

from distill3d.atomic_files import save_safetensors_atomic
from distill3d.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped models (package data)."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


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


def save_weights(module: nn.Module, path: Path, dtype: torch.dtype, metadata: dict[str, str] | None = None) -> Path:
    """Write a module's state dict as safetensors (floating tensors in ``dtype``), atomically."""
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in module.state_dict().items()}
    return save_safetensors_atomic(tensors, path, metadata)


def load_weights(module: nn.Module, path: Path, *, allow_missing: bool = False) -> dict[str, str]:
    """Load safetensors weights into ``module`` (cast to its dtypes); returns the file's metadata.

    ``allow_missing``: tensors of ``module`` that the file lacks keep their initial values (for
    ``--init-from`` weights of a model that a new part has since been added to); a tensor in the
    file that ``module`` lacks, or one of another shape, is an error either way.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no weights file {path}")
    state = load_file(str(path))
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if (missing and not allow_missing) or unexpected or reshaped:
        raise UserError(f"{path} does not match the model of its config.json "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]}, other shape {reshaped[:3]})")
    if missing:
        print(f"distill3d: {len(missing)} tensors not in {path} keep their initial values "
              f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=not missing)
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def export_folder(source: Path, target: Path) -> Path:
    """Copy a model folder's (or a training run's) config.json and model.safetensors into ``target``."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        tmp = target / (name + ".tmp")
        shutil.copyfile(Path(source) / name, tmp)
        os.replace(tmp, target / name)
    return target
