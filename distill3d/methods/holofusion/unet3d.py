"""The 3D denoiser D_theta of HoloDiffusion / HoloFusion (Sec. 3.2, Eq. 6): a 3D U-Net on voxel grids.

``D_theta(V_t [B, d, S, S, S], Vbar [B, c, S, S, S], t [B]) -> V_0 [B, d, S, S, S]`` predicts the
clean grid (x0-prediction, HoloDiffusion's ``START_X``). The feature volume Vbar of the source
views is a separate input: it is concatenated to V_t along channels before the stem, never summed
with it (HoloFusion Sec. 3.2, last paragraph: keeping them apart "leads to more stable training").
The output passes through tanh, so clean grids live in [-1, 1] as HoloDiffusion keeps them
(``clip_denoised``): without a bound the network could grow its features until the re-noising of
the double denoising no longer disturbs them.

Body: a sinusoidal embedding of t through a 2-layer MLP, added to every residual block; residual
blocks of GroupNorm, SiLU and 3x3x3 convolutions; a strided convolution down and a nearest
upsampling plus convolution up between levels; skips from each down block to its up block
(concatenated); self-attention over the voxels of the lowest level, between two residual blocks.

Sizes (``UNet3DConfig``): HoloDiffusion's released config is far larger (64 base channels,
multipliers 1, 1, 2, 4, 8, two blocks per level, 16^3 grids). The world's objects are
Lambertian and smooth, so the default is three levels of 32, 64, 64 channels at S = 32
(32^3, 16^3, 8^3; attention over 512 voxels), one block per level down and two up: 2.95 M
parameters with d = 32 and the default conditioning, 11.3 MiB in float32 (5.6 MiB as the float16
of a shipped model), which leaves room for the decoder and the 2D super-resolution model under
16 MiB. A last level of 128 channels would make it 7.1 M (27 MiB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet3D", "UNet3DConfig", "timestep_embedding"]


@dataclass
class UNet3DConfig:
    """Widths and depth of the 3D U-Net (see the module docstring for the sizes chosen)."""

    channels: tuple[int, ...] = (32, 64, 64)  # one level per width; each level after the first halves S
    blocks_per_level: int = 1     # residual blocks per level on the way down (one more on the way up)
    attention: bool = True        # self-attention over the voxels of the lowest level
    attention_heads: int = 4
    norm_groups: int = 8          # GroupNorm groups (must divide every width)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.channels or any(c % self.norm_groups for c in self.channels):
            raise ValueError(f"every width of {self.channels} must be divisible by norm_groups={self.norm_groups}")
        if self.blocks_per_level < 1:
            raise ValueError("blocks_per_level must be >= 1")

    @property
    def downsampling(self) -> int:
        """The factor by which the lowest level is smaller: S must be a multiple of it."""
        return 2 ** (len(self.channels) - 1)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] of timesteps t [B] (Transformer / DDPM positional encoding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


class ResBlock3D(nn.Module):
    """GroupNorm-SiLU-conv twice, the time embedding added in between, plus a (1x1x1) skip."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv3d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(time_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv3d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity (guided diffusion's zero_module)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention3D(nn.Module):
    """Multi-head self-attention over the voxels of a grid [B, C, s, s, s], pre-normed, residual."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention: {channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C = x.shape[:2]
        q, k, v = self.qkv(self.norm(x).reshape(B, C, -1)).reshape(B, 3, self.heads, C // self.heads, -1).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(B, C, -1)).reshape(x.shape)


class UNet3D(nn.Module):
    """D_theta: (V_t [B, d, S, S, S], Vbar [B, c, S, S, S], t [B]) -> V_0 [B, d, S, S, S] in [-1, 1]."""

    def __init__(self, config: UNet3DConfig, feature_dim: int, cond_channels: int):
        super().__init__()
        self.config, self.feature_dim, self.cond_channels = config, int(feature_dim), int(cond_channels)
        ch, g = config.channels, config.norm_groups
        time_dim = 4 * ch[0]
        self.time_mlp = nn.Sequential(nn.Linear(ch[0], time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.stem = nn.Conv3d(self.feature_dim + self.cond_channels, ch[0], 3, padding=1)  # [V_t, Vbar] concatenated

        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips, c = [ch[0]], ch[0]
        for level, width in enumerate(ch):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(ResBlock3D(c, width, time_dim, g, config.dropout))
                c = width
                skips.append(c)
            self.down.append(blocks)
            if level < len(ch) - 1:
                self.downsample.append(nn.Conv3d(c, c, 3, stride=2, padding=1))
                skips.append(c)

        self.mid1 = ResBlock3D(c, c, time_dim, g, config.dropout)
        self.mid_attn = Attention3D(c, config.attention_heads, g) if config.attention else nn.Identity()
        self.mid2 = ResBlock3D(c, c, time_dim, g, config.dropout)

        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for level in reversed(range(len(ch))):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level + 1):
                blocks.append(ResBlock3D(c + skips.pop(), ch[level], time_dim, g, config.dropout))
                c = ch[level]
            self.up.append(blocks)
            if level > 0:
                self.upsample.append(nn.Conv3d(c, c, 3, padding=1))
        self.out_norm = nn.GroupNorm(g, c)
        self.out_conv = nn.Conv3d(c, self.feature_dim, 3, padding=1)

    def forward(self, v_t: Tensor, v_bar: Tensor, t: Tensor) -> Tensor:
        S = v_t.shape[-1]
        if S % self.config.downsampling:
            raise ValueError(f"grid size {S} is not a multiple of the U-Net's downsampling {self.config.downsampling}")
        if v_bar.shape[0] != v_t.shape[0] or v_bar.shape[1] != self.cond_channels or v_bar.shape[2:] != v_t.shape[2:]:
            raise ValueError(f"Vbar must be [B, {self.cond_channels}, {S}, {S}, {S}], got {tuple(v_bar.shape)}")
        t = torch.as_tensor(t, device=v_t.device).reshape(-1).expand(v_t.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.config.channels[0]).to(v_t.dtype))
        h = self.stem(torch.cat([v_t, v_bar.to(v_t.dtype)], dim=1))
        hs = [h]
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                hs.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.out_conv(F.silu(self.out_norm(h))))
