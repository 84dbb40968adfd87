"""HoloFusion's 2D super-resolution diffusion model D_beta (HoloFusion Sec. 3.3.1, Eq. 7).

``I_super = D_beta(I_t, I_hat, t)``: a light U-Net takes the noised high-resolution target
``I_t = sqrt(abar_t) I + sqrt(1 - abar_t) eps`` (Eq. 2) and the low-resolution render ``I_hat`` of
the 3D model, and returns its estimate of the clean image I: it is an **x0 predictor** (Eq. 7
regresses ``D_beta(...)`` on I), so its schedule has ``prediction_type = "sample"``. It is trained
with the unweighted DDPM loss ``|| D_beta(eps_t(I), I_hat, t) - I ||^2`` (Eq. 7), jointly with the
3D model (total loss Eq. 5 + Eq. 7, in ``train``).

The network: ``I_hat`` is upsampled (bilinear) to the target size and concatenated to ``I_t`` as
three more input channels of a diffusers ``UNet2DModel``; with ``predict_residual`` its output is
added to that upsampling (ours: the net then only has to draw the missing detail; the sum is still
D_beta's x0 estimate). Samples are drawn by DDIM through ``SuperResolutionTeacher``, the same
``Teacher`` interface the samplers and ``SDSLoss`` use (the HoloFusion (SDS) ablation).

Spaces: the model works on [-1, 1] images [B, 3, H, W]; the functions at the boundary take and
return [B, H, W, 3] images in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch import Tensor, nn

from distill3d.diffusion.parameterization import x0_and_eps
from distill3d.diffusion.samplers import ddim_sample
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.teacher import DenoiseOutput, batch_timesteps
from distill3d.diffusion.training_loss import diffusion_loss
from distill3d.errors import UserError

__all__ = [
    "SuperResolutionConfig",
    "SuperResolutionNet",
    "SuperResolutionTeacher",
    "from_model_space",
    "sr_diffusion_loss",
    "sr_schedule",
    "super_resolve",
    "to_model_space",
]


@dataclass
class SuperResolutionConfig:
    """D_beta's size, noise schedule and sampler. HoloFusion gives only "a lightweight U-Net" (Sec. 3.3.1)
    and DDPM (Sec. 3.1); the sizes are ours for the world's 32 -> 64 px images (3.6 M parameters)."""

    enabled: bool = True                 # train and use D_beta (HoloFusion Sec. 3.3.1); False: HoloDiffusion alone
    scale: int = 2                       # upsampling factor of the render (ours: 32 -> 64 px world images)
    block_out_channels: tuple[int, ...] = (32, 64, 128)  # U-Net widths per level (ours: "lightweight", Sec. 3.3.1)
    layers_per_block: int = 2            # ResNet blocks per level
    mid_attention: bool = True           # self-attention in the U-Net's middle block (lowest resolution only)
    attention_head_dim: int = 32         # channels per attention head
    norm_num_groups: int = 16            # GroupNorm groups (must divide every width)
    predict_residual: bool = True        # the U-Net adds detail to the bilinear upsampling of the render (ours)
    num_train_timesteps: int = 1000      # T (DDPM, HoloFusion Sec. 3.1)
    beta_schedule: str = "linear"        # DDPM's linear betas 1e-4 .. 0.02 (HoloFusion Sec. 3.1 follows DDPM)
    beta_start: float = 1e-4             # DDPM (Ho et al. 2020, Sec. 4)
    beta_end: float = 0.02               # DDPM (Ho et al. 2020, Sec. 4)
    sampling_steps: int = 50             # DDIM steps of ``super_resolve`` (ours; the paper does not say)

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise UserError(f"super-resolution scale must be >= 1, got {self.scale}")
        if not self.block_out_channels or any(c % self.norm_num_groups for c in self.block_out_channels):
            raise UserError(f"super-resolution widths {tuple(self.block_out_channels)} must be divisible by "
                            f"norm_num_groups = {self.norm_num_groups}")
        if self.sampling_steps < 1 or self.sampling_steps > self.num_train_timesteps:
            raise UserError(f"super-resolution sampling_steps must be in [1, {self.num_train_timesteps}]")


