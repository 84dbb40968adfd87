"""3D consistency of views (reprojection error): near zero for consistent renders, large for per-view
changes, exact on a plane computed by hand, and blind to surfaces hidden in the other view."""

import math

import pytest
import torch

from distill3d.cameras import Cameras, orbit_cameras, sample_orbit_cameras
from distill3d.errors import UserError
from distill3d.eval.consistency import (
    ConsistencyConfig,
    neighbour_pairs,
    view_consistency,
)
from distill3d.render.volume import render_volume
from distill3d.scene.voxel_grid import VoxelGridConfig, VoxelRadianceField
from distill3d.world.reference_render import render_reference
from distill3d.world.split import train_objects


def ball_field() -> VoxelRadianceField:
    """A dense ball (density from feature 0, ~0 outside) whose colour varies smoothly over space (features 1-3)."""
    config = VoxelGridConfig(resolution=16, feature_dim=4, hidden_dim=16, num_hidden_layers=1)
    field = VoxelRadianceField(config, seed=0)
    with torch.no_grad():
        x = torch.linspace(-1, 1, 16)
        X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
        field.features[0] = 4 * torch.exp(-(X ** 2 + Y ** 2 + Z ** 2) / 0.35) - 1.5
        field.features[1], field.features[2], field.features[3] = 2 * X, 2 * Y, 2 * Z
        first, last = field.decoder.mlp[0], field.decoder.mlp[-1]
        first.weight.zero_(), first.bias.zero_(), last.weight.zero_(), last.bias.zero_()
        for k in range(4):
            first.weight[k, k] = 1.0                     # hidden k = relu(feature k)
        last.weight[0, 0], last.bias[0] = 100.0, -15.0   # density = softplus(100 relu(f0) - 16): a sharp surface
        for c in range(3):
            last.weight[1 + c, 1 + c] = 1.0              # colour c = sigmoid(relu(f_{c+1}))
            last.bias[1 + c] = -0.5
    return field


def ring(n: int, resolution: int = 32, elevation: float = 20.0) -> Cameras:
    return orbit_cameras(elevation, torch.arange(n) * (360.0 / n), 2.7, 40.0, resolution, resolution)


def test_neighbours_are_the_nearest_views_within_the_angle():
    cams = ring(6)                                       # 60 degrees apart
    pairs = neighbour_pairs(cams, 2, 90.0)
    assert sorted(pairs) == sorted((i, (i + d) % 6) for i in range(6) for d in (1, 5))  # both ring neighbours
    assert [i for i, _ in pairs] == sorted(i for i, _ in pairs)                        # grouped by source view
    assert neighbour_pairs(cams, 2, 50.0) == []          # no view within 50 degrees of another


