"""The world's exact reference renderer: analytic sphere tracing of the object SDFs.

Independent of every learned renderer in distill3d. Rays first meet the shape's bounding
sphere (``shapes.BOUNDING_RADII``, at most ``OBJECT_RADIUS``) analytically, then march by the
SDF value until it drops below ``HIT_EPSILON``. Shading is Lambertian under one fixed directional light in the world frame
plus an ambient term, ``albedo * (AMBIENT + (1 - AMBIENT) * max(0, n . LIGHT_DIRECTION))``, so
appearance does not depend on the viewer (no shadows, no specular). Each pixel averages
``supersample x supersample`` sub-pixel rays (antialiasing). Batched, chunked to bound memory,
deterministic, on whatever device the cameras are.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from distill3d.cameras import Cameras
from distill3d.render_output import RenderOutput
from distill3d.world.prompts import WorldObject
from distill3d.world.shapes import BOUNDING_RADII, OBJECT_RADIUS, SHAPE_SDFS, object_albedo

_LIGHT = (0.55, 0.35, 0.75)
LIGHT_DIRECTION: tuple[float, float, float] = tuple(v / math.sqrt(sum(w * w for w in _LIGHT)) for v in _LIGHT)
"""Unit vector towards the light in the world frame (azimuth 32.5 deg, elevation 49 deg)."""

AMBIENT = 0.35
"""Share of the albedo seen on surfaces facing away from the light."""

HIT_EPSILON = 2e-5
"""A ray hits the surface where the SDF falls below this (world units)."""

LATE_HIT_EPSILON = 2e-3
"""Rays still marching after ``max_steps`` (grazing the silhouette) hit when this close."""

NORMAL_STEP = 5e-4
"""Finite-difference step of the SDF gradient (tetrahedral stencil)."""

CHUNK_RAYS = 1 << 17
"""Rays traced at once on the CPU; bounds memory whatever the batch and resolution."""

CHUNK_RAYS_CUDA = 1 << 21
"""Rays traced at once on a GPU, where each marching step costs kernel launches, not arithmetic."""

SdfFn = Callable[[torch.Tensor], torch.Tensor]


def sphere_trace(sdf: SdfFn, origins: torch.Tensor, dirs: torch.Tensor, max_steps: int = 128,
                 bounding_radius: float = OBJECT_RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """March rays [N, 3] (unit dirs) through ``sdf`` from where they enter the bounding sphere.

    Returns distances t [N] along the rays and hits [N] bool. Finished rays stay frozen in the
    working set until it is compacted, so every ray's result is independent of its batch.
    """
    b = (origins * dirs).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - (bounding_radius * 1.001 + 1e-4) ** 2)
    root = disc.clamp_min(0.0).sqrt()
    t = (-b - root).clamp_min(0.0)
    t_exit = -b + root
    hit = torch.zeros_like(t, dtype=torch.bool)
    ids = torch.nonzero((disc > 0) & (t_exit > 0)).squeeze(1)
    o, d, t_a, t_end = origins[ids], dirs[ids], t[ids], t_exit[ids]
    finished = torch.zeros_like(t_a, dtype=torch.bool)
    hit_a = torch.zeros_like(finished)
    for step in range(max_steps + 1):
        dist = sdf(o + t_a[:, None] * d)
        done = ~finished & (dist < (LATE_HIT_EPSILON if step == max_steps else HIT_EPSILON)) & (t_a <= t_end)
        t_a = torch.where(finished, t_a, t_a + dist)  # a hit takes its last step too: still safe, more exact
        hit_a |= done
        finished |= done | (t_a > t_end)
        n_running = ids.numel() - int(finished.sum())
        if n_running < 0.7 * ids.numel() or step == max_steps:
            t[ids], hit[ids] = t_a, hit_a
            keep = ~finished
            ids, o, d, t_a, t_end, finished, hit_a = (x[keep] for x in (ids, o, d, t_a, t_end, finished, hit_a))
        if n_running == 0:
            break
    return t, hit


_TETRAHEDRON = ((1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0), (1.0, 1.0, 1.0))


def sdf_normals(sdf: SdfFn, points: torch.Tensor) -> torch.Tensor:
    """Unit SDF gradients [N, 3] at points [N, 3] (tetrahedral finite differences)."""
    k = torch.tensor(_TETRAHEDRON, dtype=points.dtype, device=points.device)  # [4, 3]
    values = sdf(points[:, None, :] + NORMAL_STEP * k)  # [N, 4]
    grad = (values[..., None] * k).sum(dim=-2)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def shade(albedo: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Lambertian + ambient colour [..., 3] from albedo [..., 3] and unit normals [..., 3]."""
    light = torch.tensor(LIGHT_DIRECTION, dtype=normals.dtype, device=normals.device)
    lambert = (normals @ light).clamp_min(0.0)[..., None]
    return albedo * (AMBIENT + (1.0 - AMBIENT) * lambert)


