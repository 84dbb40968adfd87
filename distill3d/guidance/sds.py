"""Score Distillation Sampling as DreamFusion defines it (Poole et al. 2022, Sec. 3).

Per view: t ~ U[t_min, t_max] (integer timesteps), eps ~ N(0, I),
``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps`` with x = teacher.encode_images(images), and
the gradient ``grad = w(t) (eps_hat(x_t; y, t) - eps)`` with classifier-free guidance on
eps_hat; the U-Net Jacobian is skipped (DreamFusion Eq. 3).

The loss is ``0.5 * sum_b ||x_b - sg(x_b - grad_b)||^2 / B``, so d loss / d x_b = grad_b / B:
the expectation over views is a mean, as in DreamFusion's E_t,eps over camera samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from distill3d.diffusion.guidance_cfg import CfgForm, standard_scale
from distill3d.diffusion.parameterization import broadcast_like
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.teacher import Teacher, at_teacher_resolution
from distill3d.guidance.timestep_schedules import linear_anneal, step_generator

# w(t): DreamFusion's "sds" weight 1 - abar_t (its sigma_t^2 in VP notation), the EDM-style
# sigma_t^2 = (1 - abar_t) / abar_t, or no weight.
SdsWeighting = Literal["one_minus_alpha_bar", "sigma_squared", "uniform"]


@dataclass
class SDSConfig:
    """DreamFusion's SDS settings (its numbers cited beside each field)."""

    t_min: float = 0.02  # lower end of t ~ U(t_min, t_max), as a fraction of T (DreamFusion Sec. 3: 0.02)
    t_max: float = 0.98  # upper end of t (DreamFusion Sec. 3: 0.98)
    # t_max annealed linearly to this value at the end of the run; none: fixed (DreamFusion keeps
    # the range fixed; annealing is a common later refinement)
    t_max_end: float | None = None
    guidance_scale: float = 100.0  # classifier-free guidance scale (DreamFusion Sec. 3: 100)
    cfg_form: CfgForm = "standard"  # "code": guidance written as cond + s (cond - uncond)
    weighting: SdsWeighting = "one_minus_alpha_bar"  # DreamFusion: w(t) = sigma_t^2 (VP) = 1 - abar_t


def sds_weight(schedule: NoiseSchedule, t: Tensor, weighting: SdsWeighting) -> Tensor:
    """w(t) [B] (float32) for timesteps t [B]."""
    abar = schedule.alpha_bar(t)
    if weighting == "one_minus_alpha_bar":
        return 1 - abar
    if weighting == "sigma_squared":
        return (1 - abar) / abar
    if weighting == "uniform":
        return torch.ones_like(abar)
    raise ValueError(f"unknown SDS weighting {weighting!r}")


def sds_t_max(config: SDSConfig, step: int, total_steps: int) -> float:
    """The upper end of the timestep range at ``step`` of ``total_steps`` (fixed unless t_max_end is set)."""
    if config.t_max_end is None:
        return config.t_max
    return linear_anneal(config.t_max, config.t_max_end, step, total_steps)


def sample_sds_timesteps(config: SDSConfig, T: int, batch: int, step: int, *, total_steps: int,
                         seed: int = 0) -> Tensor:
    """Integer timesteps [batch] uniform in [int(t_min T), int(t_max(step) T)] (inclusive), drawn from (seed, step)."""
    low = int(config.t_min * T)
    high = max(low, min(int(sds_t_max(config, step, total_steps) * T), T - 1))
    generator = step_generator(seed, step, stream=0)
    return torch.randint(low, high + 1, (batch,), generator=generator)


class SDSLoss:
    """``loss(images [B, H, W, 3] in [0, 1], teacher, cond, step) -> (loss, stats)`` of a run of
    ``total_steps`` steps (used only by ``t_max_end``); timesteps and noise are drawn from (``seed``, step).
    ``group_size`` G > 1 draws one t per group of G consecutive views (a multi-view teacher's group,
    as MVDream's and DD3G's multi-view SDS); the noise stays independent per view."""

    def __init__(self, config: SDSConfig | None = None, *, total_steps: int, seed: int = 0, group_size: int = 1):
        self.config = config or SDSConfig()
        self.total_steps, self.seed, self.group_size = total_steps, seed, group_size

    def __call__(
        self, images: Tensor, teacher: Teacher, cond: Any, step: int, noise: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """SDS loss; ``noise`` [B, C, h, w] replaces the drawn eps (for tests and analysis)."""
        config = self.config
        x = teacher.encode_images(at_teacher_resolution(images, teacher))  # [B, C, h, w], differentiable
        batch = x.shape[0]
        schedule = teacher.schedule
        if batch % self.group_size:
            raise ValueError(f"{batch} views do not split into groups of {self.group_size}")
        t = sample_sds_timesteps(config, schedule.num_train_timesteps, batch // self.group_size, step,
                                 total_steps=self.total_steps, seed=self.seed)
        t = t.repeat_interleave(self.group_size).to(x.device)
        if noise is None:
            noise = torch.randn(x.shape, generator=step_generator(self.seed, step, stream=1))
        eps = noise.to(x.device, torch.float32)
        scale = standard_scale(config.guidance_scale, config.cfg_form)
        with torch.no_grad():
            x_t = schedule.add_noise(x.detach().float(), eps, t)
            eps_hat = teacher.denoise(x_t, t, cond, scale).eps.float()
            w = broadcast_like(sds_weight(schedule, t, config.weighting).to(x.device), eps_hat)
            grad = torch.nan_to_num(w * (eps_hat - eps))  # DreamFusion Eq. 3
        target = (x.float() - grad).detach()
        loss = 0.5 * (x.float() - target).square().sum() / batch
        stats = {
            "loss": float(loss.detach()),
            "t": float(t.float().mean()) / schedule.num_train_timesteps,
            "cfg": float(config.guidance_scale),
            "grad_norm": float(grad.norm()),
        }
        return loss, stats
