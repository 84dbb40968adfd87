import math

import pytest
import torch

from distill3d.cameras import (Cameras, intrinsics_from_fovy, look_at, opencv_to_opengl, opengl_to_opencv,
                               orbit_cameras, plucker_embedding, position_to_spherical, sample_orbit_cameras,
                               spherical_to_position, turned_about_up)


def test_orbit_frame_conventions():
    # Azimuth 0, elevation 0: camera on +X looking back at the origin, image-up is world +Z.
    cams = orbit_cameras(0.0, 0.0, 2.0, 40.0, 32, 32)
    c2w = cams.c2w[0]
    assert torch.allclose(c2w[:3, 3], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(c2w[:3, 2], torch.tensor([-1.0, 0.0, 0.0]), atol=1e-6)  # forward
    assert torch.allclose(c2w[:3, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)  # +y is down
    # Right-handed camera: x = y cross z.
    assert torch.allclose(torch.cross(c2w[:3, 1], c2w[:3, 2], dim=0), c2w[:3, 0], atol=1e-6)
    # Azimuth 90 is the +Y side; elevation 90 is straight above.
    p = spherical_to_position(torch.tensor([0.0, 90.0]), torch.tensor([90.0, 0.0]), torch.tensor([1.0, 1.0]))
    assert torch.allclose(p, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), atol=1e-6)


def test_spherical_round_trip():
    g = torch.Generator().manual_seed(0)
    el = torch.rand(50, generator=g) * 170 - 85
    az = torch.rand(50, generator=g) * 358 - 179
    d = torch.rand(50, generator=g) + 0.5
    el2, az2, d2 = position_to_spherical(spherical_to_position(el, az, d))
    assert torch.allclose(el, el2, atol=1e-3) and torch.allclose(az, az2, atol=1e-3) and torch.allclose(d, d2)


def test_look_at_straight_down_is_valid_rotation():
    c2w = look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3))[0]
    R = c2w[:3, :3]
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-6)
    assert torch.allclose(torch.det(R), torch.tensor(1.0), atol=1e-6)


def test_projection_lands_on_pixel_whose_ray_passes_through_point():
    g = torch.Generator().manual_seed(1)
    cams, _ = sample_orbit_cameras(6, 40, 30, generator=g)
    pts = torch.rand(6, 1, 3, generator=g) * 0.8 - 0.4
    uv, z = cams.project(pts)
    assert (z > 0).all()
    origins, dirs = cams.rays()
    for b in range(6):
        u, v = uv[b, 0]
        i, j = int(v.floor()), int(u.floor())
        assert 0 <= i < 30 and 0 <= j < 40
        o, d = origins[b, i, j], dirs[b, i, j]
        to_p = pts[b, 0] - o
        # distance from the point to the pixel-centre ray is at most a pixel footprint at that depth
        dist = (to_p - (to_p @ d) * d).norm()
        footprint = z[b, 0] / cams.K[b, 0, 0] * math.sqrt(0.5)
        assert dist <= footprint + 1e-5
    # z-depth equals the distance along the optical axis
    expected = ((pts[:, 0] - cams.centers) * cams.forward).sum(-1)
    assert torch.allclose(z[:, 0], expected, atol=1e-5)


def test_principal_point_ray_is_forward_and_fovy_matches():
    cams = orbit_cameras(20.0, 45.0, 1.8, 35.0, 64, 64)
    _, dirs = cams.rays()
    centre = dirs[0, 31:33, 31:33].mean(dim=(0, 1))
    assert torch.allclose(centre / centre.norm(), cams.forward[0], atol=1e-6)
    # The top and bottom edge rays make the full vertical field of view.
    K = intrinsics_from_fovy(torch.tensor([35.0]), 64, 64)
    assert torch.allclose(2 * torch.rad2deg(torch.atan(32 / K[0, 1, 1])), torch.tensor(35.0), atol=1e-4)
    assert torch.allclose(cams.fovy_deg, torch.tensor([35.0]), atol=1e-4)


def test_supersampled_rays_average_to_pixel_rays():
    cams = orbit_cameras(10.0, 30.0, 2.0, 40.0, 8, 6)
    _, d1 = cams.rays(1)
    _, d3 = cams.rays(3)
    assert d3.shape == (1, 18, 24, 3)
    centre_sub = d3[:, 1::3, 1::3]  # the middle sub-pixel of each 3x3 block is the pixel centre
    assert torch.allclose(centre_sub, d1, atol=1e-6)


