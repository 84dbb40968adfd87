"""Triangle meshes as tensors: edge topology and normals.

A mesh is vertices [V, 3] and faces [F, 3] (long), wound counter-clockwise seen from outside,
so that (p1 - p0) x (p2 - p0) points out (the convention of ``mesh_extraction`` and ``dmtet``).
Edge ``i`` of face ``(v0, v1, v2)`` is the one opposite vertex ``i``: ``(v1, v2)``, ``(v2, v0)``,
``(v0, v1)``. The mesh regularisers (``mesh_losses``), the rasteriser's silhouette test
(``distill3d.render.antialias``) and the mesh renderer read meshes through these functions.
"""

from __future__ import annotations

import torch

__all__ = ["edge_neighbours", "face_edges", "face_normals", "unique_edges", "vertex_normals"]


def face_edges(faces: torch.Tensor) -> torch.Tensor:
    """faces [F, 3] -> [F, 3, 2] vertex pairs; edge i is opposite vertex i, in the face's winding."""
    return torch.stack([faces[:, [1, 2]], faces[:, [2, 0]], faces[:, [0, 1]]], dim=1)


def _edge_keys(faces: torch.Tensor) -> torch.Tensor:
    """[F * 3] int64 key min * n + max of every face edge (n = 1 + largest vertex index)."""
    pairs = face_edges(faces).reshape(-1, 2).long()
    n = int(faces.max().item()) + 1 if faces.numel() else 1
    return pairs.amin(dim=1) * n + pairs.amax(dim=1)


def unique_edges(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undirected edges of a mesh: edges [E, 2] (smaller index first) and, for every face, the
    index of each of its edges into them, [F, 3]."""
    keys = _edge_keys(faces)
    n = int(faces.max().item()) + 1 if faces.numel() else 1
    uniq, inverse = torch.unique(keys, return_inverse=True)
    return torch.stack([uniq // n, uniq % n], dim=1), inverse.reshape(-1, 3)


def edge_neighbours(faces: torch.Tensor) -> torch.Tensor:
    """[F, 3] long: the face across edge i of each face; -1 where the edge is on the boundary
    (one face) or non-manifold (three or more faces: no single neighbour to name)."""
    keys = _edge_keys(faces)
    _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    half = torch.arange(keys.numel(), device=faces.device)
    first = torch.full_like(counts, keys.numel()).scatter_reduce(0, inverse, half, "amin")
    last = torch.full_like(counts, -1).scatter_reduce(0, inverse, half, "amax")
    partner = first[inverse] + last[inverse] - half                     # the other half-edge of a pair
    neighbour = torch.where(counts[inverse] == 2, partner // 3, torch.full_like(half, -1))
    return neighbour.reshape(-1, 3)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """[F, 3] normals (p1 - p0) x (p2 - p0) of the faces: unit, or with length twice the area."""
    p = verts[faces]                                                    # [F, 3, 3]
    n = torch.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-20) if normalize else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[V, 3] unit vertex normals: the area-weighted mean of the normals of the faces around each
    vertex (zero for a vertex on no face)."""
    n = face_normals(verts, faces, normalize=False)
    acc = torch.zeros_like(verts).index_add(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(acc, dim=-1, eps=1e-20)
