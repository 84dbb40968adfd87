"""HoloDiffusion's training objective as HoloFusion states it (Sec. 3.2, Eq. 5-6).

No clean grid V exists (only images), so the noisy grids the denoiser learns from are made from its
own estimate (bootstrapped "double denoising"):

    V_T ~ N(0, I)                                     pure noise, the one noisy grid known exactly
    V_0 = D_theta(V_T, Vbar, T)                       first pass: a clean estimate from noise
    V_t = sqrt(abar_t) sg(V_0) + sqrt(1 - abar_t) eps  re-noised at t ~ U{0, .., T-1} (Eq. 2)
    I_hat = R_eta(D_theta(V_t, Vbar, t), C)           second pass, rendered at the target cameras (Eq. 6)
    L(theta, eta) = || I_hat - I ||^2                 the photometric loss (Eq. 5), mean over pixels

What is detached, and why: the paper does not say. HoloDiffusion's public code does not detach its
first pass (``holo_diffusion_model.py``: the bootstrapped pass re-noises the predicted ``pred_xstart``
with its graph), but there the first pass starts from the noised pooled features and is itself
rendered. Here, as in HoloFusion, only the second pass is rendered, and ``detach_first_pass`` (on by
default) stops the gradient at V_0 (``sg``): V_0 plays the part of the unknown clean grid, i.e. it is
data for the second pass. Without the stop the loss could also lower by making V_0 easy to denoise
rather than right (e.g. moving it to where the re-noising matters least), and the backward pass would
cross the U-Net twice. The first pass is still trained: at t near T the second pass is the same
denoiser on nearly pure noise. Clean grids are bounded to [-1, 1] (``unet3d``: tanh), so the noise of
Eq. 2 always matters.

Which views each pass sees (``first_pass_views``).
- ``"subset"``, Eq. 5-6 as written: both passes see the same random subset Vbar. Then nothing asks the
  second pass to read V_t. With views, Vbar alone names the object. Without views (the unconditional
  share), V_0 came from noise alone and V_t holds no object either, so the best answer is the mean
  object whatever V_t is, and unconditional sampling, which never gets views, returns that mean.
- ``"all"`` (the default): the first pass sees every source view, so V_0 always holds the group's
  object, and the second pass sees the random subset. With an empty subset the object can only come
  from V_t, so the second pass is an unconditional denoiser of object grids, as in HoloDiffusion's code,
  where only V_t enters and its clean grid comes from the views.
Measured (benchmarks/RESULTS.md, HoloFusion):
- with ``"subset"`` at S = 32 on an H200 (3.9k steps), all 16 unconditional samples were one brown blob;
- at S = 16 on a CPU (3.5k steps each), the unconditional samples' spread across samples was 0.001 of
  the held-out objects' spread with ``"subset"`` and 0.65 with ``"all"``, while the PSNR of samples
  conditioned on 6 views was the same (18.4 and 18.6 dB).

The schedule is HoloDiffusion's (its ``configs/base.yaml``): T = 1000, betas linear from 1e-4 to 0.02
(DDPM's), x0-prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.diffusion.schedule import NoiseSchedule

__all__ = ["FIRST_PASS_VIEWS", "DiffusionConfig", "ObjectiveConfig", "double_denoise", "grid_schedule",
           "photometric_loss"]

FIRST_PASS_VIEWS = ("subset", "all")


@dataclass
class DiffusionConfig:
    """The noise schedule of the grids (HoloDiffusion's configs/base.yaml)."""

    num_train_timesteps: int = 1000  # T
    beta_start: float = 1e-4         # linear betas, DDPM's
    beta_end: float = 0.02


@dataclass
class ObjectiveConfig:
    """Double denoising and rendering of the photometric loss (module docstring)."""

    detach_first_pass: bool = True   # stop the gradient at V_0 before it is re-noised (module docstring)
    first_pass_views: str = "all"    # "all": the first pass sees every view; "subset": Eq. 5-6 as written
    num_samples: int = 64            # samples per ray of R_eta (HoloDiffusion's n_pts_per_ray_training)
    stratified: bool = True          # jittered samples while training
    background: float = 1.0          # the colour behind the grid: white, as the world's renders

    def __post_init__(self) -> None:
        if self.first_pass_views not in FIRST_PASS_VIEWS:
            raise ValueError(f"first_pass_views must be one of {', '.join(FIRST_PASS_VIEWS)}")


def grid_schedule(config: DiffusionConfig) -> NoiseSchedule:
    """abar_t [T] of linear betas, x0-prediction, sampled with "trailing" spacing (the first step at T - 1)."""
    betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
    abar = torch.cumprod(1.0 - betas, dim=0).to(torch.float32)
    return NoiseSchedule(alphas_cumprod=abar, prediction_type="sample", final_alpha_bar=1.0,
                         timestep_spacing="trailing", steps_offset=0)


def double_denoise(denoiser, v_bar: Tensor, schedule: NoiseSchedule, noise: torch.Generator,
                   feature_dim: int, detach_first_pass: bool = True,
                   v_bar_first: Tensor | None = None) -> dict[str, Tensor]:
    """The two passes of the module docstring for conditioning grids v_bar [B, c, S, S, S].

    denoiser: D_theta(V_t, Vbar, t) -> V_0. noise: the generator of V_T, eps and t (on v_bar's device).
    v_bar_first: the first pass's conditioning (``first_pass_views = "all"``); None: v_bar, as Eq. 5-6.
    Returns V_T, V_0 (first pass), t [B], V_t, and V_0' = D_theta(V_t, Vbar, t) [B, d, S, S, S] (second pass).
    """
    B, S, dev = v_bar.shape[0], v_bar.shape[-1], v_bar.device
    T = schedule.num_train_timesteps
    shape = (B, feature_dim, S, S, S)
    v_T = torch.randn(shape, generator=noise, device=dev)
    first = v_bar if v_bar_first is None else v_bar_first
    v_0 = denoiser(v_T, first, torch.full((B,), T - 1, device=dev, dtype=torch.long))    # HoloFusion Eq. 5-6
    t = torch.randint(0, T, (B,), generator=noise, device=dev)
    eps = torch.randn(shape, generator=noise, device=dev)
    clean = v_0.detach() if detach_first_pass else v_0
    v_t = schedule.add_noise(clean.float(), eps, t)                                       # HoloFusion Eq. 2
    v_0_again = denoiser(v_t, v_bar, t)                                                   # HoloFusion Eq. 6
    return {"v_T": v_T, "v_0": v_0, "t": t, "v_t": v_t, "v_0_again": v_0_again}


def photometric_loss(rendered: Tensor, target: Tensor) -> Tensor:
    """|| I_hat - I ||^2 (HoloFusion Eq. 5), the mean over images [N, H, W, 3] and pixels."""
    return (rendered.float() - target.float()).square().mean()