def test_plucker_invariant_along_ray_and_to_direction_scale():
    g = torch.Generator().manual_seed(2)
    o = torch.randn(100, 3, generator=g)
    d = torch.randn(100, 3, generator=g)
    s = torch.randn(100, 1, generator=g) * 3
    a = plucker_embedding(o, d)
    b = plucker_embedding(o + s * d, 2.5 * d)
    assert torch.allclose(a, b, atol=1e-5)
    # and it does change for a parallel but different line
    c = plucker_embedding(o + torch.cross(d, torch.randn(100, 3, generator=g), dim=-1), d)
    assert (a[:, 3:] - c[:, 3:]).norm(dim=-1).min() > 1e-3


def test_camera_plucker_shape_and_moment_orthogonal():
    cams = orbit_cameras([0.0, 30.0], [0.0, 90.0], 2.0, 40.0, 16, 12)
    pl = cams.plucker()
    assert pl.shape == (2, 12, 16, 6)
    assert torch.allclose((pl[..., :3] * pl[..., 3:]).sum(-1), torch.zeros(2, 12, 16), atol=1e-5)


def test_opengl_round_trip_and_meaning():
    cams = orbit_cameras(15.0, 60.0, 2.0, 40.0, 8, 8)
    gl = opencv_to_opengl(cams.c2w)
    assert torch.allclose(opengl_to_opencv(gl), cams.c2w)
    # OpenGL cameras look along -z and have +y up.
    assert torch.allclose(-gl[0, :3, 2], cams.forward[0], atol=1e-6)
    assert gl[0, 2, 1] > 0  # camera up has a positive world-Z component


def test_viewmats_invert_c2w():
    cams, _ = sample_orbit_cameras(4, 16, 16, generator=torch.Generator().manual_seed(3))
    eye = cams.viewmats @ cams.c2w
    assert torch.allclose(eye, torch.eye(4).expand(4, 4, 4), atol=1e-5)


def test_json_round_trip_and_resize():
    cams, _ = sample_orbit_cameras(3, 20, 10, generator=torch.Generator().manual_seed(4))
    back = Cameras.from_dicts(cams.to_dicts())
    assert torch.allclose(back.c2w, cams.c2w) and torch.allclose(back.K, cams.K)
    assert (back.width, back.height) == (20, 10)
    big = cams.resized(40, 20)
    uv_small, _ = cams.project(torch.zeros(3, 1, 3))
    uv_big, _ = big.project(torch.zeros(3, 1, 3))
    assert torch.allclose(uv_big, 2 * uv_small, atol=1e-4)


def test_sampling_ranges_and_seed():
    kw = dict(elevation_range=(0, 30), azimuth_range=(-90, 90), distance_range=(1.5, 2.0), fovy_range=(30, 45))
    c1, p1 = sample_orbit_cameras(200, 8, 8, generator=torch.Generator().manual_seed(5), **kw)
    c2, _ = sample_orbit_cameras(200, 8, 8, generator=torch.Generator().manual_seed(5), **kw)
    assert torch.equal(c1.c2w, c2.c2w)
    assert p1["elevation"].min() >= 0 and p1["elevation"].max() <= 30
    assert p1["azimuth"].min() >= -90 and p1["azimuth"].max() <= 90
    el, az, d = position_to_spherical(c1.centers)
    assert torch.allclose(el, p1["elevation"], atol=1e-3) and torch.allclose(d, p1["distance"], atol=1e-5)


def test_bad_shapes_rejected():
    with pytest.raises(ValueError):
        Cameras(torch.eye(4)[None], torch.eye(3)[None].repeat(2, 1, 1), 8, 8)
    with pytest.raises(ValueError):
        orbit_cameras([0.0, 1.0], [0.0, 1.0, 2.0], 2.0, 40.0, 8, 8)


def test_turning_an_orbit_camera_about_up_adds_to_its_azimuth():
    camera = orbit_cameras(20.0, 30.0, 2.5, 40.0, 32, 32)
    turned = turned_about_up(camera, torch.tensor([0.0, 25.0, -90.0]))
    for angle, c2w in zip((0.0, 25.0, -90.0), turned.c2w):
        assert torch.allclose(c2w, orbit_cameras(20.0, 30.0 + angle, 2.5, 40.0, 32, 32).c2w[0], atol=1e-6)
    assert torch.equal(turned.K, camera.K.expand(3, 3, 3))
    with pytest.raises(ValueError, match="one camera"):
        turned_about_up(orbit_cameras([0.0, 10.0], 0.0, 2.0, 40.0, 8, 8), torch.tensor([5.0]))
