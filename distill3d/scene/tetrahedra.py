"""Tetrahedral grids and differentiable marching tetrahedra (DMTet, Shen et al. 2021, Sec. 3.1-3.2).

Grid: the cube [-r, r]^3 cut into R^3 cubes, each split into the 6 tetrahedra of its Kuhn
(Freudenthal) subdivision -- the tetrahedra ``0 -> e_a -> e_a + e_b -> 1`` along the main diagonal,
one per ordering (a, b, c) of the axes. Every cube uses the same diagonal direction, so two cubes
cut their shared square along the same diagonal and the tetrahedra fit face to face: a conforming
mesh without hanging faces, which is what makes the extracted surface watertight. All tetrahedra
are stored positively oriented (det(v1 - v0, v2 - v0, v3 - v0) > 0).

Marching tetrahedra: a vertex is inside where its SDF is negative (the convention of
``mesh_extraction``: negative inside, positive outside). On every edge whose ends differ the
surface vertex is the zero of the linear interpolant,
``p = p_a + s_a / (s_a - s_b) (p_b - p_a)`` (DMTet Eq. 1), differentiable w.r.t. both SDF values
and both (deformed) positions; one vertex per grid edge, shared by the tetrahedra around it. A
tetrahedron with one or three inside vertices gives a triangle, with two a quad (two triangles).
The 16-case table is built below from a reference tetrahedron: each triangle is wound so that
its normal ``(p1 - p0) x (p2 - p0)`` points from the inside corners to the outside ones, which
holds for every positively oriented tetrahedron, so the mesh's normals point outwards.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = ["TET_EDGES", "kuhn_grid", "marching_tetrahedra"]

TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
"""The six edges of a tetrahedron, as pairs of its corners."""


def _kuhn_cube() -> list[tuple[tuple[int, int, int], ...]]:
    """The 6 positively oriented tetrahedra of the unit cube, as corner offsets (x, y, z) in {0, 1}."""
    tets = []
    for order in itertools.permutations(range(3)):
        corner, path = [0, 0, 0], [(0, 0, 0)]
        for axis in order:
            corner[axis] = 1
            path.append(tuple(corner))
        edges = torch.tensor(path[1:], dtype=torch.float64) - torch.tensor(path[0], dtype=torch.float64)
        if torch.linalg.det(edges) < 0:   # odd orderings are mirrored: swap two corners
            path[1], path[2] = path[2], path[1]
        tets.append(tuple(path))
    return tets


def kuhn_grid(resolution: int, radius: float = 1.0, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Tetrahedral grid of [-radius, radius]^3 with ``resolution`` cubes per axis.

    Returns vertices [(R + 1)^3, 3] (vertex (i, j, k) at index (i (R + 1) + j) (R + 1) + k) and
    tetrahedra [6 R^3, 4] long, positively oriented.
    """
    R = int(resolution)
    if R < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    axis = torch.linspace(-radius, radius, R + 1, device=device, dtype=dtype)
    verts = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    n = R + 1
    cube = torch.arange(R, device=device)
    i, j, k = torch.meshgrid(cube, cube, cube, indexing="ij")
    base = ((i * n + j) * n + k).reshape(-1, 1)                          # [R^3, 1] cube's low corner
    offsets = torch.tensor([[(x * n + y) * n + z for x, y, z in tet] for tet in _kuhn_cube()],
                           device=device)                                # [6, 4]
    tets = (base[:, None, :] + offsets[None]).reshape(-1, 4)
    return verts, tets


def _triangle_table() -> tuple[Tensor, Tensor]:
    """Case (bit i set = corner i inside) -> up to 2 triangles as indices into ``TET_EDGES``
    [16, 2, 3] (-1 unused), and the number of triangles [16]."""
    ref = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # positive
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for case in range(16):
        inside = [c for c in range(4) if case >> c & 1]
        outside = [c for c in range(4) if not case >> c & 1]
        if not inside or not outside:
            continue
        if len(inside) == 2:   # a quad: its corners in cyclic order, consecutive edges share a corner
            (i, j), (k, m) = inside, outside
            ring = [(i, k), (j, k), (j, m), (i, m)]
            tris = [ring[:3], [ring[0], ring[2], ring[3]]]
        else:
            tris = [[(a, b) for a in inside for b in outside]]
        towards_out = ref[outside].mean(0) - ref[inside].mean(0)
        for t, tri in enumerate(tris):
            mid = torch.stack([(ref[a] + ref[b]) / 2 for a, b in tri])
            if torch.dot(torch.linalg.cross(mid[1] - mid[0], mid[2] - mid[0]), towards_out) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[case, t] = torch.tensor([TET_EDGES.index(tuple(sorted(e))) for e in tri])
        count[case] = len(tris)
    return table, count


_TABLE, _TABLE_COUNT = _triangle_table()


def marching_tetrahedra(verts: Tensor, tets: Tensor, sdf: Tensor) -> tuple[Tensor, Tensor]:
    """The zero level set of ``sdf`` on a tetrahedral grid as a triangle mesh (module docstring).

    verts: [N, 3] grid vertex positions (deformed or not); tets: [T, 4] long, positively oriented;
    sdf: [N] signed distance, negative inside.
    Returns vertices [M, 3] (differentiable w.r.t. ``verts`` and ``sdf``) and faces [K, 3] long,
    wound outwards. Empty [0, 3] tensors when no tetrahedron changes sign.
    """
    device = verts.device
    with torch.no_grad():
        inside = sdf < 0                                                 # [N]
        corner_inside = inside[tets]                                     # [T, 4]
        n_inside = corner_inside.sum(dim=1)
        cut = tets[(n_inside > 0) & (n_inside < 4)]                      # [T', 4]
        edges = cut[:, torch.tensor(TET_EDGES, device=device)]           # [T', 6, 2]
        edges = torch.sort(edges, dim=-1).values
        crossing = inside[edges[..., 0]] != inside[edges[..., 1]]        # [T', 6]
        keys = edges[..., 0] * verts.shape[0] + edges[..., 1]
        unique_keys, slot = torch.unique(keys[crossing], return_inverse=True)
        edge_vertex = torch.full(keys.shape, -1, dtype=torch.long, device=device)
        edge_vertex[crossing] = slot                                     # [T', 6] surface vertex per edge
        a, b = unique_keys // verts.shape[0], unique_keys % verts.shape[0]
        bits = torch.tensor([1, 2, 4, 8], device=device)
        case = (inside[cut].long() * bits).sum(dim=1)                    # [T']
    s_a, s_b = sdf[a][:, None], sdf[b][:, None]
    points = verts[a] + s_a / (s_a - s_b) * (verts[b] - verts[a])        # DMTet Eq. 1
    table, count = _TABLE.to(device), _TABLE_COUNT.to(device)
    tris = table[case]                                                   # [T', 2, 3] edge indices
    used = torch.arange(2, device=device)[None, :] < count[case][:, None]  # [T', 2]
    faces = torch.gather(edge_vertex[:, None, :].expand(-1, 2, -1), 2, tris.clamp_min(0))  # [T', 2, 3]
    return points, faces[used]
