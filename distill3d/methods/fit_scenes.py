"""The three scenes ``distill3d fit`` can optimise, behind one small interface.

A ``FitScene`` renders itself, names its trainable parameter groups, hands its modules to the
run folder's checkpoints and exports itself (PLY or mesh, turntable video).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from distill3d.cameras import Cameras
from distill3d.errors import UserError
from distill3d.export import render_frames, turntable_cameras, write_mesh, write_video
from distill3d.export_ply import write_gaussians_ply
from distill3d.render.output import RenderOutput
from distill3d.render.splat import render_gaussians
from distill3d.render.volume import render_volume
from distill3d.run_dir import RunDir
from distill3d.scene.gaussians import FIELDS, GaussianLearningRates, Gaussians
from distill3d.scene.hash_grid import HashGridConfig, HashGridNeRF
from distill3d.scene.mesh_extraction import extract_mesh
from distill3d.scene.voxel_grid import VoxelGridConfig, VoxelRadianceField

if TYPE_CHECKING:
    from distill3d.methods.fit import FitConfig

REPRESENTATIONS = ("voxels", "nerf", "gaussians")
EXPORT_FORMATS = ("ply", "glb", "obj", "mp4", "gif")
EXPORT_STEMS = {"ply": "gaussians", "glb": "mesh", "obj": "mesh"}  # file names of assets; videos: turntable


class GaussianParameters(nn.Module):
    """The six raw tensors of ``Gaussians`` as registered parameters (for optimisers and checkpoints)."""

    def __init__(self, gaussians: Gaussians):
        super().__init__()
        for name, tensor in gaussians.tensors().items():
            setattr(self, name, nn.Parameter(tensor.detach().clone()))

    @property
    def gaussians(self) -> Gaussians:
        return Gaussians(**{name: getattr(self, name) for name in FIELDS})


class FitScene:
    """A scene under optimisation: a density field (voxels, NeRF) or Gaussians."""

    def __init__(self, representation: str, module: nn.Module, num_samples: int = 96):
        self.representation = representation
        self.module = module
        self.num_samples = num_samples

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def is_gaussians(self) -> bool:
        return isinstance(self.module, GaussianParameters)

    def modules(self) -> dict[str, nn.Module]:
        return {"scene": self.module}

    def render(self, cameras: Cameras, *, background: float = 1.0, train: bool = False) -> RenderOutput:
        if self.is_gaussians:
            return render_gaussians(self.module.gaussians, cameras, background=background)
        return render_volume(self.module, cameras, num_samples=self.num_samples, background=background,
                             stratified=train, compute_normals=False)

    def param_groups(self, config: "FitConfig") -> list[dict]:
        if self.is_gaussians:
            base = GaussianLearningRates()
            return [{"params": [getattr(self.module, name)], "name": name,
                     "lr": getattr(base, name) * config.gaussian_lr_scale} for name in FIELDS]
        field = self.module
        grid = [field.features] if isinstance(field, VoxelRadianceField) else [field.encoding.table]
        grid_ids = {id(p) for p in grid}
        rest = [p for p in field.parameters() if id(p) not in grid_ids]
        return [{"params": grid, "lr": config.grid_lr, "name": "grid"},
                {"params": rest, "lr": config.mlp_lr, "name": "mlp"}]

    # ------------------------------------------------------------------ exports
    def export(self, out_dir: Path, config: "FitConfig", formats: tuple[str, ...] | None = None) -> dict[str, Path]:
        """Write the asset (PLY for Gaussians, GLB for fields) and a turntable (MP4 + GIF)."""
        if formats is None:
            videos = ("mp4", "gif") if config.turntable_frames > 0 else ()
            formats = ("ply" if self.is_gaussians else "glb",) + videos
        out_dir = Path(out_dir)
        written: dict[str, Path] = {}
        frames = None
        for fmt in formats:
            path = out_dir / f"{EXPORT_STEMS.get(fmt, 'turntable')}.{fmt}"
            if fmt == "ply":
                if not self.is_gaussians:
                    raise UserError(f"a {self.representation} run has no Gaussians to write as PLY; "
                                    "use --format glb or obj")
                written[fmt] = write_gaussians_ply(path, self.module.gaussians.detach().to("cpu"))
            elif fmt in ("glb", "obj"):
                if self.is_gaussians:
                    raise UserError("a Gaussians run exports as --format ply (meshes come from density fields)")
                with torch.no_grad():
                    mesh = extract_mesh(self.module, resolution=config.mesh_resolution,
                                        threshold=config.mesh_threshold)
                written[fmt] = write_mesh(path, mesh)
            elif fmt in ("mp4", "gif"):
                if frames is None:
                    cams = turntable_cameras(config.turntable_frames or 48, resolution=config.turntable_resolution,
                                             distance=2.7)
                    frames = render_frames(lambda c: self.render(c.to(self.device), background=1.0), cams)
                written[fmt] = write_video(path, frames, fps=24)
            else:
                raise UserError(f"unknown export format '{fmt}'; choose from {', '.join(EXPORT_FORMATS)}")
        return written


def _field_module(config: "FitConfig", seed: int) -> nn.Module:
    if config.representation == "voxels":
        return VoxelRadianceField(VoxelGridConfig(resolution=config.voxel_resolution,
                                                  feature_dim=config.voxel_features), seed=seed)
    return HashGridNeRF(HashGridConfig(num_levels=config.hash_levels, log2_table_size=config.hash_log2_table,
                                       max_resolution=config.hash_max_resolution), seed=seed)


def build_fit_scene(config: "FitConfig", device: torch.device) -> FitScene:
    """A fresh scene for ``config.representation`` with seeded initialisation."""
    if config.representation == "gaussians":
        g = Gaussians.random_ball(config.num_gaussians, radius=0.9, opacity=0.1,
                                  generator=torch.Generator().manual_seed(config.seed))
        module: nn.Module = GaussianParameters(g)
    else:
        module = _field_module(config, config.seed)
    return FitScene(config.representation, module.to(device), config.num_samples)


def scene_for_checkpoint(config: "FitConfig", run: RunDir, device: torch.device) -> FitScene:
    """A scene shaped like the run's checkpoint, ready for ``run.load_checkpoint(scene.modules())``
    (the number of Gaussians in a checkpoint may differ from the config's)."""
    if config.representation != "gaussians":
        return build_fit_scene(config, device)
    shapes = run.checkpoint_shapes()
    empty = Gaussians(**{name: torch.zeros(shapes[f"module.scene.{name}"]) for name in FIELDS})
    return FitScene(config.representation, GaussianParameters(empty).to(device), config.num_samples)
