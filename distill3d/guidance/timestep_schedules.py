"""Timestep and guidance-scale schedules of the guidance losses.

Timesteps here are fractions of the teacher's T (t in [0, 1], as both DreamFusion and
Consistent3D write them); ``to_timestep`` turns them into the teacher's units. ``step`` is
the current iteration i and ``total_steps`` the run length N.
"""

from __future__ import annotations

import torch
from torch import Tensor


def progress(step: int, total_steps: int) -> float:
    """i / N clamped to [0, 1] (N <= 0 counts as the end of the run)."""
    if total_steps <= 0:
        return 1.0
    return min(max(step / total_steps, 0.0), 1.0)


def linear_anneal(start: float, end: float, step: int, total_steps: int) -> float:
    """start + (end - start) i / N: e.g. Consistent3D's CFG 50 -> 20 (Sec. B.1)."""
    return start + (end - start) * progress(step, total_steps)


def sqrt_schedule(t_max: float, t_min: float, step: int, total_steps: int) -> float:
    """t2 = t_max - (t_max - t_min) sqrt(i / N)  (Consistent3D Eq. 12)."""
    return t_max - (t_max - t_min) * progress(step, total_steps) ** 0.5


def uniform(low: float, high: float, batch: int, generator: torch.Generator) -> Tensor:
    """[batch] float64 values drawn uniformly from [low, high] on the CPU."""
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return low + (high - low) * u


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator determined by (seed, step, stream), so a loss needs no hidden state.

    Different streams (e.g. timesteps vs. noise) give independent draws at the same step.
    """
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1))
    return generator


def to_timestep(t: Tensor, num_train_timesteps: int) -> Tensor:
    """Fractions t [B] -> float timesteps t T [B] (float32), clamped to [0, T - 1]."""
    return (t * num_train_timesteps).clamp(0, num_train_timesteps - 1).to(torch.float32)
