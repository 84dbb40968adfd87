"""DMTet: the Kuhn tetrahedral grid and differentiable marching tetrahedra."""

from __future__ import annotations

import math

import pytest
import torch
import trimesh

from distill3d.scene.dmtet import DMTet, DMTetConfig
from distill3d.scene.field import cube_aabb
from distill3d.scene.tetrahedra import kuhn_grid, marching_tetrahedra


def _sphere_sdf(radius: float, centre=(0.0, 0.0, 0.0)):
    c = torch.tensor(centre)
    return lambda p: (p - c).norm(dim=-1) - radius


def _trimesh(verts: torch.Tensor, faces: torch.Tensor) -> trimesh.Trimesh:
    return trimesh.Trimesh(verts.detach().double().numpy(), faces.numpy(), process=False)


def test_kuhn_grid_fills_the_cube_with_positive_tetrahedra():
    verts, tets = kuhn_grid(3, radius=0.5)
    assert verts.shape == (64, 3) and tets.shape == (6 * 27, 4)
    p = verts[tets]
    volumes = torch.linalg.det(p[:, 1:] - p[:, :1]) / 6.0
    assert (volumes > 0).all()
    assert volumes.sum().item() == pytest.approx(1.0, abs=1e-5)      # the whole cube, no overlap
    # conforming: every interior triangle is shared by exactly two tetrahedra
    tri = torch.cat([tets[:, [1, 2, 3]], tets[:, [0, 2, 3]], tets[:, [0, 1, 3]], tets[:, [0, 1, 2]]])
    _, counts = torch.unique(torch.sort(tri, dim=1).values, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    assert int((counts == 1).sum()) == 6 * 9 * 2                       # the boundary: 2 per square


@pytest.mark.parametrize("centre", [(0.0, 0.0, 0.0), (0.07, -0.11, 0.05)])
def test_sphere_mesh_is_watertight_outward_and_on_the_sphere(centre):
    radius = 0.55
    model = DMTet(DMTetConfig(resolution=20, radius=1.0))
    model.init_from_sdf(_sphere_sdf(radius, centre))
    verts, faces = model.mesh()
    mesh = _trimesh(verts, faces)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(4.0 / 3.0 * math.pi * radius ** 3, rel=0.05)   # positive: outward
    normals = torch.tensor(mesh.face_normals, dtype=torch.float32)
    outward = torch.tensor(mesh.triangles_center, dtype=torch.float32) - torch.tensor(centre)
    assert ((normals * outward).sum(-1) > 0).float().mean() > 0.99
    distance = (verts.detach() - torch.tensor(centre)).norm(dim=-1)
    assert (distance - radius).abs().max() < model.cell_size


def test_gradients_reach_the_sdf_and_the_deformations():
    model = DMTet(DMTetConfig(resolution=8, radius=1.0, deformation=True))
    model.init_from_sdf(_sphere_sdf(0.5))
    verts, _ = model.mesh()
    (verts.norm(dim=-1) ** 2).sum().backward()
    assert model.sdf.grad.abs().sum() > 0 and model.deformation.grad.abs().sum() > 0
    # only vertices on sign-changing edges receive gradient
    assert (model.sdf.grad != 0).sum() < model.sdf.numel() // 2
    # growing the SDF shrinks the sphere: d(mean radius)/d(sdf) <= 0 everywhere
    model.zero_grad()
    verts, _ = model.mesh()
    verts.norm(dim=-1).mean().backward()
    assert (model.sdf.grad <= 1e-7).all()


def test_deformations_are_bounded_to_half_a_cell():
    model = DMTet(DMTetConfig(resolution=4, radius=1.0))
    with torch.no_grad():
        model.deformation.fill_(50.0)
    moved = model.vertices() - model.grid_vertices
    assert moved.abs().max() <= 0.5 * model.cell_size + 1e-6


def test_marching_tetrahedra_on_a_single_tetrahedron():
    verts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    tets = torch.tensor([[0, 1, 2, 3]])
    for sdf, n_faces in (([-1.0, 1.0, 1.0, 1.0], 1), ([-1.0, -1.0, 1.0, 1.0], 2), ([1.0, 1.0, 1.0, -3.0], 1),
                         ([1.0, 1.0, 1.0, 1.0], 0)):
        points, faces = marching_tetrahedra(verts, tets, torch.tensor(sdf))
        assert faces.shape == (n_faces, 3)
        if n_faces:
            values = torch.tensor(sdf)
            inside = verts[values < 0].mean(0)
            for f in faces:
                p = points[f]
                normal = torch.cross(p[1] - p[0], p[2] - p[0], dim=-1)
                assert torch.dot(normal, p.mean(0) - inside) > 0      # away from the inside corners
    # the surface vertex is the linear zero of the SDF on its edge
    points, _ = marching_tetrahedra(verts, tets, torch.tensor([-1.0, 3.0, 3.0, 3.0]))
    assert torch.allclose(points.amax(0), torch.tensor([0.25, 0.25, 0.25]))


class _Ball:
    """A density field falling linearly from 50 at the centre to 0 at radius 0.5 (10 at radius 0.4)."""

    @property
    def aabb(self):
        return cube_aabb(1.0)

    def query(self, points):
        density = (50.0 * (1.0 - points.norm(dim=-1) / 0.5)).clamp_min(0.0)
        return density, torch.full_like(points, 0.5)


def test_init_from_density_subtracts_the_threshold():
    model = DMTet(DMTetConfig(resolution=10, radius=1.0, deformation=False))
    model.init_from_density(_Ball(), threshold=10.0)
    density, _ = _Ball().query(model.grid_vertices)
    assert torch.allclose(model.sdf, 10.0 - density)
    verts, faces = model.mesh()
    assert _trimesh(verts, faces).is_watertight
    radius = verts.detach().norm(dim=-1)                               # density 10 at radius 0.4
    assert (radius - 0.4).abs().max() < 0.5 * model.cell_size          # linear interpolation of |p|
