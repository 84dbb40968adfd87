"""View conditioning of HoloFusion (Sec. 3.2): Vbar = Phi(sbar), source-view features pooled into the grid.

Phi is a frozen 2D encoder. CO3D's HoloDiffusion uses an ImageNet ResNet; nothing can be downloaded
here, so Phi is the early stages of the shipped world classifier (``world_models.classifier``, a
pre-activation ResNet trained on reference renders of training objects only), frozen: its first
stage gives [32, 64, 64] features of a 64x64 view. As Implicitron's ResNet feature extractor, the
view's colours are appended (``include_rgb``); later stages, when asked for, are upsampled to the
first stage's size and concatenated. ``encoder="rgb"`` uses the colours alone (no network).

Unprojection (HoloDiffusion's view pooling, Implicitron's ``ViewSampler`` + mean aggregation): every
voxel centre p_ijk = (x_i, y_j, z_k) of the grid (``scene.voxel_grid``'s layout, corners on the
cube's faces) is projected into each source view; where it lies in front of the camera (z-depth >
``MIN_DEPTH``) and inside the image, the view's feature map is sampled bilinearly there. A voxel's
feature is the mean over the views that see it; one more channel holds the share of the source
views that see it (the visibility / view count), so "seen by no view" differs from "features 0".
An empty subset (or a voxel seen by no view) gives zeros: unconditional generation.

Source subsets (HoloFusion Sec. 3.2: "a random subset of frames (which could be empty)"; the paper
gives no distribution): with probability ``empty_probability`` a training sample gets no source
view; otherwise its number of views is uniform in 1..V, V the source views of a training sample (15, HoloFusion Sec. 3.3.1).
HoloDiffusion's public code always pools all source frames of its batch; the empty share is ours,
so that the unconditional model, the one sampled by default, gets a fixed part of the training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.model_folder import resolve_model_folder
from distill3d.world_models.classifier import DEFAULT_CLASSIFIER, WorldClassifier
from distill3d.world_models.classifier import KIND as CLASSIFIER_KIND

__all__ = [
    "MIN_DEPTH",
    "ConditioningConfig",
    "FrozenImageEncoder",
    "conditioning_channels",
    "grid_points",
    "sample_source_masks",
    "unproject_features",
]

MIN_DEPTH = 1e-3
"""A voxel is seen by a view only when its z-depth exceeds this (world units)."""


@dataclass
class ConditioningConfig:
    """The frozen encoder Phi and the random subsets of source views (module docstring)."""

    encoder: str = DEFAULT_CLASSIFIER  # Phi: a world-classifier folder or shipped name, or "rgb" (colours only)
    encoder_stages: int = 1            # classifier stages used (1: its full-resolution first stage)
    include_rgb: bool = True           # append the view's colours to its features
    empty_probability: float = 0.3     # share of training samples with no source view (unconditional)

    def __post_init__(self) -> None:
        if not 0.0 <= self.empty_probability <= 1.0:
            raise ValueError("empty_probability must be in [0, 1]")
        if self.encoder == "rgb" and not self.include_rgb:
            raise ValueError('encoder "rgb" is the colours alone: include_rgb must stay on')
        if self.encoder_stages < 1:
            raise ValueError("encoder_stages must be >= 1")


def _classifier_widths(config: ConditioningConfig) -> tuple[int, ...]:
    _, raw = resolve_model_folder(config.encoder, CLASSIFIER_KIND)
    return tuple(raw["net"]["widths"])


def conditioning_channels(config: ConditioningConfig) -> int:
    """c, the channels of Vbar: encoder features (+ 3 colours) + 1 visibility channel (reads config.json only)."""
    features = 0 if config.encoder == "rgb" else sum(_classifier_widths(config)[:config.encoder_stages])
    return features + 3 * config.include_rgb + 1


class FrozenImageEncoder:
    """Phi: images [N, H, W, 3] in [0, 1] -> feature maps [N, C, h, w] (no gradient, frozen weights).

    Not an ``nn.Module``: a model that keeps one does not take its weights into its parameters or
    checkpoints (as ``eval.perceptual`` keeps its trunk).
    """

    def __init__(self, config: ConditioningConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.classifier = None
        if config.encoder != "rgb":
            self.classifier = WorldClassifier.from_pretrained(config.encoder, device=device)
            if config.encoder_stages > len(self.classifier.config.widths):
                raise ValueError(f"the classifier has {len(self.classifier.config.widths)} stages, "
                                 f"encoder_stages={config.encoder_stages}")
        self.channels = conditioning_channels(config) - 1

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = images.float().permute(0, 3, 1, 2)                                     # [N, 3, H, W]
        if self.classifier is None:
            return x
        clf = self.classifier
        h = clf.stem(clf.prepare(images))
        per_stage, stages = clf.config.blocks_per_stage, []
        for i, block in enumerate(clf.blocks[:per_stage * self.config.encoder_stages]):
            h = block(h)
            if (i + 1) % per_stage == 0:
                stages.append(h)
        size = stages[0].shape[-2:]
        parts = [s if s.shape[-2:] == size else F.interpolate(s, size=size, mode="bilinear", align_corners=False)
                 for s in stages]
        if self.config.include_rgb:
            rgb = x.to(h.device)
            if rgb.shape[-2:] != size:
                rgb = F.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False)
            parts.append(rgb)
        return torch.cat(parts, dim=1)


def grid_points(resolution: int, bound: float, device: torch.device | str | None = None) -> Tensor:
    """World points [S^3, 3] of the voxel centres in the grid's layout (x_i = -b + 2 b i / (S - 1); i, j, k
    for x, y, z, k fastest), so that ``values.reshape(S, S, S)`` is indexed [i, j, k]."""
    axis = torch.linspace(-bound, bound, resolution, device=device)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)


def unproject_features(features: Tensor, cameras: Cameras, mask: Tensor, resolution: int,
                       bound: float = 1.0) -> Tensor:
    """Pool source-view features into grids (module docstring).

    features: [B, V, C, h, w] feature maps of the source views (any h, w: the cameras' image of W x H
    pixels is mapped onto them). cameras: [B * V], camera b * V + v took view v of sample b.
    mask: [B, V] bool, the views of each sample's subset. Returns Vbar [B, C + 1, S, S, S]: the mean
    feature over the views that see each voxel, and the share of the V views that see it (0 for V = 0).
    """
    B, V = mask.shape
    C = features.shape[2] if features.ndim == 5 else 0
    device = mask.device
    if V == 0:
        return torch.zeros(B, C + 1, resolution, resolution, resolution, device=device)
    if features.shape[:2] != (B, V) or len(cameras) != B * V:
        raise ValueError(f"features [B, V, C, h, w] and cameras [B * V] must match the mask {tuple(mask.shape)}")
    h, w = features.shape[-2:]
    points = grid_points(resolution, bound, device)                               # [N, 3]
    N = points.shape[0]
    cams = cameras.to(device)
    uv, z = cams.project(points.expand(B * V, N, 3))                              # [B * V, N, 2], [B * V, N]
    u, v = uv[..., 0], uv[..., 1]
    seen = (z > MIN_DEPTH) & (u >= 0) & (u <= cams.width) & (v >= 0) & (v <= cams.height)
    seen = seen & mask.reshape(B * V, 1)
    # pixel coordinates -> grid_sample's [-1, 1] with align_corners=False (pixel edges at -1 and 1)
    grid = torch.stack([2.0 * u / cams.width - 1.0, 2.0 * v / cams.height - 1.0], dim=-1)
    grid = torch.where(seen[..., None], grid, torch.zeros_like(grid)).reshape(B * V, N, 1, 2)
    sampled = F.grid_sample(features.reshape(B * V, C, h, w).float(), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)[..., 0]  # [B * V, C, N]
    weight = seen.float().reshape(B, V, 1, N)
    total = (sampled.reshape(B, V, C, N) * weight).sum(dim=1)                     # [B, C, N]
    count = weight.sum(dim=1)                                                     # [B, 1, N]
    mean = total / count.clamp_min(1.0)
    return torch.cat([mean, count / V], dim=1).reshape(B, C + 1, resolution, resolution, resolution)


def sample_source_masks(batch: int, source_views: int, empty_probability: float,
                        generator: torch.Generator) -> Tensor:
    """[batch, source_views] bool: the first k views of each sample, k = 0 with ``empty_probability``, else
    uniform in 1..source_views (module docstring). Views are stored in random order, so the first k are a
    random subset."""
    if source_views == 0:
        return torch.zeros(batch, 0, dtype=torch.bool)
    empty = torch.rand(batch, generator=generator) < empty_probability
    k = torch.randint(1, source_views + 1, (batch,), generator=generator)
    k = torch.where(empty, torch.zeros_like(k), k)
    return torch.arange(source_views)[None, :] < k[:, None]
