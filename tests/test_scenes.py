"""Voxel grid, hash grid and mesh extraction checked against known functions."""

import math

import numpy as np
import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.errors import UserError
from distill3d.render.volume import render_volume
from distill3d.scene import (HashEncoding, HashGridConfig, HashGridNeRF, VoxelGridConfig,
                             VoxelRadianceField, cube_aabb, extract_mesh, trilinear_sample,
                             upsample_features)
from distill3d.scene.hash_grid import HASH_PRIMES


# ---------------------------------------------------------------- voxel grid
def _axis_ramp_grid(S):
    """features [3, S, S, S]: channel 0 = i (x index), 1 = 10 j (y), 2 = 100 k (z)."""
    i = torch.arange(S, dtype=torch.float32)
    return torch.stack([i[:, None, None].expand(S, S, S), 10 * i[None, :, None].expand(S, S, S),
                        100 * i[None, None, :].expand(S, S, S)])


def test_trilinear_sample_axes_and_grid_points():
    S = 5
    V = _axis_ramp_grid(S)
    idx = torch.tensor([[0, 0, 0], [4, 1, 2], [1, 3, 4], [2, 2, 0]])
    coords = -1.0 + 2.0 * idx.float() / (S - 1)
    got = trilinear_sample(V, coords)
    assert torch.allclose(got, V[:, idx[:, 0], idx[:, 1], idx[:, 2]].T)
    assert torch.allclose(got[:, 0], idx[:, 0].float())          # x varies channel 0 only
    # between grid points a linear function is reproduced exactly, each along its own axis
    p = torch.rand(100, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    g = (p + 1) / 2 * (S - 1)
    assert torch.allclose(trilinear_sample(V, p), g * torch.tensor([1.0, 10.0, 100.0]), atol=1e-3)


def test_voxel_field_query_decodes_grid_values():
    cfg = VoxelGridConfig(resolution=5, feature_dim=3, bound=2.0, hidden_dim=8)
    field = VoxelRadianceField(cfg, features=torch.nn.Parameter(_axis_ramp_grid(5) / 100), seed=0)
    world = torch.tensor([[2.0, -2.0, 1.0]])                      # grid index (4, 0, 3) at b = 2
    d, rgb = field.query(world)
    d_ref, rgb_ref = field.decoder(field.features[:, 4, 0, 3][None])
    assert torch.allclose(d, d_ref) and torch.allclose(rgb, rgb_ref)
    assert field.query(torch.tensor([[2.5, 0.0, 0.0]]))[0].item() == 0.0  # outside the cube
    assert torch.equal(field.aabb, cube_aabb(2.0))


def test_upsampled_grid_keeps_the_field():
    field = VoxelRadianceField(VoxelGridConfig(resolution=5, feature_dim=4, hidden_dim=8), seed=1)
    fine = field.upsampled(9)                                     # S' - 1 = 2 (S - 1): exact
    assert fine.features.shape == (4, 9, 9, 9) and isinstance(fine.features, torch.nn.Parameter)
    assert fine.decoder is not field.decoder
    p = torch.rand(200, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    for a, b in zip(field.query(p), fine.query(p)):
        assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(upsample_features(field.features.detach(), 9)[:, ::2, ::2, ::2],
                          field.features.detach(), atol=1e-6)


# ---------------------------------------------------------------- hash grid
def test_hash_config_defaults_follow_instant_ngp_threestudio():
    cfg = HashGridConfig()
    assert (cfg.num_levels, cfg.features_per_level, cfg.log2_table_size) == (16, 2, 19)
    enc = HashEncoding(cfg.num_levels, cfg.features_per_level, cfg.log2_table_size,
                       cfg.base_resolution, cfg.max_resolution)
    res = enc.resolutions.tolist()
    assert res[0] == 16 and res[-1] == 4096
    assert res[1] / res[0] == pytest.approx(1.447269237440378, abs=0.05)  # threestudio growth
    assert enc.num_dense_levels == sum((r + 1) ** 3 <= 2 ** 19 for r in res) == 5
    dense_rows = sum((r + 1) ** 3 for r in res[:5])              # 533,601: padded to 2 T
    assert enc.table.shape[0] == 2 * 2 ** 19 + 11 * 2 ** 19 and dense_rows <= 2 * 2 ** 19


def _vertex_coords(R):
    i = torch.arange(R ** 3)
    return torch.stack([i % R, (i // R) % R, i // (R * R)], dim=-1)  # documented dense layout


def test_dense_levels_interpolate_a_linear_function_exactly():
    enc = HashEncoding(num_levels=3, features_per_level=2, log2_table_size=15,
                       base_resolution=4, max_resolution=16)
    assert enc.num_dense_levels == 3
    A = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.25, -4.0]])
    with torch.no_grad():
        for l in range(3):
            R = int(enc.vertices_per_axis[l])
            p = _vertex_coords(R).float() / enc.resolutions[l]       # vertex positions in [0, 1]
            start = int(enc.offsets[l])
            enc.table[start:start + R ** 3] = p @ A.T + l
    x = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    x[:3] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.3, 1.0, 0.0]])
    out = enc(x).reshape(-1, 3, 2)
    for l in range(3):
        assert torch.allclose(out[:, l], x @ A.T + l, atol=1e-5)


