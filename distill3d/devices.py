"""Which torch device to run on: one rule for every command and model loader."""

from __future__ import annotations

import os

import torch

from distill3d.errors import UserError


def launched_local_rank() -> int | None:
    """This process's ``LOCAL_RANK`` under torchrun / ``accelerate launch``; None when run alone."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto": CUDA when torch sees a GPU, else the CPU; otherwise the named device.

    Under a multi-process launcher (``LOCAL_RANK`` set) an unnumbered CUDA device means this process's
    own GPU, ``cuda:LOCAL_RANK`` (modulo the GPUs torch sees), which also becomes the current device: one
    process per GPU, as ``accelerate`` places the trainer's. Asking for CUDA on a machine without it is a
    ``UserError``, not a crash later on.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} was asked for but torch sees no CUDA device")
    local_rank = launched_local_rank()
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device