def sr_schedule(config: SuperResolutionConfig) -> NoiseSchedule:
    """D_beta's noise schedule: DDPM betas, x0 prediction (Eq. 7), trailing spacing (DDIM starts at t = T - 1)."""
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                              beta_start=config.beta_start, beta_end=config.beta_end, prediction_type="sample",
                              timestep_spacing="trailing", clip_sample=False)
    return NoiseSchedule.from_diffusers(scheduler)


def to_model_space(images: Tensor) -> Tensor:
    """images [B, H, W, 3] in [0, 1] -> [B, 3, H, W] in [-1, 1] (differentiable)."""
    return images.permute(0, 3, 1, 2) * 2 - 1


def from_model_space(x: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> images [B, H, W, 3] in [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)


class SuperResolutionNet(nn.Module):
    """D_beta: ``forward(x_t [B, 3, H, W], low_res [B, 3, h, w], t [B]) -> x0 estimate [B, 3, H, W]``.

    x_t and low_res are in [-1, 1]; H = scale h. The output is the clean high-resolution image (Eq. 7),
    not the noise.
    """

    def __init__(self, config: SuperResolutionConfig | None = None):
        super().__init__()
        self.config = config = config or SuperResolutionConfig()
        levels = len(config.block_out_channels)
        self.unet = UNet2DModel(
            in_channels=6, out_channels=3, block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block, down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels, add_attention=config.mid_attention,
            attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_num_groups)

    def upsample(self, low_res: Tensor, size: tuple[int, int]) -> Tensor:
        """low_res [B, 3, h, w] -> [B, 3, H, W] by bilinear interpolation (the conditioning channels)."""
        return F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)

    def forward(self, x_t: Tensor, low_res: Tensor, t: Tensor) -> Tensor:
        H, W = x_t.shape[-2:]
        if low_res.shape[0] != x_t.shape[0] or (H, W) != (low_res.shape[-2] * self.config.scale,
                                                        low_res.shape[-1] * self.config.scale):
            raise ValueError(f"x_t {tuple(x_t.shape)} must be the low-res image {tuple(low_res.shape)} "
                             f"upsampled x{self.config.scale}")
        up = self.upsample(low_res.to(x_t.dtype), (H, W))
        t = batch_timesteps(t, x_t.shape[0], x_t.device)
        out = self.unet(torch.cat([x_t, up], dim=1), t).sample
        return up + out if self.config.predict_residual else out


