"""The reference sphere tracer against analytic geometry, shading and its own invariances."""

from __future__ import annotations

import math

import pytest
import torch

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import AMBIENT, LIGHT_DIRECTION, render_reference
from distill3d.world.shapes import SPHERE_RADIUS, door_colour
from distill3d.world.vocabulary import COLOURS

R = SPHERE_RADIUS
SPHERE = WorldObject("red", "plain", "sphere")


def _sphere_cameras(resolution: int, distance: float = 2.0, elevation: float = 20.0,
                    azimuth: float = 30.0) -> Cameras:
    return orbit_cameras(elevation, azimuth, distance, 40.0, resolution, resolution)


def _analytic_sphere_depth(cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Hit mask and z-depth [B, H, W] of the pixel-centre rays against the sphere of radius R."""
    origins, dirs = cameras.rays(1)
    b = (origins * dirs).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - R * R)
    t = -b - disc.clamp_min(0).sqrt()
    return disc > 0, t * (dirs * cameras.forward[:, None, None]).sum(-1)


def test_sphere_covers_its_analytic_disc():
    d, res = 2.0, 64
    cameras = _sphere_cameras(res, d)
    out = render_reference(SPHERE, cameras, supersample=4)
    f = cameras.K[0, 1, 1].item()
    radius_px = f * R / math.sqrt(d * d - R * R)  # the silhouette cone's image: f tan(asin(R / d))
    assert out.alpha.sum().item() == pytest.approx(math.pi * radius_px ** 2, rel=0.01)
    # the disc is centred on the principal point
    v, u = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    w = out.alpha[0, ..., 0]
    assert ((w * u).sum() / w.sum()).item() == pytest.approx(res / 2, abs=0.05)
    assert ((w * v).sum() / w.sum()).item() == pytest.approx(res / 2, abs=0.05)


def test_centre_depth_normal_and_background():
    d = 2.0
    cameras = _sphere_cameras(33, d)
    out = render_reference(SPHERE, cameras, supersample=1)
    assert out.depth[0, 16, 16, 0].item() == pytest.approx(d - R, abs=5e-4)
    to_camera = cameras.centers[0] / cameras.centers[0].norm()
    assert torch.dot(out.normal[0, 16, 16], to_camera).item() > 0.9999
    # the whole depth map matches ray-sphere intersection
    hit, depth = _analytic_sphere_depth(cameras)
    inside = hit[0] & (out.alpha[0, ..., 0] == 1)
    assert torch.equal(out.alpha[0, ..., 0] > 0, hit[0])
    assert (out.depth[0, ..., 0][inside] - depth[0][inside]).abs().max() < 5e-4
    # background where nothing is hit: white, no alpha, no depth, no normal
    miss = ~hit[0]
    assert miss.sum() > 100
    assert (out.rgb[0][miss] == 1.0).all() and (out.alpha[0][miss] == 0).all()
    assert (out.depth[0][miss] == 0).all() and (out.normal[0][miss] == 0).all()
    black = render_reference(SPHERE, cameras, supersample=1, background=(0.0, 0.0, 0.0))
    assert (black.rgb[0][miss] == 0).all()
    assert torch.equal(black.rgb[0][~miss], out.rgb[0][~miss])


def test_projected_surface_points_land_on_their_pixels():
    cameras = _sphere_cameras(48, 2.2, elevation=10.0, azimuth=-40.0)
    out = render_reference(SPHERE, cameras, supersample=2)
    centre_dir = cameras.centers[0] / cameras.centers[0].norm()
    tilts = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.2, -0.1], [-0.2, 0.1, 0.35], [0.1, -0.4, 0.2]])
    normals = torch.nn.functional.normalize(centre_dir + tilts, dim=-1)
    points = R * normals  # [N, 3] visible surface points
    uv, z = cameras.project(points[None])
    light = torch.tensor(LIGHT_DIRECTION)
    for (u, v), zi, n in zip(uv[0], z[0], normals):
        i, j = int(v), int(u)
        assert out.alpha[0, i, j, 0] == 1.0
        assert out.depth[0, i, j, 0].item() == pytest.approx(zi.item(), abs=0.02)
        assert torch.dot(out.normal[0, i, j], n).item() > 0.99
        shade = AMBIENT + (1 - AMBIENT) * max(torch.dot(n, light).item(), 0.0)
        expected = torch.tensor(COLOURS["red"]) * shade  # Lambertian + ambient
        assert (out.rgb[0, i, j] - expected).abs().max().item() < 0.03


def test_shading_does_not_depend_on_the_viewer():
    point = torch.nn.functional.normalize(torch.tensor([0.6, 0.3, 0.5]), dim=0) * R
    cameras = orbit_cameras(torch.tensor([20.0, 45.0]), torch.tensor([10.0, 50.0]), 2.0, 40.0, 64, 64)
    out = render_reference(WorldObject("green", "plain", "sphere"), cameras, supersample=1)
    uv, _ = cameras.project(point.expand(2, 1, 3))
    colours = [out.rgb[b, int(uv[b, 0, 1]), int(uv[b, 0, 0])] for b in range(2)]
    assert (colours[0] - colours[1]).abs().max().item() < 0.02


def test_supersampling_antialiases_edges():
    cameras = _sphere_cameras(32)
    alpha = render_reference(SPHERE, cameras, supersample=2).alpha
    fractional = (alpha > 0) & (alpha < 1)
    assert fractional.sum() > 20
    assert set(alpha[fractional].unique().tolist()) <= {0.25, 0.5, 0.75}
    assert torch.equal(render_reference(SPHERE, cameras, supersample=1).alpha.unique(), torch.tensor([0.0, 1.0]))


def test_batches_of_objects_are_deterministic_and_chunk_independent():
    objects = [WorldObject("blue", "striped", "mug"), WorldObject("yellow", "checkered", "house"),
               WorldObject("blue", "striped", "mug")]
    cameras = orbit_cameras(torch.tensor([10.0, 30.0, 70.0]), torch.tensor([0.0, 120.0, 250.0]), 1.8, 40.0, 24, 24)
    first = render_reference(objects, cameras)
    again = render_reference(objects, cameras, chunk_rays=1000)
    for a, b in zip((first.rgb, first.alpha, first.depth, first.normal),
                    (again.rgb, again.alpha, again.depth, again.normal)):
        assert torch.equal(a, b)
    single = render_reference(objects[1], cameras[1])
    assert torch.equal(single.rgb[0], first.rgb[1]) and torch.equal(single.depth[0], first.depth[1])
    assert first.rgb.shape == (3, 24, 24, 3) and first.alpha.shape == first.depth.shape == (3, 24, 24, 1)
    with pytest.raises(ValueError):
        render_reference(objects[:2], cameras)


def _coverage_right_of_centre(alpha: torch.Tensor) -> torch.Tensor:
    half = alpha.shape[2] // 2
    return alpha[:, :, half:].sum(dim=(1, 2, 3)) - alpha[:, :, :half].sum(dim=(1, 2, 3))


def test_shapes_with_a_front_show_it():
    # the mug's handle is on the image's right in a front view and on its left from the back
    cameras = orbit_cameras(0.0, torch.tensor([0.0, 180.0]), 2.0, 40.0, 32, 32)
    alpha = render_reference(WorldObject("red", "plain", "mug"), cameras, supersample=1).alpha
    right = _coverage_right_of_centre(alpha)
    assert right[0] > 20 and right[1] < -20
    # the house's door (its door colour) is seen from the front only
    house = render_reference(WorldObject("red", "plain", "house"), cameras, supersample=1).rgb
    door = torch.tensor(COLOURS[door_colour("red")])
    shaded_door = (house / door.clamp_min(1e-3))  # door pixels are a uniform multiple of its albedo
    is_door = (shaded_door.std(dim=-1) < 0.02) & (house.sum(-1) < 2.5)
    assert is_door[0].sum() > 10 and is_door[1].sum() == 0
