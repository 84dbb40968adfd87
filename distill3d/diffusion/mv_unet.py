"""MVDream's multi-view UNet (and ImageDream's, with image-prompt tokens), written for distill3d.

The network of MVDream (Shi et al. 2023) is Stable Diffusion 2.1's LDM UNet with two changes:
- **3D self-attention**: every transformer block's self-attention runs over the tokens of all F
  frames (views) of one object together, [B, F*h*w, C], so the views see each other;
- **camera embedding**: a flattened 4x4 camera-to-world matrix [16] per frame goes through an MLP
  and is added to the timestep embedding.

ImageDream (Wang & Shi 2023) adds an image prompt: CLIP ViT-H image tokens [257, 1280] are
resampled by a Perceiver (``Resampler``) into ``ip_dim`` tokens appended to the text context,
which every cross-attention attends with its own key/value projections (``to_k_ip``,
``to_v_ip``); and one extra frame per object (the last of each group of F) carries the VAE
latent of the input image (``ip_img``) with an all-zero camera.

Parameter names and config keys are those of the public diffusers port (ashawkey's
mvdream_diffusers, ``MultiViewUNetModel``; its ``unet/config.json`` holds the LDM
``unet_config.params``), so its ``diffusion_pytorch_model.safetensors`` loads with strict=True.
Keys of that config which change nothing here (``use_checkpoint``, ``use_fp16``, ``legacy``,
...) are ignored; options the released checkpoints never use (class labels, codebooks, 1D/3D
convolutions, resblock up/down sampling) raise a ``UserError``.
Layers are initialised with torch's defaults (the original zero-initialises some output layers);
the module is meant to receive trained weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill3d.configs import config_from_dict
from distill3d.errors import UserError

IMAGE_TOKEN_DIM = 1280
"""Width of ImageDream's image tokens: the hidden size of CLIP ViT-H/14 (fixed in the original)."""
CAMERA_DIM = 16
"""A flattened 4x4 camera-to-world matrix."""


@dataclass
class MultiViewUNetConfig:
    """The keys of ``unet/config.json`` (LDM ``unet_config.params``); defaults: MVDream sd-v2.1-base-4view."""

    image_size: int = 32  # latent side (256 px / 8); the original ignores it, we take native size from it
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    attention_resolutions: tuple[int, ...] = (4, 2, 1)  # downsampling factors with a transformer
    num_res_blocks: int | tuple[int, ...] = 2
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_heads: int = -1
    num_head_channels: int = 64  # heads = channels // 64 (overrides num_heads when set)
    transformer_depth: int = 1
    context_dim: int = 1024  # OpenCLIP ViT-H text width (SD 2.1)
    camera_dim: int | None = CAMERA_DIM
    ip_dim: int = 0  # ImageDream: 16 image-prompt tokens; 0 for MVDream
    ip_weight: float = 1.0  # weight of the image-prompt attention added to the text attention
    dropout: float = 0.0
    conv_resample: bool = True
    use_scale_shift_norm: bool = False
    num_attention_blocks: tuple[int, ...] | None = None
    dims: int = 2
    num_classes: int | str | None = None
    resblock_updown: bool = False
    n_embed: int | None = None

    def __post_init__(self) -> None:
        if self.dims != 2 or self.num_classes is not None or self.resblock_updown or self.n_embed is not None:
            raise UserError("this multi-view UNet supports 2D convolutions without class labels, codebooks or "
                            "resblock up/down sampling (as MVDream and ImageDream ship)")
        if self.num_heads == -1 and self.num_head_channels == -1:
            raise UserError("the multi-view UNet config needs num_heads or num_head_channels")
        if isinstance(self.num_res_blocks, int):
            self.num_res_blocks = (self.num_res_blocks,) * len(self.channel_mult)
        if len(self.num_res_blocks) != len(self.channel_mult):
            raise UserError("num_res_blocks needs one entry per channel_mult level")

    @classmethod
    def from_dict(cls, raw: dict) -> MultiViewUNetConfig:
        """From ``unet/config.json`` (diffusers' ``_class_name`` etc. and unused LDM keys are ignored)."""
        return config_from_dict(cls, raw)

    def to_dict(self) -> dict:
        """The config as written to ``unet/config.json`` (lists, no private keys)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def heads(self, channels: int) -> tuple[int, int]:
        """(heads, head width) of a transformer at ``channels``."""
        if self.num_head_channels == -1:
            return self.num_heads, channels // self.num_heads
        return channels // self.num_head_channels, self.num_head_channels


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [N, dim] of timesteps t [N] (cosines first, then sines; DDPM / LDM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return F.pad(emb, (0, dim % 2))


def _split_heads(x: Tensor, heads: int) -> Tensor:
    """[B, L, heads*d] -> [B, heads, L, d]."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _attend(q: Tensor, k: Tensor, v: Tensor, heads: int) -> Tensor:
    """Softmax attention with 1/sqrt(d) scaling: q [B, Lq, heads*d], k, v [B, Lk, heads*d] -> [B, Lq, heads*d]."""
    out = F.scaled_dot_product_attention(_split_heads(q, heads), _split_heads(k, heads), _split_heads(v, heads))
    return out.transpose(1, 2).flatten(2)


