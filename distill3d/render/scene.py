"""Render a ``Scene`` of the scene factory, whatever its representation."""

from __future__ import annotations

from distill3d.cameras import Cameras
from distill3d.render.splat import render_gaussians
from distill3d.render.volume import render_volume
from distill3d.render_output import RenderOutput
from distill3d.scene.factory import Scene


def render_scene(scene: Scene, cameras: Cameras, *, background: float = 1.0, train: bool = False) -> RenderOutput:
    """rgb [B, H, W, 3], alpha [B, H, W, 1] and depth of ``scene`` seen by ``cameras`` [B], composited over
    ``background``. Density fields are volume-rendered with ``scene.config.num_samples`` samples per ray,
    stratified when ``train``; Gaussians are splatted (gsplat on CUDA, pure torch elsewhere)."""
    if scene.is_gaussians:
        return render_gaussians(scene.module.gaussians, cameras, background=background)
    return render_volume(scene.module, cameras, num_samples=scene.config.num_samples, background=background,
                         stratified=train, compute_normals=False)
