"""Backgrounds of the renderers: a number, a colour, one colour per camera or an image per camera."""

from __future__ import annotations

import torch


def background_image(background, batch: int, ref: torch.Tensor) -> torch.Tensor:
    """A float, [3], [B, 3] or anything broadcastable to [B, H, W, 3] -> a tensor broadcastable to
    [B, H, W, 3], in ``ref``'s dtype and device."""
    bg = torch.as_tensor(background, dtype=ref.dtype, device=ref.device)
    if bg.ndim == 0:
        return bg.expand(3)
    if bg.ndim == 2 and bg.shape == (batch, 3):
        return bg[:, None, None, :]
    return bg
