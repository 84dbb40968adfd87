"""A ``Scene`` written out: its asset (Gaussians as a 3DGS PLY, a density field as a marching-cubes
GLB/OBJ mesh) and a turntable (MP4, GIF). ``distill3d export RUN`` and the end of every run use it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from distill3d.errors import UserError
from distill3d.export.mesh import write_mesh
from distill3d.export.ply import write_gaussians_ply
from distill3d.export.video import render_frames, turntable_cameras, write_video
from distill3d.render.scene import render_scene
from distill3d.scene.factory import Scene
from distill3d.scene.mesh_extraction import DEFAULT_DENSITY_THRESHOLD, extract_mesh

EXPORT_FORMATS = ("ply", "glb", "obj", "mp4", "gif")
EXPORT_STEMS = {"ply": "gaussians", "glb": "mesh", "obj": "mesh"}  # file names of assets; videos: turntable
TURNTABLE_DISTANCE = 2.7  # the whole object framed at fovy 40 (world objects fit a sphere of radius 0.9)


@dataclass
class ExportConfig:
    """What a run writes when it ends (and ``distill3d export`` by default)."""

    turntable_frames: int = 48                          # frames of turntable.mp4 / .gif; 0: no turntable
    turntable_resolution: int = 128                     # their size in pixels
    mesh_resolution: int = 128                          # marching-cubes grid of a density field's mesh
    mesh_threshold: float = DEFAULT_DENSITY_THRESHOLD   # density level of the mesh surface

    def __post_init__(self) -> None:
        if self.turntable_frames < 0 or self.turntable_resolution <= 0 or self.mesh_resolution < 2:
            raise UserError("--turntable-frames must be >= 0, --turntable-resolution positive, --mesh-resolution >= 2")


def default_formats(scene: Scene, config: ExportConfig) -> tuple[str, ...]:
    """The asset (ply for Gaussians, glb for a field) and, unless turned off, the turntable videos."""
    videos = ("mp4", "gif") if config.turntable_frames > 0 else ()
    return ("ply" if scene.is_gaussians else "glb",) + videos


def export_scene(scene: Scene, out_dir: str | Path, config: ExportConfig,
                 formats: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Write ``formats`` (default ``default_formats``) of ``scene`` into ``out_dir``; format -> path."""
    formats = default_formats(scene, config) if formats is None else formats
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    frames = None
    for fmt in formats:
        path = out_dir / f"{EXPORT_STEMS.get(fmt, 'turntable')}.{fmt}"
        if fmt == "ply":
            if not scene.is_gaussians:
                raise UserError(f"a {scene.config.representation} run has no Gaussians to write as PLY; "
                                "use --format glb or obj")
            written[fmt] = write_gaussians_ply(path, scene.module.gaussians.detach().to("cpu"))
        elif fmt in ("glb", "obj"):
            if scene.is_gaussians:
                raise UserError("a Gaussians run exports as --format ply (meshes come from density fields)")
            with torch.no_grad():
                mesh = extract_mesh(scene.module, resolution=config.mesh_resolution, threshold=config.mesh_threshold)
            written[fmt] = write_mesh(path, mesh)
        elif fmt in ("mp4", "gif"):
            if frames is None:
                cams = turntable_cameras(config.turntable_frames or 48, resolution=config.turntable_resolution,
                                         distance=TURNTABLE_DISTANCE)
                frames = render_frames(lambda c: render_scene(scene, c.to(scene.device), background=1.0), cams)
            written[fmt] = write_video(path, frames, fps=24)
        else:
            raise UserError(f"unknown export format '{fmt}'; choose from {', '.join(EXPORT_FORMATS)}")
    return written
