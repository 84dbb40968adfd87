"""Samplers as pure functions of a ``Teacher`` (its ``denoise`` and ``schedule`` only).

Each step matches the corresponding diffusers scheduler step for step (tests compare them):
``ddim_sample`` = ``DDIMScheduler`` with eta = 0, ``ddpm_sample`` = ``DDPMScheduler`` with
variance_type "fixed_small". Sampling timesteps come from ``ddim_timesteps`` (diffusers'
``set_timesteps``); the previous timestep of each step is the next entry of that list, and -1
(the clean end) after the last. diffusers' DDIM computes it as ``t - T // num_steps`` instead;
both agree for leading spacing, and for trailing spacing when ``T`` is a multiple of
``num_steps`` (e.g. 50 steps of 1000).

The sampling loops run under ``torch.no_grad``; the single steps are differentiable.

Sigma form (Consistent3D): with ``x~ = x_t / sqrt(abar_t) = x0 + sigma_t eps``, one Euler step
of the probability-flow ODE is exactly one DDIM (eta = 0) step.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from distill3d.diffusion.parameterization import broadcast_like, x0_from_eps
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.teacher import Teacher

StepCallback = Callable[[int, int, Tensor], None]  # (step index, timestep t, sample after the step)


def ddim_timesteps(num_steps: int, T: int = 1000, spacing: str = "leading", steps_offset: int = 0) -> Tensor:
    """Descending sampling timesteps [num_steps] (int64), as diffusers' ``set_timesteps``.

    leading:  ``arange(n) * (T // n) + steps_offset``, reversed (Stable Diffusion: offset 1);
    trailing: ``round(arange(T, 0, -T / n)) - 1`` (starts at T - 1; steps_offset unused);
    linspace: ``round(linspace(0, T - 1, n))``, reversed.
    """
    if not 0 < num_steps <= T:
        raise ValueError(f"num_steps must be in [1, {T}], got {num_steps}")
    if spacing == "leading":
        ts = (np.arange(num_steps) * (T // num_steps)).round()[::-1].astype(np.int64) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(T, 0, -T / num_steps)).astype(np.int64) - 1
    elif spacing == "linspace":
        ts = np.linspace(0, T - 1, num_steps).round()[::-1].astype(np.int64)
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected 'leading', 'trailing' or 'linspace'")
    return torch.from_numpy(ts.copy())


def _schedule_timesteps(schedule: NoiseSchedule, num_steps: int, spacing: str | None, steps_offset: int | None) -> Tensor:
    timesteps = ddim_timesteps(
        num_steps,
        schedule.num_train_timesteps,
        schedule.timestep_spacing if spacing is None else spacing,
        schedule.steps_offset if steps_offset is None else steps_offset,
    )
    if int(timesteps[0]) >= schedule.num_train_timesteps:
        raise ValueError(
            f"{num_steps} steps with steps_offset {steps_offset if steps_offset is not None else schedule.steps_offset}"
            f" reach t = {int(timesteps[0])} >= T = {schedule.num_train_timesteps}; use steps_offset=0 or fewer steps"
        )
    return timesteps


def _randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard normal float32 noise, drawn on the generator's device then moved (as diffusers)."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device).to(device)


def ddim_step(
    x_t: Tensor,
    x0_pred: Tensor,
    eps_pred: Tensor,
    t: int | Tensor,
    t_prev: int | Tensor,
    schedule: NoiseSchedule,
    eta: float = 0.0,
    noise: Tensor | None = None,
) -> Tensor:
    """x_{t_prev} [B, ...] from x_t via the DDIM update (DDIM Eq. 12).

    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s noise`` with
    ``s = eta sqrt((1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev))``; eta = 0 is the
    deterministic probability-flow step (x_t is then only needed for its dtype). t_prev < 0
    means the clean end (abar = schedule.final_alpha_bar). t, t_prev: int or [B].
    """
    a_t = broadcast_like(schedule.alpha_bar_or_final(torch.as_tensor(t, device=x_t.device)), x_t)
    a_prev = broadcast_like(schedule.alpha_bar_or_final(torch.as_tensor(t_prev, device=x_t.device)), x_t)
    if eta > 0:
        std = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs noise")
    else:
        std = torch.zeros_like(a_prev)
    x_prev = a_prev.sqrt() * x0_pred.to(a_t.dtype) + (1 - a_prev - std.square()).sqrt() * eps_pred.to(a_t.dtype)
    if eta > 0:
        x_prev = x_prev + std * noise.to(a_t.dtype)
    return x_prev.to(x_t.dtype)


def euler_sigma_step(x_t1: Tensor, x0_pred: Tensor, sigma_t1: float | Tensor, sigma_t2: float | Tensor) -> Tensor:
    """One Euler step of the PF-ODE in sigma space (Consistent3D Eq. 9; METHODS.md shared notation).

    ``x_t2 = x_t1 + (sigma_t2 - sigma_t1) / sigma_t1 * (x_t1 - D)``, where x here is the scaled
    sample ``x_t / sqrt(abar_t) = x0 + sigma_t eps`` [B, ...] (see ``vp_to_sigma_space``),
    D = x0_pred the denoiser output, and sigma_t1, sigma_t2 floats or [B].
    """
    s1 = broadcast_like(sigma_t1, x_t1)
    s2 = broadcast_like(sigma_t2, x_t1)
    x = x_t1.to(s1.dtype)
    return (x + (s2 - s1) / s1 * (x - x0_pred.to(s1.dtype))).to(x_t1.dtype)


def ddpm_step(
    x_t: Tensor,
    x0_pred: Tensor,
    t: int,
    t_prev: int,
    schedule: NoiseSchedule,
    noise: Tensor | None,
) -> Tensor:
    """Ancestral step: sample of q(x_{t_prev} | x_t, x0_pred) (DDPM Eq. 6-7, "fixed_small" variance).

    mean = sqrt(abar_prev) beta / (1 - abar_t) x0 + sqrt(alpha) (1 - abar_prev) / (1 - abar_t) x_t,
    with alpha = abar_t / abar_prev, beta = 1 - alpha, var = (1 - abar_prev) / (1 - abar_t) beta
    (clamped at 1e-20, as diffusers); t_prev < 0 means abar_prev = 1. noise [B, ...] or None (no noise).
    """
    a_t = schedule.alpha_bar(t).item()
    a_prev = schedule.alpha_bar(t_prev).item() if t_prev >= 0 else 1.0
    a_t, a_prev = torch.tensor(a_t), torch.tensor(a_prev)  # float32 scalars, as diffusers
    alpha = a_t / a_prev
    beta = 1 - alpha
    mean = (a_prev.sqrt() * beta / (1 - a_t)) * x0_pred + (alpha.sqrt() * (1 - a_prev) / (1 - a_t)) * x_t
    if noise is None:
        return mean
    var = ((1 - a_prev) / (1 - a_t) * beta).clamp(min=1e-20)
    return mean + var.sqrt() * noise


@torch.no_grad()
def ddim_sample(
    teacher: Teacher,
    shape: tuple[int, ...],
    cond: Any,
    num_steps: int = 50,
    guidance_scale: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    spacing: str | None = None,
    steps_offset: int | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
    step_callback: StepCallback | None = None,
) -> Tensor:
    """Deterministic DDIM (eta = 0) from noise x_T [B, C, h, w] to x0 [B, C, h, w] in teacher space.

    shape: (B, C, h, w); noise (x_T) is drawn from ``generator`` unless given. spacing /
    steps_offset default to the teacher schedule's (diffusers' scheduler config). clip_x0 clamps
    the x0 estimate to [-clip_x0, clip_x0] (diffusers' clip_sample; eps is kept unclipped).
    step_callback(i, t, x_prev) is called after every step.
    """
    schedule = teacher.schedule
    x = noise.to(teacher.device) if noise is not None else _randn(tuple(shape), generator, teacher.device)
    timesteps = _schedule_timesteps(schedule, num_steps, spacing, steps_offset).tolist()
    for i, t in enumerate(tqdm(timesteps, desc="DDIM", disable=not progress)):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        out = teacher.denoise(x, t, cond, guidance_scale)
        x0 = out.x0 if clip_x0 is None else out.x0.clamp(-clip_x0, clip_x0)
        x = ddim_step(x, x0, out.eps, t, t_prev, schedule)
        if step_callback is not None:
            step_callback(i, t, x)
    return x


@torch.no_grad()
def ddim_invert(
    teacher: Teacher,
    x0: Tensor,
    cond: Any,
    num_steps: int = 50,
    guidance_scale: float = 1.0,
    *,
    spacing: str | None = None,
    steps_offset: int | None = None,
    progress: bool = False,
    step_callback: StepCallback | None = None,
) -> Tensor:
    """DDIM inversion: clean x0 [B, C, h, w] -> x_T [B, C, h, w] along the deterministic ODE.

    Walks ``ddim_sample``'s timesteps backwards. Each step from level t_prev to t takes eps from
    the teacher on the current (less noisy) sample at timestep t, as diffusers'
    DDIMInverseScheduler does, holds it fixed, and moves along it:
    ``x0' = (x - sqrt(1 - abar_prev) eps) / sqrt(abar_prev)``,
    ``x_t = sqrt(abar_t) x0' + sqrt(1 - abar_t) eps``. Use guidance_scale 1 for faithful
    reconstructions.
    """
    schedule = teacher.schedule
    timesteps = _schedule_timesteps(schedule, num_steps, spacing, steps_offset).flip(0).tolist()
    x = x0
    for i, t in enumerate(tqdm(timesteps, desc="DDIM inversion", disable=not progress)):
        t_prev = timesteps[i - 1] if i > 0 else -1
        eps = teacher.denoise(x, t, cond, guidance_scale).eps
        x0_at_prev = x0_from_eps(x, eps, schedule.alpha_bar_or_final(torch.as_tensor(t_prev, device=x.device)))
        x = ddim_step(x, x0_at_prev, eps, t_prev, t, schedule)
        if step_callback is not None:
            step_callback(i, t, x)
    return x


@torch.no_grad()
def ddpm_sample(
    teacher: Teacher,
    shape: tuple[int, ...],
    cond: Any,
    num_steps: int = 1000,
    guidance_scale: float = 1.0,
    *,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    spacing: str | None = None,
    steps_offset: int | None = None,
    clip_x0: float | None = None,
    progress: bool = False,
    step_callback: StepCallback | None = None,
) -> Tensor:
    """Ancestral DDPM sampling, x_T -> x0 [B, C, h, w], matching diffusers' DDPMScheduler.

    Noise is drawn from ``generator`` in diffusers' order (x_T first unless ``noise`` is given,
    then one draw per step with t > 0), so the same seeded generator gives the same samples.
    """
    schedule = teacher.schedule
    device = teacher.device
    x = noise.to(device) if noise is not None else _randn(tuple(shape), generator, device)
    timesteps = _schedule_timesteps(schedule, num_steps, spacing, steps_offset).tolist()
    for i, t in enumerate(tqdm(timesteps, desc="DDPM", disable=not progress)):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        out = teacher.denoise(x, t, cond, guidance_scale)
        x0 = out.x0 if clip_x0 is None else out.x0.clamp(-clip_x0, clip_x0)
        step_noise = _randn(tuple(x.shape), generator, device) if t > 0 else None
        x = ddpm_step(x, x0, t, t_prev, schedule, step_noise)
        if step_callback is not None:
            step_callback(i, t, x)
    return x
