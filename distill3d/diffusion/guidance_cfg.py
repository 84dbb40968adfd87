"""Classifier-free guidance (Ho & Salimans 2022): combine conditional and unconditional outputs.

Standard form: ``out = uncond + s (cond - uncond)``; s = 1 is no guidance (the conditional
output alone), s = 0 the unconditional model, s > 1 stronger guidance (Stable Diffusion's 7.5,
DreamFusion's 100, Consistent3D's 50 -> 20).

Consistent3D's public code writes ``out = cond + s (cond - uncond)`` ("code" form), which
equals the standard form with s + 1: there s = 0 is no guidance.

Both forms are affine combinations (weights sum to 1), so guiding eps, v or x0 predictions
gives the same result once converted to x0 or eps at the same (x_t, t).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor

CfgForm = Literal["standard", "code"]


def apply_cfg(cond_out: Tensor, uncond_out: Tensor, scale: float, form: CfgForm = "standard") -> Tensor:
    """Guided output [B, ...] from conditional and unconditional outputs of the same shape."""
    if form == "standard":
        return uncond_out + scale * (cond_out - uncond_out)
    if form == "code":
        return cond_out + scale * (cond_out - uncond_out)
    raise ValueError(f"unknown CFG form {form!r}; expected 'standard' or 'code'")


def standard_scale(scale: float, form: CfgForm) -> float:
    """The standard-form scale equivalent to ``scale`` written in ``form``."""
    return scale + 1.0 if form == "code" else scale


def guided_prediction(
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    x_t: Tensor,
    t: Tensor,
    cond_emb: Tensor,
    uncond_emb: Tensor,
    scale: float,
) -> Tensor:
    """Run a network once (conditional only when scale == 1, else one doubled batch) and guide.

    predict: ``(x [N, ...], t [N], emb [N, ...]) -> prediction [N, ...]``.
    x_t [B, ...], t [B], cond_emb / uncond_emb [B, ...]; standard-form ``scale``.
    """
    if scale == 1.0:
        return predict(x_t, t, cond_emb)
    both = predict(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([uncond_emb, cond_emb]))
    uncond_out, cond_out = both.chunk(2)
    return apply_cfg(cond_out, uncond_out, scale)
