"""Emission-absorption volume rendering checked against analytic scenes."""

import math

import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.render.volume import ray_aabb_intersect, render_volume, render_volume_with_extras
from distill3d.scene import (DensityField, HashGridConfig, HashGridNeRF, VoxelGridConfig,
                             VoxelRadianceField, cube_aabb)


class SoftSphere:
    """Solid sphere of density ~sigma with a thin smooth edge; colour 0.5 + 0.5 (p - c) / r."""

    def __init__(self, radius=0.5, sigma=200.0, edge=0.002, center=(0.0, 0.0, 0.0)):
        self.radius, self.sigma, self.edge = radius, sigma, edge
        self.center = torch.tensor(center)

    @property
    def aabb(self):
        return cube_aabb(1.0)

    def query(self, p):
        q = p - self.center
        density = self.sigma * torch.sigmoid((self.radius - q.norm(dim=-1)) / self.edge)
        return density, (0.5 + 0.5 * q / self.radius).clamp(0.0, 1.0)


class ConstantMedium:
    """Density sigma everywhere in [-1, 1]^3, grey."""

    def __init__(self, sigma):
        self.sigma = sigma

    @property
    def aabb(self):
        return cube_aabb(1.0)

    def query(self, p):
        return torch.full(p.shape[:1], self.sigma), torch.full((p.shape[0], 3), 0.5)


def test_protocol():
    assert isinstance(SoftSphere(), DensityField)
    assert isinstance(VoxelRadianceField(VoxelGridConfig(resolution=4, feature_dim=2)), DensityField)