class Attention(nn.Module):
    """Self- or cross-attention; with ``ip_tokens`` > 0 the last ip_tokens context tokens (ImageDream's
    image prompt) are attended separately and added with weight ``ip_weight``."""

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int, dropout: float = 0.0,
                 ip_tokens: int = 0, ip_weight: float = 1.0):
        super().__init__()
        inner, context_dim = heads * dim_head, context_dim or query_dim
        self.heads, self.ip_tokens, self.ip_weight = heads, ip_tokens, ip_weight
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        if ip_tokens > 0:
            self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
            self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x [B, L, C], context [B, M, D] (None: self-attention) -> [B, L, C]."""
        context = x if context is None else context
        q = self.to_q(x)
        if self.ip_tokens > 0:
            text, image = context[:, :-self.ip_tokens], context[:, -self.ip_tokens:]
            out = _attend(q, self.to_k(text), self.to_v(text), self.heads)
            out = out + self.ip_weight * _attend(q, self.to_k_ip(image), self.to_v_ip(image), self.heads)
        else:
            out = _attend(q, self.to_k(context), self.to_v(context), self.heads)
        return self.to_out(out)


class GEGLU(nn.Module):
    """Linear to 2*dim_out, half of it gated by GELU of the other half."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward, 4x wide."""

    def __init__(self, dim: int, dropout: float = 0.0, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(dropout), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock3D(nn.Module):
    """Self-attention across the F frames of each object (MVDream's 3D attention), cross-attention to
    the context per frame, feed-forward; pre-LayerNorm residuals."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, dropout: float = 0.0,
                 ip_tokens: int = 0, ip_weight: float = 1.0):
        super().__init__()
        self.attn1 = Attention(dim, None, heads, dim_head, dropout)
        self.ff = FeedForward(dim, dropout)
        self.attn2 = Attention(dim, context_dim, heads, dim_head, dropout, ip_tokens, ip_weight)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        """x [B*F, L, C], context [B*F, M, D] -> [B*F, L, C]."""
        BF, L, C = x.shape
        joint = x.reshape(BF // num_frames, num_frames * L, C)  # [B, F*L, C]: all views of one object
        x = (self.attn1(self.norm1(joint)) + joint).reshape(BF, L, C)
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer3D(nn.Module):
    """GroupNorm, linear in, ``depth`` 3D transformer blocks, linear out, residual; on [B*F, C, h, w]."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, depth: int = 1,
                 dropout: float = 0.0, ip_tokens: int = 0, ip_weight: float = 1.0):
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock3D(inner, heads, dim_head, context_dim, dropout, ip_tokens, ip_weight) for _ in range(depth))
        self.proj_out = nn.Linear(channels, inner)  # sic (channels == inner in every released model)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        """x [B*F, C, h, w], context [B*F, M, D] -> [B*F, C, h, w]."""
        _, _, h, w = x.shape
        y = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))  # [B*F, h*w, C]
        for block in self.transformer_blocks:
            y = block(y, context, num_frames)
        return self.proj_out(y).transpose(1, 2).unflatten(2, (h, w)) + x


class PerceiverAttention(nn.Module):
    """Latent queries attend the image tokens and themselves (IP-Adapter Plus / ImageDream)."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: Tensor, latents: Tensor) -> Tensor:
        """x [B, N, dim] image features, latents [B, Q, dim] -> [B, Q, dim]."""
        x, latents = self.norm1(x), self.norm2(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        return self.to_out(_attend(self.to_q(latents), k, v, self.heads))


class Resampler(nn.Module):
    """CLIP image tokens [B, N, 1280] -> ``num_queries`` context tokens [B, Q, output_dim] (ImageDream)."""

    def __init__(self, dim: int, depth: int, dim_head: int, heads: int, num_queries: int, embedding_dim: int,
                 output_dim: int, ff_mult: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim ** 0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads),
                           nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * ff_mult, bias=False), nn.GELU(),
                                         nn.Linear(dim * ff_mult, dim, bias=False))])
            for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + timestep/camera embedding (added, or FiLM with use_scale_shift_norm),
    GroupNorm-SiLU-dropout-conv, + skip (1x1 conv when the width changes)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, dropout: float = 0.0,
                 use_scale_shift_norm: bool = False):
        super().__init__()
        out = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out if use_scale_shift_norm else out))
        self.out_layers = nn.Sequential(nn.GroupNorm(32, out), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection = nn.Identity() if out == channels else nn.Conv2d(channels, out, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x [N, C, h, w], emb [N, E] -> [N, C_out, h, w]."""
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class Downsample(nn.Module):
    """Stride-2 3x3 conv (or 2x2 average pooling without conv_resample)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1) if use_conv \
            else nn.AvgPool2d(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest 2x upsampling, then a 3x3 conv with conv_resample."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class TimestepSequential(nn.Sequential):
    """Layers of one UNet stage; ResBlocks get the embedding, transformers the context and frame count."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer3D):
                x = layer(x, context, num_frames)
            else:
                x = layer(x)
        return x


