"""Renderers: 3D scene + cameras -> images (``RenderOutput``).

- ``render_volume``: emission-absorption volume rendering of any density field (voxels, NeRF).
- ``render_gaussians``: splatting of 3D Gaussians, through gsplat on CUDA and pure torch elsewhere.
- ``render_scene``: either, for a ``Scene`` of the scene factory.
"""

from distill3d.render.scene import render_scene
from distill3d.render.splat import render_gaussians
from distill3d.render.volume import VolumeRenderExtras, render_volume, render_volume_with_extras
from distill3d.render_output import RenderOutput

__all__ = ["RenderOutput", "VolumeRenderExtras", "render_gaussians", "render_scene", "render_volume",
           "render_volume_with_extras"]