def test_ray_aabb_intersect():
    o = torch.tensor([[3.0, 0.0, 0.0], [3.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    near, far = ray_aabb_intersect(o, d, cube_aabb(1.0))
    assert torch.allclose(near[0], torch.tensor(2.0)) and torch.allclose(far[0], torch.tensor(4.0))
    assert far[1] <= near[1]                                   # parallel ray outside the slab
    assert torch.allclose(far[2], torch.tensor(1.0)) and near[2] == -1.0


@pytest.mark.parametrize("stratified", [False, True])
def test_solid_sphere_alpha_depth_normals(stratified):
    size, dist, r, fovy = 33, 3.0, 0.5, 30.0
    cams = orbit_cameras(20.0, 40.0, dist, fovy, size, size)
    out = render_volume(SoftSphere(radius=r), cams, num_samples=128, stratified=stratified,
                        generator=torch.Generator().manual_seed(0))
    # projected disc: radius fy * tan(asin(r / d)) pixels around the image centre
    f = cams.K[0, 1, 1].item()
    radius_px = f * math.tan(math.asin(r / dist))
    v, u = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    rho = ((u - size / 2) ** 2 + (v - size / 2) ** 2).sqrt()
    alpha = out.alpha[0, ..., 0]
    assert (alpha[rho < radius_px - 1.0] > 0.99).all()
    assert (alpha[rho > radius_px + 1.0] < 0.01).all()
    c = size // 2
    spacing = 2.0 / 128 * math.sqrt(3)  # bin length along the longest chord of the box
    assert abs(out.depth[0, c, c, 0].item() - (dist - r)) < spacing
    # every covered pixel: z-depth of the analytic ray-sphere hit, t_hit * (dir . forward)
    origins, dirs = cams.rays()
    o, d = origins[0], dirs[0]
    b = (o * d).sum(-1)
    t_hit = -b - (b ** 2 - (o * o).sum(-1) + r ** 2).clamp_min(0).sqrt()
    z_hit = t_hit * (d * cams.forward[0]).sum(-1)
    covered = rho < 0.8 * radius_px  # away from grazing rays, where the soft edge is long
    assert ((out.depth[0, ..., 0] - z_hit)[covered].abs() < spacing).all()
    to_camera = cams.centers[0] / cams.centers[0].norm()
    assert torch.dot(out.normal[0, c, c], to_camera) > 0.99
    # colour at the centre is the field's colour at the front point of the sphere
    assert torch.allclose(out.rgb[0, c, c], 0.5 + 0.5 * to_camera, atol=0.03)
    assert torch.allclose(out.normal[0].norm(dim=-1)[alpha > 0.5], torch.tensor(1.0), atol=1e-4)


def test_constant_medium_transmittance():
    sigma, size = 0.7, 9
    cams = orbit_cameras(0.0, 0.0, 3.0, 40.0, size, size)  # on +X, optical axis along -X
    out = render_volume(ConstantMedium(sigma), cams, num_samples=16, stratified=False,
                        compute_normals=False)
    c = size // 2
    assert out.alpha[0, c, c, 0].item() == pytest.approx(1.0 - math.exp(-sigma * 2.0), abs=1e-5)
    # every pixel: chord length of its ray through the box, measured by brute-force marching
    origins, dirs = cams.rays()
    t = torch.linspace(0.0, 6.0, 60001)
    pts = origins[0, ..., None, :] + t[:, None] * dirs[0, ..., None, :]
    inside = (pts.abs() <= 1.0).all(dim=-1).float()
    chord = inside.sum(-1) * (t[1] - t[0])
    expected = 1.0 - torch.exp(-sigma * chord)
    assert torch.allclose(out.alpha[0, ..., 0], expected, atol=1e-3)
    # grey medium over a black background: colour = 0.5 alpha
    out_bg = render_volume(ConstantMedium(sigma), cams, num_samples=16, stratified=False,
                           compute_normals=False, background=torch.zeros(3))
    assert torch.allclose(out_bg.rgb, 0.5 * out_bg.alpha.expand(-1, -1, -1, 3), atol=1e-6)


def test_missing_rays_show_background_and_chunks_agree():
    cams = orbit_cameras(0.0, 0.0, 3.0, 90.0, 12, 10)  # wide view: the box misses the corners
    field = SoftSphere(radius=0.4)
    bg = torch.tensor([0.1, 0.2, 0.3])
    full = render_volume(field, cams, num_samples=24, stratified=False, background=bg)
    chunked = render_volume(field, cams, num_samples=24, stratified=False, background=bg,
                            chunk_rays=7)
    for a, b in zip((full.rgb, full.alpha, full.depth, full.normal),
                    (chunked.rgb, chunked.alpha, chunked.depth, chunked.normal)):
        assert torch.allclose(a, b, atol=1e-6)
    corner = full.rgb[0, 0, 0]
    assert torch.allclose(corner, bg) and full.alpha[0, 0, 0, 0] == 0 and full.depth[0, 0, 0, 0] == 0
    assert (full.normal[0, 0, 0] == 0).all()


def test_stratified_jitter_is_seeded_and_near_far_clips():
    cams = orbit_cameras(10.0, 30.0, 2.5, 40.0, 8, 8)
    field = SoftSphere(radius=0.6, sigma=20.0, edge=0.05)
    a = render_volume(field, cams, num_samples=16, generator=torch.Generator().manual_seed(3))
    b = render_volume(field, cams, num_samples=16, generator=torch.Generator().manual_seed(3))
    c = render_volume(field, cams, num_samples=16, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.rgb, b.rgb) and not torch.equal(a.rgb, c.rgb)
    clipped = render_volume(field, cams, num_samples=16, near_far=(0.0, 1.0), stratified=False)
    assert clipped.alpha.max() == 0  # the box starts ~1.5 units away


def test_extras_weights_sum_to_alpha():
    cams = orbit_cameras(0.0, 0.0, 3.0, 30.0, 6, 6)
    out, extras = render_volume_with_extras(SoftSphere(), cams, num_samples=32, stratified=False)
    assert extras.weights.shape == (1, 6, 6, 32) and extras.normals.shape == (1, 6, 6, 32, 3)
    assert torch.allclose(extras.weights.sum(-1, keepdim=True), out.alpha, atol=1e-6)


def test_no_grad_render_still_has_normals():
    cams = orbit_cameras(0.0, 0.0, 3.0, 30.0, 5, 5)
    with torch.no_grad():
        out = render_volume(SoftSphere(), cams, num_samples=64, stratified=False)
    assert out.normal is not None and out.normal.grad_fn is None
    assert torch.dot(out.normal[0, 2, 2], torch.tensor([1.0, 0.0, 0.0])) > 0.99


@pytest.mark.parametrize("make_field", [
    lambda: VoxelRadianceField(VoxelGridConfig(resolution=8, feature_dim=4, hidden_dim=16), seed=0),
    lambda: HashGridNeRF(HashGridConfig.small(num_levels=4, log2_table_size=10,
                                              max_resolution=64, hidden_dim=16), seed=0),
])
def test_gradients_reach_parameters_through_colour_and_normals(make_field):
    field = make_field()
    cams = orbit_cameras([0.0, 30.0], [0.0, 120.0], 2.5, 40.0, 8, 8)
    out = render_volume(field, cams, num_samples=16, generator=torch.Generator().manual_seed(0))
    out.rgb.mean().backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    field.zero_grad()
    # a loss on normals alone (orientation-like) must reach the field through create_graph
    out = render_volume(field, cams, num_samples=16, generator=torch.Generator().manual_seed(0))
    (out.normal[..., 0] * out.alpha[..., 0]).sum().backward()
    grads = [p.grad for p in field.parameters() if p.grad is not None]  # colour heads get none
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_voxel_features_from_outside_receive_gradients():
    V = torch.randn(4, 6, 6, 6, requires_grad=True)  # e.g. a denoiser's output
    field = VoxelRadianceField.from_features(V * 2.0, config=VoxelGridConfig(hidden_dim=8))
    cams = orbit_cameras(0.0, 0.0, 2.5, 40.0, 6, 6)
    render_volume(field, cams, num_samples=8, compute_normals=False).rgb.sum().backward()
    assert V.grad is not None and V.grad.abs().sum() > 0


def test_normal_and_colour_gradients_match_finite_differences():
    cams = orbit_cameras(10.0, 20.0, 2.5, 40.0, 3, 3).to(dtype=torch.float64)
    cfg = VoxelGridConfig(resolution=4, feature_dim=2, hidden_dim=4, num_hidden_layers=1)
    decoder = VoxelRadianceField(cfg, seed=0).decoder.double()

    def render(V):
        field = VoxelRadianceField.from_features(V, decoder=decoder, config=cfg)
        out = render_volume(field, cams, num_samples=4, stratified=False)
        return out.normal, out.rgb, out.depth

    V = torch.randn(2, 4, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(render, (V.requires_grad_(True),), eps=1e-6, atol=1e-4)
