"""What a run folder shows in the viewer: 3D Gaussians, a mesh or a density field, and its training cameras.

Any folder a command writes is understood:

- a per-scene run (``fit``, ``text-to-3d``): config.json + checkpoint -> its scene (Gaussians or a field);
- ``image-to-3d`` output (one image's folder): gaussians.ply;
- a ``holofusion`` sample folder: grid.safetensors (a voxel field), else its mesh;
- ``text-to-3d-refine``: mesh.glb (or mesh.obj / mesh.ply).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
import trimesh

from distill3d.camera_sampling import OrbitCameraConfig, sample_quadrant_cameras
from distill3d.cameras import Cameras
from distill3d.configs import config_from_dict
from distill3d.errors import UserError
from distill3d.export.ply import read_gaussians_ply
from distill3d.scene.field import DensityField
from distill3d.scene.gaussians import Gaussians
from distill3d.training.run_dir import RunDir
from distill3d.training.run_scene import load_run_scene

ASSET_FILES = ("gaussians.ply", "grid.safetensors", "mesh.glb", "mesh.obj", "mesh.ply")
FIELD_SAMPLES = 64       # samples per ray of a HoloFusion grid in the viewer
TEXT_TO_3D_CAMERAS = 8   # orbit cameras drawn for a text-to-3d run (its cameras are drawn afresh each step)


@dataclass
class ViewContent:
    """One thing to show: exactly one of ``gaussians``, ``mesh`` or ``field``, and optional training cameras."""

    label: str
    gaussians: Gaussians | None = None    # drawn as viser Gaussian splats
    mesh: trimesh.Trimesh | None = None   # drawn as a mesh
    field: DensityField | None = None     # volume-rendered by our renderer from the browser's camera
    num_samples: int = FIELD_SAMPLES      # samples per ray of ``field``
    cameras: Cameras | None = None        # training cameras [V], drawn as frustums

    @property
    def kind(self) -> str:
        """gaussians, mesh or field."""
        return "gaussians" if self.gaussians is not None else "mesh" if self.mesh is not None else "field"


def training_cameras(config: dict) -> Cameras | None:
    """The cameras a run trained with, from its config.json: a fit's training views, or a sample of a
    text-to-3d run's orbit cameras (None when unknown, e.g. a fit whose data set has moved)."""
    method = config.get("method")
    if method == "fit":
        from distill3d.methods.fit import FitConfig, load_views
        try:
            return load_views(config_from_dict(FitConfig, config))[1]
        except (UserError, OSError, KeyError):
            return None
    if method == "text-to-3d" and isinstance(config.get("cameras"), dict):
        orbit = config_from_dict(OrbitCameraConfig, config["cameras"])
        orbit = dataclasses.replace(orbit, cameras_per_step=TEXT_TO_3D_CAMERAS)
        return sample_quadrant_cameras(orbit, torch.Generator().manual_seed(0))[0]
    return None


def _read_mesh(path: Path) -> trimesh.Trimesh:
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as error:  # noqa: BLE001 - trimesh raises many kinds on a damaged file
        raise UserError(f"cannot read the mesh {path}: {error}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise UserError(f"{path} holds no triangles to show")
    return mesh


def _from_run(path: Path) -> ViewContent:
    run = RunDir(path)
    config = run.read_config()
    scene = load_run_scene(run)
    label = f"{config.get('method', 'run')}: {config.get('prompt') or path.name}"
    cameras = training_cameras(config)
    if scene.is_gaussians:
        return ViewContent(label, gaussians=scene.module.gaussians.detach(), cameras=cameras)
    return ViewContent(label, field=scene.module, num_samples=scene.config.num_samples, cameras=cameras)


def load_view_content(path: str | Path) -> ViewContent:
    """What the viewer shows for the folder ``path`` (see the module's docstring); a ``UserError`` in one
    line when the folder holds nothing it can show."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no run folder {path}")
    if not path.is_dir():
        raise UserError(f"{path} is a file; give the run folder that holds it")
    config = RunDir(path).read_config() if (path / "config.json").is_file() else {}
    if "scene" in config:
        return _from_run(path)
    label = f"{config.get('method', 'output')}: {path.name}"
    if (path / "gaussians.ply").is_file():
        try:
            gaussians = read_gaussians_ply(path / "gaussians.ply")
        except (ValueError, KeyError, OSError) as error:
            raise UserError(f"cannot read {path / 'gaussians.ply'}: {error}") from None
        return ViewContent(label, gaussians=gaussians)
    if (path / "grid.safetensors").is_file():
        from distill3d.methods.holofusion.sample import read_sample_grid
        return ViewContent(label, field=read_sample_grid(path / "grid.safetensors").eval())
    for name in ("mesh.glb", "mesh.obj", "mesh.ply"):
        if (path / name).is_file():
            return ViewContent(label, mesh=_read_mesh(path / name), cameras=training_cameras(config))
    inside = sorted(p.name for p in path.iterdir() if p.is_dir() and any((p / a).is_file() for a in ASSET_FILES))
    if len(inside) == 1:  # e.g. the demo's folder: its one run
        return load_view_content(path / inside[0])
    if inside:
        listed = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
        raise UserError(f"{path} holds {len(inside)} results ({listed}); view one: distill3d view {path / inside[0]}")
    raise UserError(f"{path} holds nothing to view: no run checkpoint, {', '.join(ASSET_FILES)}")
