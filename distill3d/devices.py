"""Which torch device to run on: one rule for every command and model loader."""

from __future__ import annotations

import torch

from distill3d.errors import UserError


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto": CUDA when torch sees a GPU, else the CPU; otherwise the named device.

    Asking for CUDA on a machine without it is a ``UserError``, not a crash later on.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} was asked for but torch sees no CUDA device")
    return device