class MultiViewUNet(nn.Module):
    """MVDream / ImageDream multi-view UNet (module docstring); ``forward`` predicts what the
    scheduler's ``prediction_type`` says (epsilon for the released models)."""

    def __init__(self, config: MultiViewUNetConfig):
        super().__init__()
        self.config = c = config
        mc, emb_dim = c.model_channels, c.model_channels * 4
        if c.ip_dim > 0:
            self.image_embed = Resampler(dim=c.context_dim, depth=4, dim_head=64, heads=12, num_queries=c.ip_dim,
                                         embedding_dim=IMAGE_TOKEN_DIM, output_dim=c.context_dim, ff_mult=4)
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if c.camera_dim is not None:
            self.camera_embed = nn.Sequential(nn.Linear(c.camera_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def res(ch_in: int, ch_out: int | None = None) -> ResBlock:
            return ResBlock(ch_in, emb_dim, ch_out, c.dropout, c.use_scale_shift_norm)

        def attn(ch: int) -> SpatialTransformer3D:
            heads, dim_head = c.heads(ch)
            return SpatialTransformer3D(ch, heads, dim_head, c.context_dim, c.transformer_depth, c.dropout,
                                        c.ip_dim, c.ip_weight)

        def has_attn(ds: int, level: int, index: int) -> bool:
            return ds in c.attention_resolutions and (
                c.num_attention_blocks is None or index < c.num_attention_blocks[level])

        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(c.in_channels, mc, 3, padding=1))])
        skips, ch, ds = [mc], mc, 1
        for level, mult in enumerate(c.channel_mult):
            for i in range(c.num_res_blocks[level]):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if has_attn(ds, level, i):
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != len(c.channel_mult) - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch, c.conv_resample, ch)))
                skips.append(ch)
                ds *= 2
        self.middle_block = TimestepSequential(res(ch), attn(ch), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mult))):
            for i in range(c.num_res_blocks[level] + 1):
                layers = [res(ch + skips.pop(), mc * mult)]
                ch = mc * mult
                if has_attn(ds, level, i):
                    layers.append(attn(ch))
                if level and i == c.num_res_blocks[level]:
                    layers.append(Upsample(ch, c.conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepSequential(*layers))
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(mc, c.out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, camera: Tensor | None = None,
                num_frames: int = 1, ip: Tensor | None = None, ip_img: Tensor | None = None) -> Tensor:
        """Prediction [B*F, C_out, h, w] for B objects of F frames each (frames of one object consecutive).

        x [B*F, C, h, w]; timesteps [B*F]; context [B*F, L, D] text tokens; camera [B*F, 16] flattened
        c2w (MVDream's convention, zeros for ImageDream's input frame); ImageDream only: ip [B*F, N, 1280]
        CLIP image tokens (zeros for the unconditional branch) and ip_img [B, C, h, w] the input image's
        latent, written into the last frame of each object (the input x of that frame is ignored).
        """
        if x.shape[0] % num_frames:
            raise ValueError(f"a batch of {x.shape[0]} frames is not a multiple of num_frames={num_frames}")
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        if camera is not None:
            if not hasattr(self, "camera_embed"):
                raise ValueError("this UNet takes no camera (camera_dim is None)")
            emb = emb + self.camera_embed(camera.to(x.dtype))
        if self.config.ip_dim > 0:
            if ip is None or ip_img is None:
                raise ValueError("an ImageDream UNet (ip_dim > 0) needs ip tokens and ip_img")
            frames = x.unflatten(0, (-1, num_frames))
            x = torch.cat([frames[:, :-1], ip_img.to(x.dtype)[:, None]], dim=1).flatten(0, 1)
            context = torch.cat([context, self.image_embed(ip.to(x.dtype))], dim=1)
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb, context, num_frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, num_frames)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, num_frames)
        return self.out(h)
