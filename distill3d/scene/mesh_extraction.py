"""Marching-cubes meshes from density fields and signed distance functions.

The scalar is sampled on a regular ``resolution^3`` grid of points spanning the bounds
(corners included), in chunks, and ``skimage.measure.marching_cubes`` extracts the level set;
vertices are mapped back to world coordinates and faces are wound so that normals point out
of the solid (towards lower density / positive SDF).

- A ``DensityField`` (anything with ``query``): the surface is ``density = threshold``,
  ``DEFAULT_DENSITY_THRESHOLD`` (10 per world unit) unless given: at that density a
  0.1-unit layer absorbs 1 - e^-1 = 63% of the light, so the level sits where renders become
  opaque. Vertex colours are the field's colour at the vertices.
- A plain callable ``sdf(points [N, 3]) -> [N]``: signed distance, **negative inside**; the
  surface is ``sdf = threshold`` (default 0). Vertex colours come from ``color_fn`` if given.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import trimesh
from skimage import measure
from tqdm.auto import tqdm

from distill3d.errors import UserError
from distill3d.scene.field import DensityField, cube_aabb

__all__ = ["extract_mesh", "DEFAULT_DENSITY_THRESHOLD"]

DEFAULT_DENSITY_THRESHOLD = 10.0

PointFn = Callable[[torch.Tensor], torch.Tensor]


def _as_bounds(bounds, field) -> torch.Tensor:
    """None (the field's box, else [-1, 1]^3), a half size, or (min xyz, max xyz) -> [2, 3]."""
    if bounds is None:
        box = field.aabb if isinstance(field, DensityField) else cube_aabb(1.0)
        return box.detach().to("cpu", torch.float64)
    if isinstance(bounds, (int, float)):
        return cube_aabb(float(bounds), dtype=torch.float64)
    box = torch.as_tensor(np.asarray(bounds, dtype=np.float64))
    if box.shape != (2, 3) or not bool((box[1] > box[0]).all()):
        raise UserError("bounds must be a half size or (min xyz, max xyz) with min < max, "
                        f"got {bounds}")
    return box


def _evaluate(fn: PointFn, points: np.ndarray, device, dtype, chunk: int, desc: str) -> np.ndarray:
    """fn on points [N, 3] in chunks -> numpy [N, ...]."""
    outs = []
    with torch.no_grad():
        for start in tqdm(range(0, len(points), chunk), desc=desc, leave=False, disable=None):
            p = torch.as_tensor(points[start:start + chunk], device=device, dtype=dtype)
            outs.append(fn(p).detach().to("cpu", torch.float64).numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def extract_mesh(field: DensityField | PointFn, *, resolution: int = 128,
                 threshold: float | None = None,
                 bounds: float | Sequence[Sequence[float]] | torch.Tensor | None = None,
                 color_fn: PointFn | None = None, chunk_points: int = 2 ** 18) -> trimesh.Trimesh:
    """Mesh of a density field's level set or an SDF's zero set (see the module docstring).

    field: a ``DensityField`` or an SDF callable points [N, 3] -> [N] (negative inside).
    resolution: grid samples per axis. threshold: the level (density or SDF value).
    bounds: a half size, (min xyz, max xyz), or None for the field's box ([-1, 1]^3 for an SDF).
    color_fn: points [N, 3] -> rgb [N, 3] in [0, 1]; defaults to the field's colour.
    Returns a trimesh.Trimesh with uint8 RGBA ``visual.vertex_colors`` when colours are known.
    """
    if resolution < 2:
        raise UserError(f"resolution must be >= 2, got {resolution}")
    is_density = isinstance(field, DensityField)
    if not is_density and not callable(field):
        raise UserError("extract_mesh needs a density field (with .query) or an SDF callable")
    box = _as_bounds(bounds, field)
    if is_density:
        ref = field.aabb
        device, dtype = ref.device, ref.dtype
        # marching cubes on -density: "inside = lower value", as for an SDF
        level = -(DEFAULT_DENSITY_THRESHOLD if threshold is None else float(threshold))

        def scalar_fn(p: torch.Tensor) -> torch.Tensor:
            return -field.query(p)[0]

        if color_fn is None:
            def color_fn(p: torch.Tensor) -> torch.Tensor:
                return field.query(p)[1]
    else:
        device, dtype = torch.device("cpu"), torch.float32
        level = 0.0 if threshold is None else float(threshold)
        scalar_fn = field

    axes = [np.linspace(box[0, i].item(), box[1, i].item(), resolution) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    values = _evaluate(scalar_fn, grid, device, dtype, chunk_points, "mesh grid")
    volume = values.reshape(resolution, resolution, resolution)
    lo, hi = float(volume.min()), float(volume.max())
    if not lo < level < hi:
        what = (f"density threshold {-level:g} is outside the field's density range "
                f"[{-hi:g}, {-lo:g}]") if is_density else (
                f"SDF level {level:g} is outside the sampled SDF range [{lo:g}, {hi:g}]")
        raise UserError(f"no surface to extract: {what}; choose a threshold inside the range")

    spacing = tuple(float(s) for s in ((box[1] - box[0]) / (resolution - 1)).tolist())
    verts, faces, _, _ = measure.marching_cubes(volume, level=level, spacing=spacing,
                                                gradient_direction="descent")
    verts = verts + box[0].numpy()[None, :]
    # "descent" winding with inside = lower values: face normals point out of the solid
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    if color_fn is not None and len(verts):
        rgb = _evaluate(color_fn, np.asarray(mesh.vertices), device, dtype, chunk_points,
                        "mesh colours")
        rgba = np.concatenate([np.clip(rgb.reshape(-1, 3), 0.0, 1.0) * 255.0,
                               np.full((len(rgb), 1), 255.0)], axis=1)
        mesh.visual.vertex_colors = np.round(rgba).astype(np.uint8)
    return mesh
