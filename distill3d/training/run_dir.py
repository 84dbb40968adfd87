"""A run is a folder: resolved config, atomic checkpoints, outputs and summary.json.

``config.json`` records the command that made the run (``method``), the package version and
the resolved config. Checkpoints are safetensors files (no pickles): module parameters,
optimiser state tensors and the RNG state are stored as tensors; everything else (step,
optimiser hyper-parameters, the structure of the optimiser state) travels as JSON in the
file's metadata. A checkpoint is written to a temporary file and renamed; the one it replaces
is kept as ``checkpoint.previous.safetensors``, so a damaged checkpoint costs one interval:
resuming falls back to the previous one and says so.

Every way a folder can be the wrong one (a file, a folder that does not exist with
``resume``, a folder of other files, a run of another command, other settings) is a
``UserError`` raised by ``prepare`` before any work.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from distill3d import __version__
from distill3d.atomic_files import json_default, temporary_sibling, write_json_atomic
from distill3d.configs import config_to_dict
from distill3d.errors import UserError

CHECKPOINT_NAME = "checkpoint.safetensors"
PREVIOUS_CHECKPOINT_NAME = "checkpoint.previous.safetensors"
DAMAGED_CHECKPOINT_NAME = "checkpoint.damaged.safetensors"
CONFIG_NAME = "config.json"
SUMMARY_NAME = "summary.json"
RUN_KEYS = ("method", "distill3d_version")
"""Keys config.json holds beside the config's own fields."""


