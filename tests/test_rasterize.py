"""The pure-torch mesh rasteriser: against the world's exact renderer, and its gradients."""

from __future__ import annotations

import math

import pytest
import torch

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.metrics import mask_iou
from distill3d.render.antialias import antialias
from distill3d.render.mesh import render_mesh
from distill3d.render.rasterize import interpolate, rasterize
from distill3d.scene.mesh_extraction import extract_mesh
from distill3d.world import shapes
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference


def _world_mesh(shape: str, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = extract_mesh(getattr(shapes, shape), resolution=resolution)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


def _ring_cameras(n: int, resolution: int) -> Cameras:
    elevations = torch.tensor([20.0, 40.0, -10.0, 60.0]).repeat(n)[:n]
    return orbit_cameras(elevations, torch.linspace(0.0, 330.0, n), 2.0, 40.0, resolution, resolution)


@pytest.mark.parametrize("shape", ["sphere", "torus"])
def test_matches_the_reference_renderer(shape):
    """Masks and depths of a marching-cubes mesh of a world SDF line up with sphere tracing."""
    verts, faces = _world_mesh(shape, 96)
    cameras = _ring_cameras(4, 64)
    obj = WorldObject("red", "plain", shape)
    out = render_mesh(verts, faces, cameras, vertex_colors=torch.full_like(verts, 0.5))
    coverage = render_reference(obj, cameras, supersample=4)
    assert mask_iou(out.alpha, coverage.alpha).min() > 0.99
    assert (out.alpha - coverage.alpha).abs().mean() < 0.005                      # antialiased coverage
    centres = render_reference(obj, cameras, supersample=1)                       # the same pixel rays
    hard = render_mesh(verts, faces, cameras, vertex_colors=torch.full_like(verts, 0.5), antialias=False)
    assert ((hard.alpha > 0) != (centres.alpha > 0)).float().mean() < 2e-3
    both = (hard.alpha[..., 0] > 0) & (centres.alpha[..., 0] > 0)
    error = (hard.depth - centres.depth)[..., 0][both].abs()
    assert error.median() < 5e-4 and error.mean() < 3e-3
    normal_cos = (hard.normal * centres.normal).sum(-1)[both]
    assert normal_cos.median() > 0.999


def test_pixel_rays_are_those_of_the_cameras():
    """A triangle's pixel-centre coverage, barycentrics and depth agree with Cameras.rays."""
    cameras = orbit_cameras([15.0, -30.0], [10.0, 200.0], 2.5, 35.0, 24, 20)
    verts = torch.tensor([[0.3, -0.6, -0.4], [-0.2, 0.7, -0.3], [0.1, 0.0, 0.8]])
    faces = torch.tensor([[0, 1, 2]])
    rast = rasterize(verts, faces, cameras)
    origins, dirs = cameras.rays()
    n = torch.cross(verts[1] - verts[0], verts[2] - verts[0], dim=-1)
    t = ((verts[0] - origins) @ n) / (dirs @ n)
    points = origins + t[..., None] * dirs
    # barycentrics of the ray-plane point, by areas
    def area(a, b, c):
        a, b, c = torch.broadcast_tensors(a, b, c)
        return (torch.cross(b - a, c - a, dim=-1) * n).sum(-1)
    total = area(verts[0], verts[1], verts[2])
    bary = torch.stack([area(points, verts[1], verts[2]), area(verts[0], points, verts[2]),
                        area(verts[0], verts[1], points)], dim=-1) / total
    inside = (bary >= 0).all(-1)
    assert torch.equal(rast.mask, inside)
    assert torch.allclose(rast.bary[inside], bary[inside], atol=1e-5)
    z = t * (dirs * cameras.forward[:, None, None]).sum(-1)
    assert torch.allclose(rast.depth[inside], z[inside], atol=1e-5)


def test_nearest_face_wins_and_chunking_changes_nothing():
    verts, faces = _world_mesh("torus", 24)
    cameras = _ring_cameras(3, 32)
    whole = rasterize(verts, faces, cameras)
    pieces = rasterize(verts, faces, cameras, chunk=97)
    assert torch.equal(whole.face_id, pieces.face_id)
    assert torch.equal(whole.depth, pieces.depth)
    # behind the visible face no face of the mesh is nearer along the pixel ray
    assert (whole.depth[whole.mask] > 0).all()
    shifted = rasterize(verts + torch.tensor([0.0, 0.0, 5.0]), faces, cameras)
    assert shifted.mask.float().mean() < whole.mask.float().mean()


def test_barycentric_and_depth_gradients_match_finite_differences():
    cameras = orbit_cameras(10.0, 25.0, 2.0, 40.0, 12, 12).to(dtype=torch.float64)
    verts = torch.tensor([[0.0, -0.5, -0.4], [0.0, 0.6, -0.3], [0.1, 0.0, 0.5], [-0.3, 0.5, 0.4]],
                         dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [2, 1, 3]])
    attrs = torch.rand(4, 2, dtype=torch.float64)

    def images(v):
        rast = rasterize(v, faces, cameras)
        return rast.bary, rast.depth, interpolate(attrs, rast)

    assert torch.autograd.gradcheck(images, (verts,), eps=1e-6, atol=1e-5)


