"""SpatialTransformer3D: the attention layer of Pattern Extraction (DD3G Sec. III-B).

"SpatialTransformer3D layers, which consist of 3SA, CA, and the Feed-Forward (FF) layer": the
3D self-attention (3SA) of MVDream attends over the tokens of all V views of an object jointly,
so the n sub-random variables of NC interact; cross-attention (CA) injects the image tokens.

    x       [B*V, c, h, w]   feature maps, the V views of object b in rows b*V .. b*V+V-1
    context [B, T, Dc]       image tokens
    out     [B*V, c, h, w]   x plus the transformer's update

Built like the latent-diffusion SpatialTransformer: GroupNorm, a linear projection in, one
diffusers ``BasicTransformerBlock`` (self-attention, cross-attention, feed-forward, each with
its LayerNorm and residual) on the [B, V*h*w, c] token set, a projection out and a residual.
No positional embedding is added: every token already carries its pixel's ray (the Pluecker
channels of NC), which tells the views and the pixels apart.
"""

from __future__ import annotations

from diffusers.models.attention import BasicTransformerBlock
from torch import Tensor, nn


class SpatialTransformer3D(nn.Module):
    """3SA over all views jointly + CA to the image tokens + FF (module docstring)."""

    def __init__(self, channels: int, *, context_dim: int, head_dim: int, norm_groups: int,
                 activation: str = "gelu"):
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels {channels} must be a multiple of head_dim {head_dim}")
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.block = BasicTransformerBlock(channels, channels // head_dim, head_dim, cross_attention_dim=context_dim,
                                           activation_fn=activation)  # FF: "gelu", or "geglu" as diffusers' U-Nets
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor, num_views: int) -> Tensor:
        BV, c, h, w = x.shape
        B = BV // num_views
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(B, num_views * h * w, c)  # DD3G Sec. III-B: 3SA joins the views
        tokens = self.block(self.proj_in(tokens), encoder_hidden_states=context)  # 3SA, CA to II, FF
        update = self.proj_out(tokens).reshape(BV, h, w, c).permute(0, 3, 1, 2)
        return x + update
