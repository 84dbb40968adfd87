"""HoloFusion's top-k patch-remix loss (HoloFusion Sec. 3.3.2, Eq. 8 taken per patch).

Eq. 8 fits a render to the closest of K super-resolved samples of its camera,
``min_{I in I_C} || I - R(V, C) ||^2``; "patch remix" takes that minimum for every 16x16 patch on
its own, so that each patch of the render may follow another sample (the samples "remix").

For a render R [B, H, W, 3] and a bank I [B, K, H, W, 3] the image is cut into patches of p x p
pixels from the top-left corner; when H or W is not a multiple of p the last row / column of
patches is smaller (the image is not padded with content, resized or cropped). Per patch P

    e_k(P) = sum_{pixels in P, channels} (I_k - R)^2,      loss = sum_P min_k e_k(P) / (B H W 3),

so every pixel weighs the same whatever the size of its patch, and with K = 1 the loss is exactly
the mean squared error over the images. The bank is a fixed target: gradients reach the render only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["patch_choice", "patch_errors", "patch_remix_loss"]


def patch_errors(render: Tensor, bank: Tensor, patch_size: int = 16) -> Tensor:
    """Summed squared error e_k(P) of every patch P to every bank sample k -> [B, K, nh, nw].

    render [B, H, W, 3], bank [B, K, H, W, 3] (treated as constant); nh = ceil(H / p), nw = ceil(W / p).
    """
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    if bank.ndim != 5 or render.ndim != 4 or bank.shape[0] != render.shape[0] or bank.shape[2:] != render.shape[1:]:
        raise ValueError(f"bank must be [B, K, H, W, C] around a render [B, H, W, C], got {tuple(bank.shape)} "
                         f"and {tuple(render.shape)}")
    B, K, H, W, _ = bank.shape
    p = int(patch_size)
    nh, nw = math.ceil(H / p), math.ceil(W / p)
    per_pixel = (bank.detach().to(render.dtype) - render[:, None]).square().sum(dim=-1)   # [B, K, H, W]
    # zero error in the padding, so the last (partial) patches sum their real pixels only
    per_pixel = F.pad(per_pixel, (0, nw * p - W, 0, nh * p - H))
    return per_pixel.reshape(B, K, nh, p, nw, p).sum(dim=(3, 5))


def patch_choice(render: Tensor, bank: Tensor, patch_size: int = 16) -> Tensor:
    """Index [B, nh, nw] (long) of the bank sample each patch follows: argmin_k e_k(P)."""
    with torch.no_grad():
        return patch_errors(render, bank, patch_size).argmin(dim=1)


def patch_remix_loss(render: Tensor, bank: Tensor, patch_size: int = 16) -> tuple[Tensor, dict[str, float]]:
    """HoloFusion Eq. 8 per patch: render [B, H, W, 3], bank [B, K, H, W, 3] -> (scalar loss, stats).

    stats: ``loss``, ``share_<k>`` the share of patches that follow bank sample k, and ``gap``: per patch,
    the error averaged over the K samples minus the error to the closest one, summed and divided like the
    loss (how far apart the samples are where the render stands; 0 for K = 1).
    """
    errors = patch_errors(render, bank, patch_size)                        # [B, K, nh, nw]
    best, choice = errors.min(dim=1)                                       # HoloFusion Eq. 8, per patch
    pixels = render.shape[0] * render.shape[1] * render.shape[2] * render.shape[3]
    loss = best.sum() / pixels
    K = bank.shape[1]
    shares = torch.bincount(choice.flatten(), minlength=K).float() / choice.numel()
    stats = {"loss": float(loss.detach()),
             "gap": float((errors.mean(dim=1) - best).sum().detach()) / pixels,
             **{f"share_{k}": float(shares[k]) for k in range(K)}}
    return loss, stats