def _trace_shape(shape: str, origins: torch.Tensor, dirs: torch.Tensor, max_steps: int,
                 chunk_rays: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rays [N, 3] against one shape -> (hit [N], distance t [N], normal [N, 3]); zeros off hits.

    Geometry depends on the shape word alone, so all objects of one shape are traced together;
    their colours are looked up afterwards at the hit points.
    """
    sdf = SHAPE_SDFS[shape]
    n = origins.shape[0]
    hit = torch.zeros(n, dtype=torch.bool, device=origins.device)
    t = torch.zeros(n, dtype=origins.dtype, device=origins.device)
    normal = torch.zeros_like(origins)
    for start in range(0, n, chunk_rays):
        sl = slice(start, min(start + chunk_rays, n))
        t_c, hit_c = sphere_trace(sdf, origins[sl], dirs[sl], max_steps, BOUNDING_RADII[shape])
        idx = torch.nonzero(hit_c).squeeze(1) + start
        points = origins[idx] + t_c[idx - start, None] * dirs[idx]
        hit[sl], t[sl] = hit_c, torch.where(hit_c, t_c, 0.0)
        normal[idx] = sdf_normals(sdf, points)
    return hit, t, normal


def _pool(x: torch.Tensor, s: int) -> torch.Tensor:
    """Sum s x s blocks: [B, H*s, W*s, C] -> [B, H, W, C]."""
    B, Hs, Ws, C = x.shape
    return x.reshape(B, Hs // s, s, Ws // s, s, C).sum(dim=(2, 4))


def render_reference(objects: WorldObject | Sequence[WorldObject], cameras: Cameras, *,
                     supersample: int = 2, background: float | tuple[float, float, float] = 1.0,
                     max_steps: int = 128, chunk_rays: int | None = None) -> RenderOutput:
    """Render world objects exactly: rgb [B, H, W, 3], alpha, depth [B, H, W, 1], normal [B, H, W, 3].

    ``objects`` is one object for all B cameras or a sequence of B objects. rgb is composited
    over ``background`` (grey level or RGB; white by default); alpha is the covered share of
    each pixel; depth is the OpenCV z-depth averaged over the sub-pixels that hit (0 where none
    does); normals are world-space, averaged over hits and renormalised (0 where none).
    """
    B, s = len(cameras), int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    objs = [objects] * B if isinstance(objects, WorldObject) else list(objects)
    if len(objs) != B:
        raise ValueError(f"{len(objs)} objects for {B} cameras")
    cameras = cameras.to(dtype=torch.float32)
    if chunk_rays is None:
        chunk_rays = CHUNK_RAYS_CUDA if cameras.device.type == "cuda" else CHUNK_RAYS
    origins, dirs = cameras.rays(s)  # [B, H*s, W*s, 3]
    cos_forward = (dirs * cameras.forward[:, None, None, :]).sum(-1)  # [B, H*s, W*s]
    hit = torch.zeros(dirs.shape[:-1], dtype=torch.bool, device=dirs.device)
    t = torch.zeros(dirs.shape[:-1], dtype=dirs.dtype, device=dirs.device)
    colour, normal = torch.zeros_like(dirs), torch.zeros_like(dirs)
    for shape in dict.fromkeys(o.shape for o in objs):
        cams = torch.tensor([i for i, o in enumerate(objs) if o.shape == shape], device=dirs.device)
        size = dirs[cams].shape
        h, t_s, n_s = _trace_shape(shape, origins[cams].reshape(-1, 3), dirs[cams].reshape(-1, 3),
                                   max_steps, chunk_rays)
        hit[cams], t[cams], normal[cams] = h.reshape(size[:-1]), t_s.reshape(size[:-1]), n_s.reshape(size)
    for obj in dict.fromkeys(objs):
        cams = torch.tensor([i for i, o in enumerate(objs) if o == obj], device=dirs.device)
        where = hit[cams]  # [n, H*s, W*s] of this object's cameras only
        points = origins[cams][where] + t[cams][where][:, None] * dirs[cams][where]
        shaded = torch.zeros_like(dirs[cams])
        shaded[where] = shade(object_albedo(obj, points), normal[cams][where])
        colour[cams] = shaded

    hits = _pool(hit[..., None].to(dirs.dtype), s)  # [B, H, W, 1] number of hit sub-pixels
    alpha = hits / (s * s)
    bg = torch.as_tensor(background, dtype=dirs.dtype, device=dirs.device).expand(3)
    rgb = _pool(colour, s) / (s * s) + (1.0 - alpha) * bg
    depth = _pool((t * cos_forward)[..., None], s) / hits.clamp_min(1.0)
    n_sum = _pool(normal, s)
    normal_out = n_sum / n_sum.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return RenderOutput(rgb=rgb.clamp(0.0, 1.0), alpha=alpha, depth=depth, normal=normal_out)