def _device(net: nn.Module) -> torch.device:
    parameter = next(net.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


class SuperResolutionTeacher:
    """D_beta seen as a ``Teacher``: teacher space is [-1, 1] pixels [B, 3, H, W]; the conditioning of
    ``denoise`` is the low-resolution image [B, 3, h, w] in [-1, 1] (no prompt, no classifier-free
    guidance: D_beta is never trained without its conditioning)."""

    latent_channels = 3

    def __init__(self, net: SuperResolutionNet, schedule: NoiseSchedule, native_image_size: int):
        self.net = net
        self.device = _device(net)
        self.schedule = schedule.to(self.device)
        self.native_image_size = int(native_image_size)

    def latent_size(self, image_size: int) -> int:
        return image_size

    def encode_prompt(self, prompts: list[str]) -> None:
        raise UserError("the super-resolution model takes a low-resolution image, not a prompt")

    def encode_images(self, images: Tensor) -> Tensor:
        """images [B, H, W, 3] in [0, 1] -> [B, 3, H, W] in [-1, 1] (differentiable)."""
        return to_model_space(images)

    def decode(self, latents: Tensor) -> Tensor:
        """[B, 3, H, W] in [-1, 1] -> images [B, H, W, 3] in [0, 1]."""
        return from_model_space(latents)

    def denoise(self, x_t: Tensor, t: Tensor | float, cond: Tensor, guidance_scale: float = 1.0) -> DenoiseOutput:
        """x0 and eps [B, 3, H, W] at (x_t, t) given the low-res image ``cond`` [B, 3, h, w]."""
        if guidance_scale != 1.0:
            raise UserError("the super-resolution model has no classifier-free guidance; use guidance scale 1")
        t = batch_timesteps(t, x_t.shape[0], x_t.device)
        prediction = self.net(x_t, cond.to(x_t.device), t)
        x0, eps = x0_and_eps(prediction, x_t, self.schedule.alpha_bar(t), self.schedule.prediction_type)
        return DenoiseOutput(x0=x0, eps=eps)


def _draw(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
          integers_below: int | None = None) -> Tensor:
    """Standard normal noise (or integers in [0, integers_below)) drawn on the generator's device, then moved."""
    draw_device = generator.device if generator is not None else device
    if integers_below is not None:
        return torch.randint(integers_below, shape, generator=generator, device=draw_device).to(device)
    return torch.randn(shape, generator=generator, device=draw_device).to(device)


def _check_pair(high_res: Tensor, low_res: Tensor, scale: int) -> None:
    if high_res.ndim != 4 or low_res.ndim != 4 or high_res.shape[-1] != 3 or low_res.shape[-1] != 3:
        raise ValueError(f"images must be [B, H, W, 3], got {tuple(high_res.shape)} and {tuple(low_res.shape)}")
    if high_res.shape[0] != low_res.shape[0] or high_res.shape[1:3] != (low_res.shape[1] * scale,
                                                                          low_res.shape[2] * scale):
        raise ValueError(f"high-res {tuple(high_res.shape)} must be low-res {tuple(low_res.shape)} x{scale}")


def sr_diffusion_loss(net: SuperResolutionNet, schedule: NoiseSchedule, high_res: Tensor, low_res: Tensor,
                      generator: torch.Generator | None = None) -> Tensor:
    """HoloFusion Eq. 7: ``E_{t, eps} || D_beta(eps_t(I), I_hat, t) - I ||^2`` (mean over pixels), t ~ U{0..T-1}.

    high_res I [B, H, W, 3] and low_res I_hat [B, h, w, 3] in [0, 1], H = scale h. Gradients reach
    ``low_res`` too (the 3D model that rendered it is trained end-to-end with D_beta, Sec. 3.3.1); pass
    ``low_res.detach()`` to train D_beta alone. t and eps are drawn from ``generator``.
    """
    _check_pair(high_res, low_res, net.config.scale)
    device = high_res.device
    x0 = to_model_space(high_res.float())
    t = _draw((x0.shape[0],), generator, device, integers_below=schedule.num_train_timesteps)
    eps = _draw(tuple(x0.shape), generator, device)
    x_t = schedule.add_noise(x0, eps, t)                                  # HoloFusion Eq. 2
    prediction = net(x_t, to_model_space(low_res.float()), t)
    abar = schedule.alpha_bar(t.to(schedule.alphas_cumprod.device)).to(device)
    return diffusion_loss(prediction, x0, eps, abar, schedule.prediction_type)  # HoloFusion Eq. 7


@torch.no_grad()
def super_resolve(net: SuperResolutionNet, schedule: NoiseSchedule, low_res: Tensor, num_steps: int | None = None,
                  generator: torch.Generator | None = None, *, batch_size: int | None = None) -> Tensor:
    """Samples of p(I_super | I_hat): low_res [B, h, w, 3] in [0, 1] -> [B, H, W, 3] in [0, 1], H = scale h.

    Deterministic DDIM (eta = 0, ``num_steps`` default ``config.sampling_steps``) from noise drawn from
    ``generator``, so each call with a fresh draw is another sample and a seeded generator repeats it;
    the x0 estimate is clipped to [-1, 1] at every step. ``batch_size`` bounds the images per network
    call (None: all at once).
    """
    if low_res.ndim != 4 or low_res.shape[-1] != 3:
        raise ValueError(f"low_res must be [B, h, w, 3], got {tuple(low_res.shape)}")
    scale = net.config.scale
    B, h, w = low_res.shape[:3]
    teacher = SuperResolutionTeacher(net, schedule, native_image_size=h * scale)
    cond = to_model_space(low_res.to(teacher.device, torch.float32))
    steps = num_steps or net.config.sampling_steps
    chunk = batch_size or B
    out = []
    for start in range(0, B, chunk):
        part = cond[start:start + chunk]
        x0 = ddim_sample(teacher, (part.shape[0], 3, h * scale, w * scale), part, steps,
                         generator=generator, clip_x0=1.0)
        out.append(from_model_space(x0))
    return torch.cat(out)
