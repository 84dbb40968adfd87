"""Mesh regularisers: normal consistency and uniform Laplacian smoothness, flat versus noisy."""

from __future__ import annotations

import pytest
import torch

from distill3d.scene.mesh_losses import (
    MeshRegularisersConfig,
    laplacian_smoothness,
    mesh_regularisers,
    normal_consistency,
)
from distill3d.scene.triangle_mesh import edge_neighbours, unique_edges, vertex_normals


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A flat n x n vertex grid in the XY plane, two triangles per square, wound towards +Z."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="ij")
    verts = torch.stack([xs, ys, torch.zeros_like(xs)], dim=-1).reshape(-1, 3) / (n - 1)
    i = torch.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).reshape(-1)
    faces = torch.cat([torch.stack([a, a + 1, a + n + 1], 1), torch.stack([a, a + n + 1, a + n], 1)])
    return verts, faces


def _interior(n: int) -> torch.Tensor:
    idx = torch.arange(n * n).reshape(n, n)
    return idx[1:-1, 1:-1].reshape(-1)


def test_topology_of_a_grid():
    verts, faces = _grid(4)
    edges, _ = unique_edges(faces)
    assert len(edges) == 2 * 4 * 3 + 3 * 3            # horizontal and vertical, then diagonal edges
    neighbours = edge_neighbours(faces)
    assert int((neighbours < 0).sum()) == 4 * 3      # boundary edges
    assert torch.allclose(vertex_normals(verts, faces), torch.tensor([0.0, 0.0, 1.0]).expand(16, 3))


def test_flat_mesh_costs_nothing_and_noise_costs():
    verts, faces = _grid(6)
    assert normal_consistency(verts, faces).item() == pytest.approx(0.0, abs=1e-6)
    # a flat regular grid has no Laplacian inside; the boundary vertices do (one-sided neighbours)
    noisy = verts.clone()
    noisy[_interior(6), 2] += 0.05 * torch.randn(16, generator=torch.Generator().manual_seed(0))
    assert normal_consistency(noisy, faces) > 0.01
    assert laplacian_smoothness(noisy, faces) > laplacian_smoothness(verts, faces) + 0.005
    # a gradient step on either term makes the noisy mesh smoother
    for term in (normal_consistency, laplacian_smoothness):
        v = noisy.clone().requires_grad_(True)
        loss = term(v, faces)
        loss.backward()
        with torch.no_grad():
            stepped = v - 0.02 * v.grad / v.grad.norm()
        assert term(stepped, faces) < loss


def test_a_spike_is_pulled_back():
    verts, faces = _grid(5)
    spike = verts.clone().requires_grad_(True)
    centre = 12
    with torch.no_grad():
        spike[centre, 2] = 0.3
    terms = mesh_regularisers(spike, faces)
    assert set(terms) == {"normal_consistency", "laplacian_smoothness"}
    config = MeshRegularisersConfig()
    total = config.normal_consistency * terms["normal_consistency"] + \
        config.laplacian_smoothness * terms["laplacian_smoothness"]
    total.backward()
    assert spike.grad[centre, 2] > 0                 # descending lowers the spike
