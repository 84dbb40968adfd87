"""What every density field offers the volume renderer and the mesh extractor.

A density field answers one question, ``query(points [N, 3]) -> (density [N], rgb [N, 3])``,
for world points (the frame of ``distill3d.cameras``), and says where it lives with
``aabb`` ([2, 3]: min corner, max corner). Density is the extinction coefficient sigma >= 0
in inverse world units; colour is in [0, 1]. Outside its box a field is empty.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["DensityField", "cube_aabb", "inside_aabb", "normalize_to_aabb", "make_mlp", "seeded"]


@runtime_checkable
class DensityField(Protocol):
    """A radiance field: density and colour at world points, zero density outside ``aabb``."""

    @property
    def aabb(self) -> torch.Tensor:
        """[2, 3] axis-aligned bounding box (min corner, max corner) in world units."""
        ...

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, 3] -> density [N] (>= 0), rgb [N, 3] (in [0, 1])."""
        ...


def cube_aabb(half_size: float, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[2, 3] box of the cube [-half_size, half_size]^3."""
    h = float(half_size)
    if h <= 0:
        raise ValueError(f"half_size must be positive, got {h}")
    return torch.tensor([[-h, -h, -h], [h, h, h]], device=device, dtype=dtype)


def inside_aabb(points: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """[N] bool: points [N, 3] within the closed box aabb [2, 3]."""
    return ((points >= aabb[0]) & (points <= aabb[1])).all(dim=-1)


def normalize_to_aabb(points: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """points [N, 3] -> [N, 3] with the box mapped to [0, 1]^3 (not clamped)."""
    return (points - aabb[0]) / (aabb[1] - aabb[0])


def make_mlp(in_dim: int, hidden_dim: int, num_hidden_layers: int, out_dim: int) -> nn.Sequential:
    """Plain ReLU MLP: in -> (hidden, ReLU) x num_hidden_layers -> out (no output activation)."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_hidden_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block with the global CPU RNG seeded (and restored afterwards); no-op for None.

    Module constructors use it so that ``seed`` makes parameter initialisation reproducible
    without touching the caller's random state.
    """
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
