"""A run is a folder: resolved config, atomic checkpoints, outputs and summary.json.

Checkpoints are safetensors files (no pickles): module parameters, optimiser state tensors and
the RNG state are stored as tensors; everything else (step, optimiser hyper-parameters, the
structure of the optimiser state) travels as JSON in the file's metadata. A checkpoint is
written to a temporary file and renamed, so an interrupted run never leaves a half-written one.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from distill3d.errors import UserError

CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)


def save_safetensors_atomic(tensors: dict[str, torch.Tensor], path: Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


class RunDir:
    """The folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def prepare(self, config: Any, *, resume: bool) -> None:
        """Create the folder, or check that it may be resumed; write the resolved config.

        A folder with a checkpoint is only reused with ``resume``; resuming checks that the
        config is the one the run started with (``steps`` may change, to extend a run).
        """
        config_dict = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        config_dict = json.loads(json.dumps(config_dict, default=_json_default))
        if self.has_checkpoint() and not resume:
            raise UserError(f"{self.path} already holds a run; pass --resume to continue it "
                            "or choose another --out folder")
        if resume and self.config_path.exists():
            old = json.loads(self.config_path.read_text())
            changed = sorted(k for k in set(old) | set(config_dict)
                             if k != "steps" and old.get(k) != config_dict.get(k))
            if changed:
                raise UserError(f"cannot resume {self.path}: these settings differ from the original run: "
                                + ", ".join(f"{k} ({old.get(k)!r} -> {config_dict.get(k)!r})" for k in changed))
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_path, config_dict)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def read_config(self) -> dict:
        if not self.config_path.exists():
            raise UserError(f"{self.path} is not a distill3d run folder (no {CONFIG_NAME})")
        return json.loads(self.config_path.read_text())

    def write_summary(self, summary: dict) -> Path:
        write_json_atomic(self.path / SUMMARY_NAME, summary)
        return self.path / SUMMARY_NAME

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, step: int, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer] | None = None,
                        extra_tensors: dict[str, torch.Tensor] | None = None,
                        extra: dict | None = None) -> Path:
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {"step": step, "extra": extra or {}, "optimizers": {}}
        for name, module in modules.items():
            for key, value in module.state_dict().items():
                tensors[f"module.{name}.{key}"] = value.detach().contiguous().cpu()
        for name, opt in (optimizers or {}).items():
            state = opt.state_dict()
            structure: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
            for pid, pstate in state["state"].items():
                structure["state"][str(pid)] = {}
                for key, value in pstate.items():
                    if isinstance(value, torch.Tensor):
                        tensors[f"optim.{name}.{pid}.{key}"] = value.detach().contiguous().cpu()
                        structure["state"][str(pid)][key] = "tensor"
                    else:
                        structure["state"][str(pid)][key] = value
            meta["optimizers"][name] = structure
        for key, value in (extra_tensors or {}).items():
            tensors[f"extra.{key}"] = value.detach().contiguous().cpu()
        tensors["rng.torch"] = torch.get_rng_state()
        return save_safetensors_atomic(tensors, self.checkpoint_path,
                                       {"distill3d": json.dumps(meta, default=_json_default)})

    def load_checkpoint(self, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer] | None = None,
                        device: torch.device | str = "cpu") -> tuple[int, dict, dict[str, torch.Tensor]]:
        """Restore modules and optimisers in place. Returns (step, extra, extra_tensors).

        Modules whose parameter shapes change during training (densified Gaussians) must be
        resized by the caller first; ``checkpoint_shapes`` tells the stored shapes.
        """
        if not self.has_checkpoint():
            raise UserError(f"no checkpoint in {self.path} to resume from")
        with safe_open(str(self.checkpoint_path), framework="pt") as f:
            meta = json.loads(f.metadata()["distill3d"])
        tensors = load_file(str(self.checkpoint_path), device=str(device))
        for name, module in modules.items():
            prefix = f"module.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in (optimizers or {}).items():
            structure = meta["optimizers"][name]
            state = {}
            for pid, pstate in structure["state"].items():
                state[int(pid)] = {key: tensors[f"optim.{name}.{pid}.{key}"] if value == "tensor" else value
                                   for key, value in pstate.items()}
            opt.load_state_dict({"state": state, "param_groups": structure["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"].cpu())
        extra_tensors = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
        return int(meta["step"]), meta["extra"], extra_tensors

    def checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the stored module tensors, keyed like ``module.<name>.<param>``."""
        with safe_open(str(self.checkpoint_path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("module.")}
