"""Voxel radiance field of HoloDiffusion / HoloFusion (HoloFusion Sec. 3.2).

A feature grid ``V`` in R^{d x S x S x S} covers the cube [-b, b]^3; a point's feature
``V(p)`` is the trilinear interpolation of its 8 surrounding grid values, and a small MLP
``M_eta`` decodes it to density (softplus) and colour (sigmoid).

Grid layout: ``features[:, i, j, k]`` is the feature at world point (x_i, y_j, z_k) with
``x_i = -b + 2 b i / (S - 1)`` (the same for y, z): the outermost samples lie on the cube's
faces (``align_corners=True`` in torch's terms), so interpolation at a grid point returns
the stored value exactly and trilinear upsampling keeps the corners fixed.

Sizes: HoloFusion does not state S or d. HoloDiffusion's public code defaults to S = 32 with
d = 128 and its released configs use d = 64; we take S = 32, d = 64 as defaults. The world's
objects are small and smooth, so tests and CPU runs use much smaller grids (S = 8..16).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from distill3d.scene.field import cube_aabb, inside_aabb, make_mlp, seeded

__all__ = ["VoxelGridConfig", "VoxelDecoder", "VoxelRadianceField", "trilinear_sample",
           "upsample_features"]


@dataclass
class VoxelGridConfig:
    """Grid size, extent and decoder of a ``VoxelRadianceField``."""

    resolution: int = 32          # voxels per side S (HoloDiffusion's code default; HoloFusion gives none)
    feature_dim: int = 64         # features per voxel d (HoloDiffusion's released configs)
    bound: float = 1.0            # b: the grid covers [-b, b]^3 (world objects lie within ~0.9)
    hidden_dim: int = 64          # width of the decoder M_eta
    num_hidden_layers: int = 2    # hidden layers of M_eta
    density_bias: float = -1.0    # added before the softplus: a faint fog to start from
    init_std: float = 0.1         # a fresh grid's features ~ N(0, init_std^2)

    def __post_init__(self) -> None:
        if self.resolution < 2:
            raise ValueError(f"resolution must be >= 2, got {self.resolution}")
        if self.feature_dim < 1 or self.bound <= 0:
            raise ValueError("feature_dim must be >= 1 and bound > 0")


class VoxelDecoder(nn.Module):
    """M_eta: features [N, d] -> density [N] (softplus(raw + bias)), rgb [N, 3] (sigmoid)."""

    def __init__(self, feature_dim: int, hidden_dim: int = 64, num_hidden_layers: int = 2,
                 density_bias: float = -1.0) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.density_bias = float(density_bias)
        self.mlp = make_mlp(self.feature_dim, hidden_dim, num_hidden_layers, 4)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.mlp(features)
        density = F.softplus(out[:, 0] + self.density_bias)
        rgb = torch.sigmoid(out[:, 1:4])
        return density, rgb


def trilinear_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Trilinear interpolation of a grid features [C, Sx, Sy, Sz] at coords [N, 3] -> [N, C].

    ``coords`` are normalised to [-1, 1] per axis (x indexes dim 1, y dim 2, z dim 3), with -1
    and 1 on the first and last grid samples; outside, the border value is repeated.
    """
    C = features.shape[0]
    # grid_sample's last grid axis is (W, H, D) = (z, y, x) for a [C, D=x, H=y, W=z] volume.
    grid = coords.flip(-1).reshape(1, -1, 1, 1, 3).to(features.dtype)
    out = F.grid_sample(features[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=True)  # [1, C, N, 1, 1]
    return out.reshape(C, -1).transpose(0, 1)


def upsample_features(features: torch.Tensor, resolution: int) -> torch.Tensor:
    """Trilinear upsampling of features [C, S, S, S] -> [C, S', S', S'] (HoloFusion Sec. 3.3.2).

    Corner-aligned, like ``trilinear_sample``: new samples are the old interpolant evaluated
    at the new grid points, so the field is unchanged there.
    """
    return F.interpolate(features[None], size=(resolution,) * 3, mode="trilinear",
                         align_corners=True)[0]


class VoxelRadianceField(nn.Module):
    """Density and colour from a feature grid V [d, S, S, S] and decoder M_eta.

    ``features`` may be given (e.g. a 3D denoiser's output V_0): it is used as is, so gradients
    reach whatever produced it; an ``nn.Parameter`` is registered and trained with the field.
    Without it a fresh grid is drawn as a parameter. ``decoder`` may be shared between fields
    (HoloDiffusion's eta is one network for all scenes).
    """

    def __init__(self, config: VoxelGridConfig | None = None, *,
                 features: torch.Tensor | None = None, decoder: VoxelDecoder | None = None,
                 seed: int | None = None) -> None:
        super().__init__()
        config = config or VoxelGridConfig()
        if features is not None:
            if features.ndim != 4 or len(set(features.shape[1:])) != 1:
                raise ValueError(f"features must be [d, S, S, S], got {tuple(features.shape)}")
            config = dataclasses.replace(config, feature_dim=features.shape[0],
                                         resolution=features.shape[1])
        self.config = config
        with seeded(seed):
            if decoder is None:
                decoder = VoxelDecoder(config.feature_dim, config.hidden_dim,
                                       config.num_hidden_layers, config.density_bias)
            if features is None:
                S = config.resolution
                features = nn.Parameter(torch.randn(config.feature_dim, S, S, S) * config.init_std)
        if decoder.feature_dim != config.feature_dim:
            raise ValueError(f"decoder takes {decoder.feature_dim} features, grid has "
                             f"{config.feature_dim}")
        self.decoder = decoder
        self.features = features  # [d, S, S, S]; registered when it is an nn.Parameter

    @classmethod
    def from_features(cls, features: torch.Tensor, decoder: VoxelDecoder | None = None,
                      config: VoxelGridConfig | None = None) -> "VoxelRadianceField":
        """A field on a given grid V [d, S, S, S] (size read from the tensor)."""
        return cls(config, features=features, decoder=decoder)

    @property
    def bound(self) -> float:
        return self.config.bound

    @property
    def aabb(self) -> torch.Tensor:
        """[2, 3] the cube [-b, b]^3."""
        return cube_aabb(self.bound, device=self.features.device, dtype=self.features.dtype)

    def query(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points [N, 3] (world) -> density [N], rgb [N, 3]; density is 0 outside the cube."""
        points = points.reshape(-1, 3)
        feats = trilinear_sample(self.features, points / self.bound)
        density, rgb = self.decoder(feats)
        density = torch.where(inside_aabb(points, self.aabb), density, torch.zeros_like(density))
        return density, rgb

    def upsampled(self, resolution: int, *, copy_decoder: bool = True) -> "VoxelRadianceField":
        """A new trainable field with the grid trilinearly upsampled to S' (HoloFusion Sec. 3.3.2).

        The decoder is copied (eta' initialised from eta) unless ``copy_decoder`` is False, in
        which case it is shared.
        """
        if resolution < self.config.resolution:
            raise ValueError(f"upsampling needs S' >= S = {self.config.resolution}, got {resolution}")
        features = nn.Parameter(upsample_features(self.features.detach(), resolution))
        decoder = copy.deepcopy(self.decoder) if copy_decoder else self.decoder
        return VoxelRadianceField(self.config, features=features, decoder=decoder)
