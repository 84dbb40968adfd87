"""The discrete VP noise schedule a teacher was trained with, read from a diffusers scheduler.

``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` for integer t in [0, T-1]; the sigma ("EDM")
form is ``x_t / sqrt(abar_t) = x0 + sigma_t eps`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``.

Timesteps ``t`` may be a Python int or float, a 0-d tensor, or a tensor [B]. Integer t indexes
the table exactly; float t in [0, T-1] is interpolated linearly in ``log(abar)`` between the
two neighbouring integer steps (so integer-valued floats give the table values exactly, and
``t_from_sigma`` is the exact inverse of ``sigma``). Results have the shape of ``t`` and
dtype float32, on ``t``'s device (CPU for Python numbers).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from distill3d.diffusion.parameterization import PredictionType, broadcast_like, sigma_from_alpha_bar


def stable_diffusion_alphas_cumprod() -> Tensor:
    """abar [1000] of Stable Diffusion 1.x/2.x: scaled_linear betas 0.00085..0.012, T = 1000."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    return scheduler.alphas_cumprod.clone()


@dataclass
class NoiseSchedule:
    """A VP schedule: the table abar_t [T] plus what samplers need to match diffusers.

    ``NoiseSchedule()`` is Stable Diffusion's schedule; ``NoiseSchedule.from_diffusers(s)``
    reads any diffusers scheduler (DDPM, DDIM, PNDM, Euler, ...).
    """

    alphas_cumprod: Tensor = field(default_factory=stable_diffusion_alphas_cumprod)  # [T], float32
    prediction_type: PredictionType = "epsilon"  # what the teacher's network outputs
    # abar used after the last sampling step (t_prev < 0): 1.0 (clean) unless the scheduler's
    # set_alpha_to_one is False, then abar_0. Stable Diffusion ships set_alpha_to_one=False.
    final_alpha_bar: float = 1.0
    timestep_spacing: str = "leading"  # default spacing of sampling timesteps ("leading" | "trailing" | "linspace")
    steps_offset: int = 1  # Stable Diffusion's scheduler_config.json sets steps_offset = 1

    @classmethod
    def from_diffusers(cls, scheduler) -> "NoiseSchedule":
        """Read abar, prediction type, timestep spacing and offset from a diffusers scheduler."""
        config = scheduler.config
        final = getattr(scheduler, "final_alpha_cumprod", None)
        return cls(
            alphas_cumprod=scheduler.alphas_cumprod.detach().to("cpu", torch.float32).clone(),
            prediction_type=config.get("prediction_type", "epsilon"),
            final_alpha_bar=1.0 if final is None else float(final),
            timestep_spacing=config.get("timestep_spacing", "leading"),
            steps_offset=int(config.get("steps_offset", 0)),
        )

    @property
    def num_train_timesteps(self) -> int:
        """T, the number of discrete training timesteps."""
        return int(self.alphas_cumprod.shape[0])

    def with_prediction_type(self, prediction_type: PredictionType) -> "NoiseSchedule":
        """The same schedule for a network with another output parameterisation."""
        return replace(self, prediction_type=prediction_type)

    def _table(self, device: torch.device) -> Tensor:
        return self.alphas_cumprod.to(device)

    def alpha_bar(self, t: int | float | Tensor) -> Tensor:
        """abar_t, shape of ``t``. Integer t indexes the table; float t in [0, T-1] interpolates log(abar)."""
        t = torch.as_tensor(t)
        table = self._table(t.device)
        if not t.is_floating_point():
            return table[t.long()]
        t = t.to(torch.float64).clamp(0, self.num_train_timesteps - 1)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.num_train_timesteps - 1)
        w = t - lo.to(t.dtype)
        log_table = table.to(torch.float64).log()
        return ((1 - w) * log_table[lo] + w * log_table[hi]).exp().to(torch.float32)

    def alpha_bar_or_final(self, t: int | Tensor) -> Tensor:
        """abar_t, or ``final_alpha_bar`` where t < 0 (the clean end of a sampling chain)."""
        t = torch.as_tensor(t)
        safe = self.alpha_bar(t.clamp(min=0))
        return torch.where(t < 0, torch.full_like(safe, self.final_alpha_bar), safe)

    def sigma(self, t: int | float | Tensor) -> Tensor:
        """sigma_t = sqrt((1 - abar_t) / abar_t), shape of ``t``."""
        return sigma_from_alpha_bar(self.alpha_bar(t).to(torch.float64)).to(torch.float32)

    def t_from_sigma(self, sigma: float | Tensor) -> Tensor:
        """The float timestep whose ``sigma`` equals ``sigma`` (clamped to [0, T-1]); shape of ``sigma``."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        log_table = self._table(sigma.device).to(torch.float64).log()  # decreasing in t
        target = -torch.log1p(sigma.square())  # log abar
        descending = -log_table  # increasing in t, for searchsorted
        hi = torch.searchsorted(descending, -target).clamp(1, self.num_train_timesteps - 1)
        lo = hi - 1
        w = (log_table[lo] - target) / (log_table[lo] - log_table[hi])
        return (lo.to(torch.float64) + w).clamp(0, self.num_train_timesteps - 1).to(torch.float32)

    def add_noise(self, x0: Tensor, eps: Tensor, t: int | float | Tensor) -> Tensor:
        """x_t [B, ...] = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, with t a scalar or [B]."""
        a = broadcast_like(self.alpha_bar(torch.as_tensor(t, device=x0.device)), x0)
        return (a.sqrt() * x0.to(a.dtype) + (1 - a).sqrt() * eps.to(a.dtype)).to(x0.dtype)

    def to(self, device: torch.device | str) -> "NoiseSchedule":
        """A copy whose table lives on ``device`` (avoids a transfer on every lookup)."""
        return replace(self, alphas_cumprod=self.alphas_cumprod.to(device))
