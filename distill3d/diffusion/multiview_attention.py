"""Cross-view self-attention for a diffusers U-Net: the views of one object attend to each other.

Multi-view diffusion models (MVDream, ImageDream) turn a 2D U-Net into a multi-view one by
letting every self-attention layer see all views of an object at once: the batch
[B * V, HW, C] (V consecutive views per object) is read as [B, V * HW, C], attended, and
split back. Cross-attention layers (attn2) and everything else stay per view.

``set_multiview_attention(unet, V)`` installs ``MultiViewAttnProcessor`` on every ``attn1``
of a ``UNet2DConditionModel`` (its transformer blocks' self-attention); with V = 1 it is
ordinary attention.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import Tensor


class MultiViewAttnProcessor:
    """Self-attention over the ``num_views`` consecutive batch items of each object.

    hidden_states [B * V, N, C] (or [B * V, C, H, W]) -> same shape; the core attention is
    diffusers' ``AttnProcessor2_0`` applied to [B, V * N, C].
    """

    def __init__(self, num_views: int):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.num_views = int(num_views)
        self._attend = AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, **kwargs) -> Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("MultiViewAttnProcessor is for self-attention (attn1) without a mask")
        spatial = hidden_states.ndim == 4
        if spatial:
            bv, c, h, w = hidden_states.shape
            hidden_states = hidden_states.reshape(bv, c, h * w).transpose(1, 2)
        bv, n, c = hidden_states.shape
        if bv % self.num_views:
            raise ValueError(f"batch {bv} is not a multiple of num_views {self.num_views}")
        joined = hidden_states.reshape(bv // self.num_views, self.num_views * n, c)
        out = self._attend(attn, joined, temb=temb).reshape(bv, n, c)
        if spatial:
            out = out.transpose(1, 2).reshape(bv, c, h, w)
        return out


def self_attention_names(unet: torch.nn.Module) -> list[str]:
    """Processor keys of the U-Net's self-attention layers (``...attn1.processor``)."""
    return [name for name in unet.attn_processors if name.endswith("attn1.processor")]


def set_multiview_attention(unet: torch.nn.Module, num_views: int) -> int:
    """Join ``num_views`` consecutive batch items in every attn1 of ``unet``; returns the layer count.

    Other processors (cross-attention) are kept as they are.
    """
    processors = dict(unet.attn_processors)
    names = self_attention_names(unet)
    if not names:
        raise ValueError("the U-Net has no self-attention (attn1) layers; use cross-attention blocks")
    for name in names:
        processors[name] = MultiViewAttnProcessor(num_views)
    unet.set_attn_processor(processors)
    return len(names)


def remove_multiview_attention(unet: torch.nn.Module) -> None:
    """Back to per-view self-attention (diffusers' ``AttnProcessor2_0`` everywhere)."""
    unet.set_attn_processor(AttnProcessor2_0())


def multiview_attention_views(unet: torch.nn.Module) -> int | None:
    """The ``num_views`` installed on the U-Net's attn1 layers, or None when none is."""
    views = {p.num_views for name, p in unet.attn_processors.items()
             if name.endswith("attn1.processor") and isinstance(p, MultiViewAttnProcessor)}
    return views.pop() if len(views) == 1 else None
