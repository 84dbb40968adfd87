"""The networks of the world teachers: small pixel-space U-Nets built from diffusers blocks.

Both teachers predict **v** (Salimans & Ho 2022) under the **cosine** schedule (Nichol &
Dhariwal 2021, diffusers' ``squaredcos_cap_v2``, T = 1000), the usual choice for small
pixel-space models at 64x64: v stays well scaled at every noise level, and the cosine
schedule does not waste steps on nearly clean or fully destroyed images. Sampling uses
"trailing" timestep spacing, so 50-step DDIM starts from t = 999 (pure noise).

- ``WorldTextToImageNet``: ``UNet2DConditionModel`` (3 -> 3 channels) cross-attending to the
  world text encoder's [B, 4, D] tokens, which are also pooled into the time embedding
  (``addition_embed_type="text"``) so that every ResNet block sees the prompt.
- ``WorldMultiViewNet``: the same U-Net body with 12 input channels per view, run on
  V = K + 1 views per object with cross-view self-attention (``multiview_attention``). View 0
  is the clean input view at t = 0 (ImageDream-like reference view inside the joint
  attention); views 1..K are the noisy targets. Every view's input is
  [noisy view (3), input image (3), Pluecker rays (6)], with rays relative to the input camera
  (``multiview_cameras``). The U-Net also cross-attends to tokens of the input image and its
  rays (a small patch encoder), pooled into the time embedding as well. Each view's camera
  also enters the time embedding, through a 2-layer MLP, as MVDream and ImageDream inject
  their cameras (``MultiViewNetConfig.camera_grid``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn

from distill3d.diffusion.multiview_attention import multiview_attention_views, set_multiview_attention
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.world_models.text_encoder import TextEncoderConfig, WorldTextEncoder


@dataclass
class ScheduleConfig:
    """Noise schedule and output parameterisation of a world teacher (see module docstring)."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine schedule, Improved DDPM Sec. 3.2
    prediction_type: str = "v_prediction"  # Salimans & Ho 2022, Sec. 4
    timestep_spacing: str = "trailing"  # 50-step DDIM starts at t = T - 1

    def scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                             prediction_type=self.prediction_type, timestep_spacing=self.timestep_spacing,
                             clip_sample=False)

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule.from_diffusers(self.scheduler())


@dataclass
class UNetConfig:
    """Body of a world U-Net (``UNet2DConditionModel``); levels halve the resolution."""

    block_out_channels: tuple[int, ...] = (64, 128, 128)  # 64x64, 32x32, 16x16 at 64x64 images
    layers_per_block: int = 1
    attention_levels: tuple[int, ...] = (1, 2)  # levels with self- and cross-attention (32x32, 16x16)
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    pooled_heads: int = 4  # heads of the attention pooling of the conditioning tokens


