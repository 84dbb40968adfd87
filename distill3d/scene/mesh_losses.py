"""Mesh regularisers of the refinement stage: normal consistency and Laplacian smoothness.

Consistent3D Sec. 4.3 refines a DMTet mesh "with normal consistency loss and Laplacian smoothness
loss", as Magic3D does; the weights are threestudio's refine-stage ones (100 and 100). Both are
returned as named terms for the method to weight, as the other regularisers are.

- Normal consistency: the mean over interior edges of ``1 - cos`` of the angle between the unit
  normals of the two faces sharing the edge (0 for a flat mesh; PyTorch3D's
  ``mesh_normal_consistency`` takes the same mean over edge-adjacent face pairs).
- Laplacian smoothness: the uniform ("umbrella") Laplacian ``L v_i = mean_{j ~ i} v_j - v_i``
  over each vertex's edge neighbours, averaged as ``mean_i |L v_i|`` (the norm, not its square,
  as PyTorch3D's ``mesh_laplacian_smoothing(method="uniform")`` for one mesh). It is 0 at interior
  vertices of a flat regular grid and pulls spikes back towards their neighbours' mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.scene.triangle_mesh import edge_neighbours, face_normals, unique_edges

__all__ = ["MeshRegularisersConfig", "laplacian_smoothness", "mesh_regularisers", "normal_consistency"]


@dataclass
class MeshRegularisersConfig:
    """Weights of the mesh regularisers of the refinement stage."""

    normal_consistency: float = 100.0    # weight of 1 - cos between normals of edge-sharing faces (threestudio refine)
    laplacian_smoothness: float = 100.0  # weight of the uniform Laplacian's mean norm (threestudio refine)


def normal_consistency(verts: Tensor, faces: Tensor) -> Tensor:
    """Scalar mean of 1 - cos(n_a, n_b) over edges shared by exactly two faces a, b (0 if none).

    verts [V, 3], faces [F, 3] consistently wound (else a shared edge reads as a fold of 180 degrees).
    """
    neighbour = edge_neighbours(faces)                                   # [F, 3]
    face = torch.arange(faces.shape[0], device=faces.device)[:, None].expand_as(neighbour)
    once = neighbour > face                                              # each shared edge counted once
    n = face_normals(verts, faces)
    cos = (n[face[once]] * n[neighbour[once]]).sum(-1)
    return (1.0 - cos).mean() if cos.numel() else verts.sum() * 0.0


def laplacian_smoothness(verts: Tensor, faces: Tensor) -> Tensor:
    """Scalar mean over vertices on an edge of |mean of edge neighbours - vertex| (uniform Laplacian)."""
    edges, _ = unique_edges(faces)                                       # [E, 2]
    a, b = edges[:, 0], edges[:, 1]
    total = torch.zeros_like(verts).index_add(0, a, verts[b]).index_add(0, b, verts[a])
    degree = torch.zeros(verts.shape[0], dtype=verts.dtype, device=verts.device)
    degree = degree.index_add(0, a, torch.ones_like(a, dtype=verts.dtype)).index_add(
        0, b, torch.ones_like(b, dtype=verts.dtype))
    used = degree > 0
    if not bool(used.any()):
        return verts.sum() * 0.0
    lap = total[used] / degree[used, None] - verts[used]
    return lap.norm(dim=-1).mean()


def mesh_regularisers(verts: Tensor, faces: Tensor) -> dict[str, Tensor]:
    """Both terms, unweighted, by the names of ``MeshRegularisersConfig``'s weights."""
    return {"normal_consistency": normal_consistency(verts, faces),
            "laplacian_smoothness": laplacian_smoothness(verts, faces)}
