"""The scene factory: a 3D scene to optimise (voxel grid, hash-grid NeRF or 3D Gaussians) from a
nested ``SceneConfig``, fresh or shaped like a checkpoint, and its optimiser.

A ``Scene`` is the config it was built from and one ``nn.Module`` (a ``DensityField`` or
``GaussianParameters``); ``distill3d.render.scene.render_scene`` renders it and
``distill3d.export.scene.export_scene`` writes it out. A run's config.json holds the
``SceneConfig``, so any run folder can be turned back into its scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from distill3d.errors import UserError
from distill3d.scene.gaussian_parameters import GaussianParameters
from distill3d.scene.gaussians import FIELDS, GaussianLearningRates, Gaussians
from distill3d.scene.hash_grid import HashGridConfig, HashGridNeRF
from distill3d.scene.voxel_grid import VoxelGridConfig, VoxelRadianceField

Representation = Literal["voxels", "nerf", "gaussians"]
REPRESENTATIONS: tuple[str, ...] = ("voxels", "nerf", "gaussians")


@dataclass
class GaussianInitConfig:
    """Where a fresh set of 3D Gaussians starts: uniform in a ball, random rotations, random or grey colours."""

    count: int = 20000    # number of Gaussians
    radius: float = 0.9   # radius of the ball they fill (a world object fits a sphere of radius 0.9)
    opacity: float = 0.1  # opacity of each at the start
    # random: uniform in [0, 1]^3; grey: 0.5 (DreamGaussian's start: SH coefficients of at most 1/255)
    colour: Literal["random", "grey"] = "random"

    def __post_init__(self) -> None:
        if self.count <= 0 or self.radius <= 0 or not 0.0 < self.opacity < 1.0:
            raise UserError("Gaussians need count > 0, radius > 0 and an opacity in (0, 1)")
        if self.colour not in ("random", "grey"):
            raise UserError(f"unknown Gaussian start colour '{self.colour}'; choose random or grey")


@dataclass
class SceneConfig:
    """Which 3D representation is optimised, and its size (only the chosen representation's part is used)."""

    representation: Representation = "gaussians"  # voxels (a feature grid), nerf (hash grid) or gaussians
    num_samples: int = 96                           # samples per ray of the volume renderer (voxels, nerf)
    voxels: VoxelGridConfig = field(default_factory=VoxelGridConfig)
    nerf: HashGridConfig = field(default_factory=HashGridConfig)
    gaussians: GaussianInitConfig = field(default_factory=GaussianInitConfig)

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise UserError(f"unknown representation '{self.representation}'; choose one of {', '.join(REPRESENTATIONS)}")
        if self.num_samples <= 0:
            raise UserError("--num-samples must be positive")


@dataclass
class SceneOptimConfig:
    """Adam on a scene: learning rates per kind of parameter (eps 1e-15, as Instant-NGP and 3DGS)."""

    grid_lr: float = 1e-2            # voxel features / hash table
    mlp_lr: float = 1e-3             # the fields' MLPs
    gaussian_lr_scale: float = 1.0   # multiplies the learning rates of the Gaussians' six tensors
    gaussians: GaussianLearningRates = field(default_factory=GaussianLearningRates)  # per Gaussian tensor
    # the centres' rate decays log-linearly to this over the run (3DGS: 1.6e-6); none: constant
    means_lr_end: float | None = None
    weight_decay: float = 0.0        # Adam's L2 weight decay

    def means_lr(self, step: int, total_steps: int) -> float:
        """The centres' learning rate at ``step``: log-linear from ``gaussians.means`` to ``means_lr_end``
        (3DGS's exponential decay without its delay)."""
        start = self.gaussians.means * self.gaussian_lr_scale
        if self.means_lr_end is None:
            return start
        t = min(max(step / max(total_steps, 1), 0.0), 1.0)
        end = self.means_lr_end * self.gaussian_lr_scale
        return math.exp((1 - t) * math.log(start) + t * math.log(end))


@dataclass
class Scene:
    """A scene under optimisation: its config and its module (a density field or ``GaussianParameters``)."""

    config: SceneConfig
    module: nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def is_gaussians(self) -> bool:
        return isinstance(self.module, GaussianParameters)

    def modules(self) -> dict[str, nn.Module]:
        """What a checkpoint stores (``RunDir.save_checkpoint``)."""
        return {"scene": self.module}


def build_scene(config: SceneConfig, device: torch.device | str, seed: int) -> Scene:
    """A fresh scene of ``config.representation`` with seeded initialisation."""
    if config.representation == "gaussians":
        init = config.gaussians
        start = Gaussians.random_ball(init.count, radius=init.radius, opacity=init.opacity,
                                      generator=torch.Generator().manual_seed(seed))
        if init.colour == "grey":
            start.sh_dc = torch.zeros_like(start.sh_dc)  # rgb = 0.5
        module: nn.Module = GaussianParameters(start)
    elif config.representation == "voxels":
        module = VoxelRadianceField(config.voxels, seed=seed)
    else:
        module = HashGridNeRF(config.nerf, seed=seed)
    return Scene(config, module.to(device))


def scene_like_checkpoint(config: SceneConfig, shapes: dict[str, tuple[int, ...]], device: torch.device | str,
                          seed: int = 0) -> Scene:
    """A scene shaped like a checkpoint's (``RunDir.checkpoint_shapes``), ready to load it: the number of
    Gaussians in a checkpoint may differ from the config's."""
    if config.representation != "gaussians":
        return build_scene(config, device, seed)
    empty = Gaussians(**{name: torch.zeros(shapes[f"module.scene.{name}"]) for name in FIELDS})
    return Scene(config, GaussianParameters(empty).to(device))


def scene_param_groups(scene: Scene, config: SceneOptimConfig) -> list[dict]:
    """Named Adam parameter groups: one per Gaussian tensor (3DGS rates), or grid and MLP of a field."""
    if scene.is_gaussians:
        return [{"params": [getattr(scene.module, name)], "name": name,
                 "lr": getattr(config.gaussians, name) * config.gaussian_lr_scale} for name in FIELDS]
    field_module = scene.module
    grid = [field_module.features] if isinstance(field_module, VoxelRadianceField) else [field_module.encoding.table]
    grid_ids = {id(p) for p in grid}
    rest = [p for p in field_module.parameters() if id(p) not in grid_ids]
    return [{"params": grid, "lr": config.grid_lr, "name": "grid"},
            {"params": rest, "lr": config.mlp_lr, "name": "mlp"}]


def scene_optimizer(scene: Scene, config: SceneOptimConfig) -> torch.optim.Adam:
    """Adam over ``scene_param_groups`` (eps 1e-15)."""
    return torch.optim.Adam(scene_param_groups(scene, config), eps=1e-15, weight_decay=config.weight_decay)


def set_scene_learning_rates(optimizer: torch.optim.Optimizer, config: SceneOptimConfig, step: int,
                             total_steps: int) -> None:
    """Apply the schedule of ``config`` at ``step`` (the Gaussians' centres; other rates are constant)."""
    for group in optimizer.param_groups:
        if group.get("name") == "means":
            group["lr"] = config.means_lr(step, total_steps)