def build_unet(config: UNetConfig, *, in_channels: int, out_channels: int, sample_size: int,
               cross_attention_dim: int, camera_dim: int = 0) -> UNet2DConditionModel:
    """A ``UNet2DConditionModel`` with attention only at ``config.attention_levels``.

    With ``camera_dim`` > 0 the U-Net takes a camera vector [B, camera_dim] as ``class_labels``
    and adds its 2-layer MLP embedding to the time embedding (diffusers' "projection" class
    embedding); the MLP's last layer starts at zero, so that it starts as a no-op.
    """
    levels = len(config.block_out_channels)
    down = tuple("CrossAttnDownBlock2D" if i in config.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("CrossAttnUpBlock2D" if levels - 1 - i in config.attention_levels else "UpBlock2D"
               for i in range(levels))
    # diffusers' UNet2DConditionModel reads ``attention_head_dim`` as the number of heads (legacy naming).
    heads = tuple(max(1, c // config.attention_head_dim) for c in config.block_out_channels)
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
        block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
        down_block_types=down, up_block_types=up, mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=cross_attention_dim, attention_head_dim=heads,
        norm_num_groups=config.norm_num_groups, resnet_time_scale_shift="scale_shift",
        addition_embed_type="text", addition_embed_type_num_heads=config.pooled_heads,
        class_embed_type="projection" if camera_dim > 0 else None,
        projection_class_embeddings_input_dim=camera_dim if camera_dim > 0 else None,
    )
    if camera_dim > 0:
        nn.init.zeros_(unet.class_embedding.linear_2.weight)
        nn.init.zeros_(unet.class_embedding.linear_2.bias)
    return unet


@dataclass
class TextToImageNetConfig:
    """Sizes of the world text-to-image network."""

    resolution: int = 64
    unet: UNetConfig = field(default_factory=UNetConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)


class WorldTextToImageNet(nn.Module):
    """Text encoder + U-Net. ``forward(x_t [B,3,H,W], t [B], token_ids [B,4]) -> v [B,3,H,W]``."""

    def __init__(self, config: TextToImageNetConfig):
        super().__init__()
        self.config = config
        self.text_encoder = WorldTextEncoder(config.text)
        self.unet = build_unet(config.unet, in_channels=3, out_channels=3, sample_size=config.resolution,
                               cross_attention_dim=config.text.dim)

    def predict(self, x_t: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        """Prediction [B, 3, H, W] from text embeddings emb [B, 4, D]."""
        return self.unet(x_t, t, encoder_hidden_states=emb).sample

    def forward(self, x_t: Tensor, t: Tensor, token_ids: Tensor) -> Tensor:
        return self.predict(x_t, t, self.text_encoder(token_ids))


@dataclass
class MultiViewNetConfig:
    """Sizes of the world multi-view network (``num_views`` target views per object)."""

    resolution: int = 64
    num_views: int = 4  # ImageDream / DD3G: four views
    unet: UNetConfig = field(default_factory=UNetConfig)
    token_dim: int = 128
    token_stride: int = 8  # one input-image token per token_stride x token_stride pixels
    # camera vector: each view's Pluecker map averaged on a grid x grid grid. 0 (no camera MLP) is
    # what a config.json written before the MLP existed means; new runs use 4 (MultiViewTrainConfig).
    camera_grid: int = 0
    # frame of the relative cameras (multiview_cameras.CAMERA_FRAMES). "input" is what a config.json
    # written before the level frame existed means; new runs use "level" (MultiViewTrainConfig).
    camera_frame: str = "input"

    @property
    def camera_dim(self) -> int:
        """Length of a view's camera vector (6 Pluecker channels per grid cell)."""
        return 6 * self.camera_grid ** 2


VIEW_CHANNELS = 3 + 3 + 6
"""Per-view U-Net input: noisy view, input image, Pluecker rays."""


class InputImageTokens(nn.Module):
    """Input image [B,3,H,W] and its rays [B,6,H,W] -> tokens [B, (H/s)(W/s), D] (patch encoder)."""

    def __init__(self, config: MultiViewNetConfig):
        super().__init__()
        if config.token_stride % 2 or config.resolution % config.token_stride:
            raise ValueError("token_stride must be even and divide the resolution")
        hidden = config.token_dim // 2
        self.patchify = nn.Sequential(
            nn.Conv2d(9, hidden, config.token_stride // 2, stride=config.token_stride // 2), nn.SiLU(),
            nn.Conv2d(hidden, config.token_dim, 2, stride=2))
        n = (config.resolution // config.token_stride) ** 2
        self.position = nn.Parameter(torch.randn(n, config.token_dim) * 0.02)
        self.norm = nn.LayerNorm(config.token_dim)

    def forward(self, image: Tensor, rays: Tensor) -> Tensor:
        x = self.patchify(torch.cat([image, rays], dim=1))
        return self.norm(x.flatten(2).transpose(1, 2) + self.position)


def camera_vectors(rays: Tensor, grid: int) -> Tensor:
    """Pluecker maps [N, 6, H, W] -> camera vectors [N, 6 * grid * grid] (the maps averaged per cell).

    The rays of a pinhole camera are smooth over the image, so a coarse grid of them fixes the
    camera's pose and field of view: this is the camera, as MVDream's extrinsics are, in the form
    the rest of the network already reads. Added to a teacher trained without it, it gained
    0.14 dB, against a larger gain from the loss weighting (``diffusion_loss``).
    """
    return F.adaptive_avg_pool2d(rays.float(), grid).flatten(1)


class WorldMultiViewNet(nn.Module):
    """Joint denoiser of the K target views of each object (see the module docstring)."""

    def __init__(self, config: MultiViewNetConfig):
        super().__init__()
        self.config = config
        self.image_tokens = InputImageTokens(config)
        self.unet = build_unet(config.unet, in_channels=VIEW_CHANNELS, out_channels=3,
                               sample_size=config.resolution, cross_attention_dim=config.token_dim,
                               camera_dim=config.camera_dim)
        set_multiview_attention(self.unet, config.num_views + 1)

    def forward(self, x_t: Tensor, t: Tensor, input_image: Tensor, input_rays: Tensor,
                target_rays: Tensor) -> Tensor:
        """Prediction [B*K, 3, H, W] for noisy targets x_t [B*K, 3, H, W] at t [B*K].

        input_image [B, 3, H, W] in [-1, 1] (zeros = unconditional), input_rays [B, 6, H, W],
        target_rays [B*K, 6, H, W]; the K views of object b are rows b*K .. b*K+K-1.
        """
        B = input_image.shape[0]
        BK, _, H, W = x_t.shape
        if BK % B:
            raise ValueError(f"{BK} target views for {B} input images")
        K = BK // B
        if multiview_attention_views(self.unet) != K + 1:
            set_multiview_attention(self.unet, K + 1)
        image_k = input_image[:, None].expand(B, K, *input_image.shape[1:]).reshape(BK, 3, H, W)
        targets = torch.cat([x_t.to(input_image.dtype), image_k, target_rays.to(input_image.dtype)], dim=1)
        reference = torch.cat([input_image, input_image, input_rays.to(input_image.dtype)], dim=1)
        views = torch.cat([reference[:, None], targets.reshape(B, K, VIEW_CHANNELS, H, W)], dim=1)
        t_views = torch.cat([torch.zeros_like(t.reshape(B, K)[:, :1]), t.reshape(B, K)], dim=1)
        tokens = self.image_tokens(input_image, input_rays.to(input_image.dtype))
        tokens = tokens[:, None].expand(B, K + 1, *tokens.shape[1:]).reshape(B * (K + 1), *tokens.shape[1:])
        cameras = None
        if self.config.camera_grid > 0:
            rays = torch.cat([input_rays[:, None], target_rays.reshape(B, K, 6, H, W)], dim=1)
            cameras = camera_vectors(rays.reshape(B * (K + 1), 6, H, W), self.config.camera_grid).to(input_image.dtype)
        out = self.unet(views.reshape(B * (K + 1), VIEW_CHANNELS, H, W), t_views.reshape(-1),
                        encoder_hidden_states=tokens, class_labels=cameras).sample
        return out.reshape(B, K + 1, 3, H, W)[:, 1:].reshape(BK, 3, H, W)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
