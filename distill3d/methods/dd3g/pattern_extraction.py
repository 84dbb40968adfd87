"""Pattern Extraction p1(II, N, C): NC under the guidance of the image -> pattern tokens (DD3G Sec. III-B).

"At both the input and output sides of the Pattern Extraction, we apply convolutional layers to
transform feature dimensions; in the intermediate part, we stack ResBlocks and
SpatialTransformer3D layers ... to extract the lifting pattern."

    nc      [B, V, C + 6, h, w]         noise and Pluecker rays of each view (``noise_cameras``)
    context [B, T, D]                    image tokens (``image_encoder``)
    out     [B, V * h' * w', D]          pattern tokens, view-major (view, row, column),
                                         h' = h / 2 ** (len(channels) - 1)

Layers, per view (the views share every weight and meet only in the 3D self-attention):
conv in (C + 6 -> channels[0], at h x w); one diffusers ``ResnetBlock2D`` per further entry of
``channels``, each halving the resolution (average pooling inside the block); then ``layers``
times a ResnetBlock2D and a ``SpatialTransformer3D`` at the token resolution; GroupNorm, SiLU and
conv out (channels[-1] -> D). The ResBlocks take no time embedding: the student has no timestep.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers.models.resnet import ResnetBlock2D
from torch import Tensor, nn

from distill3d.errors import UserError
from distill3d.methods.dd3g.spatial_transformer_3d import SpatialTransformer3D


@dataclass
class PatternExtractionConfig:
    """Sizes of Pattern Extraction (the input channels and the token width D come from ``PEPDConfig``)."""

    channels: tuple[int, ...] = (32, 64, 96, 96)  # conv in to the first; each next one halves h x w (64 -> 8)
    layers: int = 2  # ResBlock + SpatialTransformer3D pairs at the token resolution
    head_dim: int = 32  # attention head width of the SpatialTransformer3D layers
    norm_groups: int = 8  # GroupNorm groups of the ResBlocks and transformers (divides every channel count)
    activation: str = "gelu"  # feed-forward of the transformers: "gelu", or "geglu" (the teacher's, see teacher_init)

    def __post_init__(self) -> None:
        if self.activation not in ("gelu", "geglu"):
            raise UserError(f"pattern.activation must be gelu or geglu, got {self.activation!r}")

    @property
    def downsampling(self) -> int:
        """Factor from the noise's h x w to the token grid h' x w'."""
        return 2 ** (len(self.channels) - 1)


def res_block(in_channels: int, out_channels: int, groups: int, down: bool = False) -> ResnetBlock2D:
    """A diffusers ResBlock without time embedding; ``down`` halves the resolution."""
    return ResnetBlock2D(in_channels=in_channels, out_channels=out_channels, temb_channels=None, groups=groups,
                         down=down)


class PatternExtraction(nn.Module):
    """``forward(nc [B, V, C+6, h, w], image_tokens [B, T, D]) -> pattern tokens [B, V*h'*w', D]``."""

    def __init__(self, config: PatternExtractionConfig, *, in_channels: int, token_dim: int):
        super().__init__()
        ch = config.channels
        if not ch or any(c % config.norm_groups for c in ch):
            raise ValueError(f"pattern.channels {ch} must be non-empty multiples of norm_groups {config.norm_groups}")
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)  # DD3G Sec. III-B: conv on the input side
        self.down = nn.ModuleList(res_block(a, b, config.norm_groups, down=True) for a, b in zip(ch[:-1], ch[1:]))
        self.res_blocks = nn.ModuleList(res_block(ch[-1], ch[-1], config.norm_groups) for _ in range(config.layers))
        self.transformers = nn.ModuleList(  # DD3G Sec. III-B: stacked ResBlocks and SpatialTransformer3D
            SpatialTransformer3D(ch[-1], context_dim=token_dim, head_dim=config.head_dim, norm_groups=config.norm_groups,
                                 activation=config.activation)
            for _ in range(config.layers))
        self.norm_out = nn.GroupNorm(config.norm_groups, ch[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(ch[-1], token_dim, 3, padding=1)  # DD3G Sec. III-B: conv on the output side

    def forward(self, nc: Tensor, image_tokens: Tensor) -> Tensor:
        B, V, c_in, h, w = nc.shape
        x = self.conv_in(nc.reshape(B * V, c_in, h, w))
        for block in self.down:
            x = block(x, None)
        for block, transformer in zip(self.res_blocks, self.transformers):
            x = transformer(block(x, None), image_tokens, V)
        x = self.conv_out(nn.functional.silu(self.norm_out(x)))  # [B*V, D, h', w']
        D, hh, ww = x.shape[1:]
        return x.reshape(B, V, D, hh * ww).permute(0, 1, 3, 2).reshape(B, V * hh * ww, D)
