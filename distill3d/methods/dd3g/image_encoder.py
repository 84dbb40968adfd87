"""Image tokens of the input image II, the context of both phases of PEPD (DD3G Sec. III-B, Eq. 2).

    images [B, H, W, 3] in [0, 1]  ->  tokens [B, T, D],  T = (H / stride) * (W / stride)

The paper takes its image tokens from the teacher's (ImageDream's) image encoder. Ours is a small
patch encoder of its own: two strided convolutions (stride / 2, then 2), a learned position per
token and a LayerNorm, like the world multi-view teacher's ``InputImageTokens``
(``distill3d.world_models.networks``). ``teacher_init`` can start it from that encoder's weights
(``--pattern-from-teacher``), less the input camera's rays, which the teacher's encoder also reads
and the student is not given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class ImageEncoderConfig:
    """Sizes of the image encoder (the token width D is ``PEPDConfig.token_dim``)."""

    stride: int = 8  # one token per stride x stride pixels: 8 x 8 tokens for a 64 x 64 image
    hidden: int = 64  # channels after the first strided convolution


class ImageEncoder(nn.Module):
    """``forward(images [B, H, W, 3] in [0, 1]) -> image tokens [B, T, D]`` (module docstring)."""

    def __init__(self, config: ImageEncoderConfig, *, image_size: int, token_dim: int):
        super().__init__()
        if config.stride < 2 or config.stride % 2 or image_size % config.stride:
            raise ValueError(f"image_encoder.stride must be even and divide the image size {image_size}, "
                             f"got {config.stride}")
        self.image_size = image_size
        self.patchify = nn.Sequential(
            nn.Conv2d(3, config.hidden, config.stride // 2, stride=config.stride // 2), nn.SiLU(),
            nn.Conv2d(config.hidden, token_dim, 2, stride=2))
        self.num_tokens = (image_size // config.stride) ** 2
        self.position = nn.Parameter(torch.randn(self.num_tokens, token_dim) * 0.02)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must be [B, {self.image_size}, {self.image_size}, 3], got {tuple(images.shape)}")
        x = self.patchify(images.permute(0, 3, 1, 2) * 2 - 1)  # [B, D, H/s, W/s], pixels in [-1, 1]
        return self.norm(x.flatten(2).transpose(1, 2) + self.position)