def checkpoint_problem(path: Path) -> str | None:
    """Why the safetensors file at ``path`` cannot be read (empty, truncated, no header), or None."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "it is empty"
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "it is truncated"
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                return "it is truncated"
            header = json.loads(f.read(header_len))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        if 8 + header_len + max(ends, default=0) > size:
            return "it is truncated"
        if "distill3d" not in (header.get("__metadata__") or {}):
            return "it is not a distill3d checkpoint"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        return f"it cannot be read ({error})"
    return None


class RunDir:
    """The folder of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ------------------------------------------------------------------ the folder
    def prepare(self, config: Any, *, method: str, resume: bool) -> bool:
        """Check the folder, create it and write the resolved config; True when a checkpoint is resumed.

        A folder with a checkpoint is only reused with ``resume``; resuming checks that the run
        was made by ``method`` with the same config (``steps`` may change, to extend a run).
        """
        config_dict = config_to_dict(config) if not isinstance(config, dict) else dict(config)
        self.check(method=method, resume=resume, config_dict=config_dict)
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.config_path, {"method": method, "distill3d_version": __version__, **config_dict})
        return resume and self.has_checkpoint()

    def check(self, *, method: str, resume: bool, config_dict: dict | None = None) -> None:
        """The checks of ``prepare``, with nothing written."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise UserError(f"{out} is a file; give --out a folder for the run")
        if resume:
            if not out.exists():
                raise UserError(f"nothing to resume: {out} does not exist; leave out --resume to start a new run")
            if not self.config_path.is_file():
                raise UserError(f"nothing to resume: {out} is not a distill3d run folder (no {CONFIG_NAME})")
            old = self.read_config()
            if old.get("method", method) != method:
                raise UserError(f"{out} holds a `distill3d {old['method']}` run, not a `distill3d {method}` run")
            if config_dict is not None:
                changed = sorted(k for k in set(old) | set(config_dict)
                                 if k not in RUN_KEYS + ("steps",) and old.get(k) != config_dict.get(k))
                if changed:
                    raise UserError(f"cannot resume {out}: these settings differ from the original run: "
                                    + ", ".join(f"{k} ({old.get(k)!r} -> {config_dict.get(k)!r})" for k in changed))
            self.usable_checkpoint()
            return
        if self.has_checkpoint() or self.previous_checkpoint_path.exists():
            raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out folder")
        if out.is_dir() and any(out.iterdir()) and not self.config_path.is_file():
            raise UserError(f"{out} is not empty and holds no distill3d run; choose a new or empty --out folder")

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def previous_checkpoint_path(self) -> Path:
        return self.path / PREVIOUS_CHECKPOINT_NAME

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.exists()

    def read_config(self) -> dict:
        """config.json as written by ``prepare`` (the config's fields, ``method`` and ``distill3d_version``)."""
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a distill3d run folder (no {CONFIG_NAME})")
        try:
            return json.loads(self.config_path.read_text())
        except json.JSONDecodeError as error:
            raise UserError(f"{self.config_path} is damaged ({error}); the run cannot be read") from None

    def method(self) -> str | None:
        """The command that made the run (``fit``, ``text-to-3d``, ...), None for a run of an older version."""
        return self.read_config().get("method")

    def write_summary(self, summary: dict) -> Path:
        write_json_atomic(self.path / SUMMARY_NAME, summary)
        return self.path / SUMMARY_NAME

    # ------------------------------------------------------------------ checkpoints
    def usable_checkpoint(self) -> Path | None:
        """The checkpoint to resume from (None when there is none yet).

        A damaged checkpoint (empty, truncated) is set aside as ``checkpoint.damaged.safetensors``
        and the previous one takes its place, with a warning; with no previous one to fall back on
        it is a ``UserError``.
        """
        current, previous = self.checkpoint_path, self.previous_checkpoint_path
        if not current.exists() and not previous.exists():
            return None
        problem = checkpoint_problem(current) if current.exists() else "it is missing"
        if problem is None:
            return current
        if previous.exists() and checkpoint_problem(previous) is None:
            if current.exists():
                os.replace(current, self.path / DAMAGED_CHECKPOINT_NAME)
            os.replace(previous, current)
            print(f"distill3d: warning: {current} could not be used ({problem}); resuming from the previous "
                  f"checkpoint, step {self.checkpoint_step()} (the damaged file is kept as {DAMAGED_CHECKPOINT_NAME})",
                  file=sys.stderr)
            return current
        raise UserError(f"cannot resume {self.path}: {current.name} {problem.removeprefix('it ')} and there is no "
                        "earlier checkpoint to fall back on; start the run afresh in a new --out folder")

    def checkpoint_step(self) -> int:
        with safe_open(str(self.checkpoint_path), framework="pt") as f:
            return int(json.loads(f.metadata()["distill3d"])["step"])

    def save_checkpoint(self, step: int, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer] | None = None,
                        extra_tensors: dict[str, torch.Tensor] | None = None,
                        extra: dict | None = None) -> Path:
        """Write the checkpoint of ``step``; the one it replaces becomes ``checkpoint.previous``."""
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
        fresh = temporary_sibling(self.checkpoint_path)
        save_file(tensors, str(fresh), metadata={"distill3d": json.dumps(meta, default=json_default)})
        if self.checkpoint_path.exists():
            os.replace(self.checkpoint_path, self.previous_checkpoint_path)
        os.replace(fresh, self.checkpoint_path)
        return self.checkpoint_path

    def load_checkpoint(self, modules: dict[str, torch.nn.Module],
                        optimizers: dict[str, torch.optim.Optimizer] | None = None,
                        device: torch.device | str = "cpu") -> tuple[int, dict, dict[str, torch.Tensor]]:
        """Restore modules and optimisers in place. Returns (step, extra, extra_tensors).

        Modules whose parameter shapes change during training (densified Gaussians) must be
        resized by the caller first; ``checkpoint_shapes`` tells the stored shapes.
        """
        if self.usable_checkpoint() is None:
            raise UserError(f"no checkpoint in {self.path} to resume from")
        with safe_open(str(self.checkpoint_path), framework="pt") as f:
            meta = json.loads(f.metadata()["distill3d"])
        device = torch.device(device)  # safetensors takes "cpu", not the "cpu:0" of accelerate's CPU processes
        tensors = load_file(str(self.checkpoint_path), device="cpu" if device.type == "cpu" else str(device))
        for name, module in modules.items():
            prefix = f"module.{name}."
            try:
                module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            except RuntimeError as error:
                raise UserError(f"{self.checkpoint_path} does not fit the model of this config "
                                f"({str(error).splitlines()[0]})") from None
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
        if self.usable_checkpoint() is None:
            raise UserError(f"no checkpoint in {self.path} to read")
        with safe_open(str(self.checkpoint_path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("module.")}