def test_hashed_levels_use_the_instant_ngp_hash():
    T = 64
    enc = HashEncoding(num_levels=2, features_per_level=1, log2_table_size=6,
                       base_resolution=2, max_resolution=8)
    assert enc.num_dense_levels == 1 and int(enc.resolutions[1]) == 8   # 9^3 > 64: hashed
    with torch.no_grad():
        enc.table.copy_(torch.arange(enc.table.shape[0], dtype=torch.float32)[:, None])
    offset = int(enc.offsets[1])
    assert offset % T == 0
    for x, y, z in [(0, 0, 0), (3, 5, 7), (8, 1, 4), (2, 8, 8)]:
        point = torch.tensor([[x, y, z]], dtype=torch.float32) / 8
        h = (x * HASH_PRIMES[0]) ^ (y * HASH_PRIMES[1]) ^ (z * HASH_PRIMES[2])
        assert enc(point)[0, 1].item() == pytest.approx(offset + h % T, abs=1e-3)


def test_hash_nerf_blob_initialisation():
    field = HashGridNeRF(HashGridConfig.small(), seed=0)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.25, 0.0, 0.0], [0.0, 0.9, 0.0]])
    density, rgb = field.query(pts)
    # softplus(10 (1 - |x| / 0.5) + MLP(~0)): ~10 at the centre, ~5 at 0.25, tiny at 0.9
    assert density[0].item() == pytest.approx(10.0, abs=0.5)
    assert density[1].item() == pytest.approx(5.0, abs=0.5)
    assert density[2].item() < 0.01
    assert rgb.shape == (3, 3) and ((rgb >= 0) & (rgb <= 1)).all()
    torch.manual_seed(123)
    a = HashGridNeRF(HashGridConfig.small(), seed=5).encoding.table
    b = HashGridNeRF(HashGridConfig.small(), seed=5).encoding.table
    assert torch.equal(a, b)


# ---------------------------------------------------------------- mesh extraction
def test_extract_mesh_of_sphere_sdf():
    r, res = 0.6, 48
    sdf = lambda p: p.norm(dim=-1) - r
    color = lambda p: 0.5 + 0.5 * p / p.norm(dim=-1, keepdim=True)
    mesh = extract_mesh(sdf, resolution=res, bounds=1.0, color_fn=color)
    voxel = 2.0 / (res - 1)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radii - r).max() < voxel
    assert mesh.volume == pytest.approx(4 / 3 * math.pi * r ** 3, rel=0.03)  # outward winding
    centres = mesh.triangles_center
    assert (np.einsum("ij,ij->i", mesh.face_normals, centres) > 0).mean() > 0.99
    vc = mesh.visual.vertex_colors
    assert vc.dtype == np.uint8 and vc.shape == (len(mesh.vertices), 4) and (vc[:, 3] == 255).all()
    expected = np.round(255 * (0.5 + 0.5 * mesh.vertices / radii[:, None]))
    assert np.abs(vc[:, :3].astype(float) - expected).max() <= 1.0


class _Ball:
    """Density 100 inside radius 0.5 (smooth edge), colour red."""

    @property
    def aabb(self):
        return cube_aabb(1.0)

    def query(self, p):
        d = 100.0 * torch.sigmoid((0.5 - p.norm(dim=-1)) / 0.02)
        return d, torch.tensor([1.0, 0.0, 0.0]).expand(p.shape[0], 3)


def test_extract_mesh_of_density_field_and_errors():
    mesh = extract_mesh(_Ball(), resolution=32, threshold=50.0)
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).max() < 2.0 / 31
    assert (mesh.visual.vertex_colors[:, :3] == [255, 0, 0]).all()
    assert mesh.volume > 0
    with pytest.raises(UserError, match="outside"):
        extract_mesh(_Ball(), resolution=16, threshold=500.0)
    with pytest.raises(UserError, match="outside"):
        extract_mesh(lambda p: p.norm(dim=-1) + 1.0, resolution=16)


# ---------------------------------------------------------------- fitting
@pytest.fixture
def one_thread():
    """Tiny matmuls gain nothing from threads and lose a lot on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_voxel_field_fits_images_of_a_coloured_sphere(one_thread):
    class ColouredSphere(_Ball):
        def query(self, p):
            d = 60.0 * torch.sigmoid((0.55 - p.norm(dim=-1)) / 0.02)
            return d, (0.5 + 0.5 * p / 0.55).clamp(0, 1)

    az = torch.arange(8) * 45.0
    cams = orbit_cameras(torch.tensor([15.0, -15.0]).repeat(4), az, 2.5, 40.0, 16, 16)
    with torch.no_grad():
        target = render_volume(ColouredSphere(), cams, num_samples=24, stratified=False,
                               compute_normals=False).rgb
    field = VoxelRadianceField(VoxelGridConfig(resolution=12, feature_dim=8, hidden_dim=32), seed=0)
    opt = torch.optim.Adam(field.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(200):
        pick = torch.randperm(8, generator=gen)[:4]
        out = render_volume(field, cams[pick], num_samples=24, generator=gen, compute_normals=False)
        loss = ((out.rgb - target[pick]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final = render_volume(field, cams, num_samples=24, stratified=False, compute_normals=False)
    first = np.mean(losses[:5])
    assert ((final.rgb - target) ** 2).mean().item() < 0.15 * first  # ~0.05 observed