def test_renders_of_a_field_are_consistent_and_per_view_changes_are_not():
    field, cams = ball_field(), ring(6)
    out = render_volume(field, cams, num_samples=48, stratified=False, compute_normals=False)
    assert out.alpha.mean() > 0.1 and out.rgb.std() > 0.05           # the views show a coloured ball
    clean = view_consistency(out.rgb, cams, out.depth, out.alpha)
    assert clean.pair_count == 12 and clean.valid_share > 0.5
    assert clean.mae < 0.01 and clean.psnr > 35

    noisy = (out.rgb + 0.05 * torch.randn(out.rgb.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    result = view_consistency(noisy, cams, out.depth, out.alpha)
    assert result.mae > 4 * clean.mae and result.psnr < clean.psnr - 8
    assert result.valid_share == clean.valid_share                   # the same pixels are compared

    shifted = out.rgb.clone()
    shifted[0] = (shifted[0] - 0.2).clamp(0, 1)                     # one view darker
    result = view_consistency(shifted, cams, out.depth, out.alpha)
    with_0 = [p["mae"] for p in result.pairs if 0 in (p["i"], p["j"])]
    others = [p["mae"] for p in result.pairs if 0 not in (p["i"], p["j"])]
    assert len(with_0) == 4 and min(with_0) > 0.1 and max(others) < 0.02


def test_exact_reference_renders_sit_at_the_resampling_floor():
    obj = next(o for o in train_objects() if o.shape == "cube" and o.pattern == "plain")
    cams, _ = sample_orbit_cameras(8, 32, 32, elevation_range=(-30.0, 80.0), distance_range=(2.7, 2.7),
                                   fovy_range=(40.0, 40.0), generator=torch.Generator().manual_seed(0),
                                   uniform_sphere=True)
    out = render_reference(obj, cams)
    clean = view_consistency(out.rgb, cams, out.depth, out.alpha)
    noisy = view_consistency((out.rgb + 0.05 * torch.randn(out.rgb.shape, generator=torch.Generator().manual_seed(1)))
                             .clamp(0, 1), cams, out.depth, out.alpha)
    assert clean.valid_share > 0.5 and clean.mae < 0.006 and noisy.mae > 5 * clean.mae


def test_opposite_views_see_nothing_in_common():
    """A ball seen from two opposite sides: every lifted point is hidden in the other view (depth test)."""
    field = ball_field()
    cams = orbit_cameras(0.0, [0.0, 180.0], 2.7, 40.0, 32, 32)
    out = render_volume(field, cams, num_samples=48, stratified=False, compute_normals=False)
    result = view_consistency(out.rgb, cams, out.depth, out.alpha, ConsistencyConfig(neighbours=1, max_angle=180.0))
    assert result.pair_count == 2 and result.valid_share < 0.02
    loose = view_consistency(out.rgb, cams, out.depth, out.alpha,
                             ConsistencyConfig(neighbours=1, max_angle=180.0, depth_tolerance=10.0))
    assert loose.valid_share > 0.5                       # without the occlusion test they would all count


def test_a_plane_matches_a_direct_computation():
    """The plane z = 0 filling both views, one constant colour per view: every pixel of view i whose ground
    point lands inside view j is compared, with the difference of the two colours."""
    R = 12
    cams = orbit_cameras([65.0, 70.0], [10.0, 40.0], [3.0, 3.4], 30.0, R, R)
    colours = torch.tensor([[0.2, 0.5, 0.9], [0.6, 0.1, 0.8]])
    # the ground point of every pixel and its z-depth, from the camera matrices directly
    c2w, K = cams.c2w.double(), cams.K.double()
    u, v = torch.meshgrid(torch.arange(R, dtype=torch.float64) + 0.5, torch.arange(R, dtype=torch.float64) + 0.5,
                          indexing="xy")
    pix = torch.stack([u, v, torch.ones_like(u)], dim=-1)                              # [R, R, 3]
    ground, depth = [], []
    for c in range(2):
        ray_cam = pix @ torch.linalg.inv(K[c]).T                                        # z = 1 in the camera
        ray_world = ray_cam @ c2w[c, :3, :3].T
        centre = c2w[c, :3, 3]
        s = -centre[2] / ray_world[..., 2]                                              # reach z = 0
        ground.append(centre + s[..., None] * ray_world)
        depth.append(s)                                                                 # z-depth (camera z = s)
    images = colours[:, None, None, :].expand(2, R, R, 3).clone()
    depth = torch.stack(depth).float()
    config = ConsistencyConfig(neighbours=1, max_angle=90.0, depth_tolerance=0.5)
    result = view_consistency(images, cams, depth, torch.ones(2, R, R), config)

    inside = []
    for i, j in ((0, 1), (1, 0)):
        w2c = torch.linalg.inv(c2w[j])
        p = ground[i].reshape(-1, 3) @ w2c[:3, :3].T + w2c[:3, 3]
        uv = (p @ K[j].T)[:, :2] / p[:, 2:]
        inside.append(int(((uv >= 0) & (uv <= R)).all(dim=1).sum()))
    assert 0 < sum(inside) < 2 * R * R                                                  # partly overlapping
    assert result.valid_pixels == sum(inside)
    assert result.valid_share == pytest.approx(sum(inside) / (2 * R * R))
    diff = colours[0] - colours[1]
    assert result.mae == pytest.approx(float(diff.abs().mean()), abs=1e-6)
    assert result.psnr == pytest.approx(-10 * math.log10(float(diff.pow(2).mean())), abs=1e-4)


def test_bad_shapes_are_user_errors():
    cams = ring(3)
    with pytest.raises(UserError):
        view_consistency(torch.rand(3, 32, 32, 3), cams, torch.rand(3, 16, 16))
    with pytest.raises(UserError):
        view_consistency(torch.rand(2, 32, 32, 3), cams, torch.rand(2, 32, 32))