def _square(offset: torch.Tensor, half: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """A square in the world's YZ plane (facing +X) centred at (0, offset)."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * half + offset
    verts = torch.cat([torch.zeros(4, 1), corners], dim=1)
    return verts, torch.tensor([[0, 1, 2], [0, 2, 3]])


def _front_camera(resolution: int) -> Cameras:
    """Camera on +X looking at the origin: image right is world +Y, image down is world -Z."""
    return orbit_cameras(0.0, 0.0, 2.0, 2.0 * math.degrees(math.atan(0.5)), resolution, resolution)


def test_antialiased_alpha_is_the_coverage_of_a_straight_edge():
    """A vertical outline at x = 10.3 px covers 0.3 of pixel 10; one at 11.7 px covers 0.7 of pixel 11."""
    cameras = _front_camera(20)                       # fx = 20: one pixel is 0.1 world units at the square
    for edge_px, column, share in ((10.3, 10, 0.3), (11.7, 11, 0.7)):
        right = (edge_px - 10.0) / 10.0               # world Y of the square's right edge
        verts, faces = _square(torch.tensor([right - 0.3, 0.0]))
        out = render_mesh(verts, faces, cameras, vertex_colors=torch.ones_like(verts), background=0.0)
        row = out.alpha[0, 10, :, 0]
        assert row[column].item() == pytest.approx(share, abs=1e-4)
        assert row[column - 2].item() == pytest.approx(1.0) and row[column + 1].item() == 0.0


@pytest.mark.parametrize("half, offset", [(0.3, (0.013, -0.027)), (0.234, (0.041, 0.017))])
def test_antialiased_area_and_its_gradient(half, offset):
    """Summed alpha is the square's area in pixels; its derivative w.r.t. the size is the perimeter's
    (up to the whole number of pixel rows and columns an edge crosses)."""
    cameras = _front_camera(20)                       # 10 pixels per world unit at the square
    h = torch.tensor(half, requires_grad=True)
    verts, faces = _square(torch.zeros(2), 1.0)
    verts = verts * torch.stack([torch.tensor(1.0), h, h]) + torch.tensor([0.0, *offset])
    area = render_mesh(verts, faces, cameras, vertex_colors=torch.ones(4, 3), background=0.0).alpha.sum()
    area.backward()
    side = 2.0 * half * 10.0
    assert area.item() == pytest.approx(side ** 2, rel=0.01)
    assert h.grad.item() == pytest.approx(2.0 * side * 20.0, rel=0.1)


def test_outline_gradient_moves_a_square_onto_its_target():
    cameras = _front_camera(24)
    target_offset = torch.tensor([0.11, -0.07])
    target = render_mesh(*_square(target_offset), cameras, vertex_colors=torch.ones(4, 3)).alpha.detach()
    offset = torch.zeros(2, requires_grad=True)

    def loss_of(o, aa=True):
        verts, faces = _square(o)
        alpha = render_mesh(verts, faces, cameras, vertex_colors=torch.ones(4, 3), antialias=aa).alpha
        return ((alpha - target) ** 2).sum()

    assert not loss_of(offset, aa=False).requires_grad  # a hard mask has no gradient w.r.t. the vertices
    loss = loss_of(offset)
    grad, = torch.autograd.grad(loss, offset)
    assert grad[0] < 0 and grad[1] > 0               # downhill is towards the target: +Y, -Z
    optimiser = torch.optim.Adam([offset], lr=0.01)
    losses = []
    for _ in range(40):
        optimiser.zero_grad()
        loss = loss_of(offset)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert torch.allclose(offset.detach(), target_offset, atol=0.01)


def test_antialias_keeps_interior_edges_and_colours_by_function():
    verts, faces = _world_mesh("sphere", 32)
    cameras = _ring_cameras(2, 32)
    rast = rasterize(verts, faces, cameras)
    flat = torch.ones(2, 32, 32, 1)
    blended = antialias(flat, rast)
    assert torch.equal(blended, flat)                # one colour everywhere: nothing to blend
    out = render_mesh(verts, faces, cameras, color_fn=lambda p: (p[:, :3] > 0).float(), background=0.5)
    assert out.rgb.shape == (2, 32, 32, 3) and out.depth.shape == (2, 32, 32, 1)
    assert torch.all(out.rgb[~rast.mask & (out.alpha[..., 0] == 0)] == 0.5)
    with pytest.raises(ValueError):
        render_mesh(verts, faces, cameras)
