"""Render a triangle mesh: rasterise, colour the visible points, antialias the outline.

Colour comes from per-vertex colours (interpolated) or from a colour function of the visible
world points, e.g. a NeRF's colour field as Consistent3D's refinement stage textures its DMTet
mesh with the coarse stage's colour field (Sec. 4.3; Magic3D's "volume texture"). Alpha is the
coverage: 1 on the mesh, 0 off it, fractional on silhouette pixels after ``antialias``, which
blends the colour (already composited over the background) and the alpha alike and gives the
vertices their outline gradient. Depth is the z-depth of the visible point (0 off the mesh);
normals are world-space unit vertex normals (area-weighted, interpolated) or face normals, 0 off
the mesh. Depth and normals are not antialiased.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.render.antialias import antialias as antialias_image
from distill3d.render.backgrounds import background_image
from distill3d.render.rasterize import interpolate, rasterize
from distill3d.render_output import RenderOutput
from distill3d.scene.triangle_mesh import edge_neighbours, face_normals, vertex_normals

__all__ = ["render_mesh"]

ColorFn = Callable[[Tensor], Tensor]


def render_mesh(verts: Tensor, faces: Tensor, cameras: Cameras, *, vertex_colors: Tensor | None = None,
                color_fn: ColorFn | None = None, background: float | Tensor = 1.0, antialias: bool = True,
                smooth_normals: bool = True, near: float = 1e-3) -> RenderOutput:
    """Render a mesh from B cameras -> RenderOutput rgb [B, H, W, 3], alpha, depth [B, H, W, 1], normal.

    verts: [V, 3] world positions; faces: [F, 3] long, wound counter-clockwise seen from outside.
    vertex_colors: [V, 3] in [0, 1], or color_fn: world points [N, 3] -> rgb [N, 3] evaluated at the
        visible point of each covered pixel (exactly one of the two).
    background: colour behind the mesh: a float, [3], [B, 3] or [B, H, W, 3].
    antialias: blend the outline by coverage (and give the vertices the outline's gradient).
    smooth_normals: interpolated area-weighted vertex normals; False gives flat face normals.
    near: faces with a vertex nearer than this to a camera's plane are not drawn.
    """
    if (vertex_colors is None) == (color_fn is None):
        raise ValueError("give exactly one of vertex_colors and color_fn")
    faces = faces.long()
    rast = rasterize(verts, faces, cameras, near=near)
    B, H, W = rast.face_id.shape
    mask = rast.mask[..., None]                                          # [B, H, W, 1]
    if vertex_colors is not None:
        albedo = interpolate(vertex_colors.to(verts), rast)
    else:
        points = interpolate(verts, rast).reshape(-1, 3)
        hit = torch.nonzero(mask.reshape(-1)).squeeze(1)
        colours = color_fn(points[hit])
        albedo = torch.zeros(B * H * W, 3, dtype=colours.dtype, device=colours.device)
        albedo = albedo.index_copy(0, hit, colours).reshape(B, H, W, 3)
    alpha = mask.to(albedo.dtype)
    rgb = torch.where(mask, albedo, background_image(background, B, albedo).expand(B, H, W, 3))
    if antialias:
        blended = antialias_image(torch.cat([rgb, alpha], dim=-1), rast, neighbours=edge_neighbours(faces))
        rgb, alpha = blended[..., :3], blended[..., 3:]

    if smooth_normals:
        normal = interpolate(vertex_normals(verts, faces), rast)
    else:
        fid = rast.face_id.clamp_min(0)
        normal = face_normals(verts, faces)[fid] * mask
    normal = torch.where(mask, F.normalize(normal, dim=-1, eps=1e-20), torch.zeros_like(normal))
    return RenderOutput(rgb=rgb, alpha=alpha, depth=rast.depth[..., None], normal=normal)
