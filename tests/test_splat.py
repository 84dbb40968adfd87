"""Gaussian splatting: analytic blobs, compositing order, an independent reference, gradients."""

import time

import pytest
import torch
from scipy.spatial.transform import Rotation

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.errors import UserError
from distill3d.render.splat import gsplat_available, render_gaussians
from distill3d.render.splat_torch import rasterization_torch
from distill3d.scene.gaussians import Gaussians


@pytest.fixture
def one_thread():
    """Tiny renders gain nothing from intra-op threads and lose much when cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def identity_camera(width=32, height=32, f=60.0, cx=16.5, cy=16.5, dtype=torch.float32) -> Cameras:
    """A camera at the origin looking along +z (OpenCV)."""
    K = torch.tensor([[[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]], dtype=dtype)
    return Cameras(torch.eye(4, dtype=dtype)[None], K, width, height)


def make(means, sigmas, opacities, rgb, dtype=torch.float32) -> Gaussians:
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = means.shape[0]
    scales = torch.as_tensor(sigmas, dtype=dtype).reshape(-1, 1).expand(n, 3).clone()
    return Gaussians.from_values(means, scales, torch.as_tensor(opacities, dtype=dtype).reshape(n),
                                 rgb=torch.as_tensor(rgb, dtype=dtype).reshape(n, 3))


def pixel_grid(width, height, dtype=torch.float64):
    v, u = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    return u + 0.5, v + 0.5


# ---------------------------------------------------------------------- analytic single blob
def test_single_isotropic_gaussian_is_the_analytic_blob():
    cam = identity_camera()
    sigma, z, opacity, colour = 0.1, 2.0, 0.8, (0.9, 0.2, 0.1)
    g = make([0.0, 0.0, z], sigma, opacity, colour)
    out = render_gaussians(g, cam, background=0.25)

    uv, _ = cam.project(g.means[None])
    assert torch.allclose(uv[0, 0], torch.tensor([16.5, 16.5]))
    var = (60.0 * sigma / z) ** 2 + 0.3  # EWA pixel variance plus the 0.3 low-pass dilation
    u, v = pixel_grid(32, 32)
    expected = opacity * torch.exp(-0.5 * ((u - 16.5) ** 2 + (v - 16.5) ** 2) / var)
    expected = torch.where(expected >= 1 / 255, expected, torch.zeros_like(expected))
    alpha = out.alpha[0, ..., 0].double()
    assert torch.allclose(alpha, expected, atol=2e-6)
    assert alpha.max().item() == pytest.approx(opacity, abs=1e-6)
    assert alpha[16, 16].item() == pytest.approx(opacity, abs=1e-6)

    hit = alpha > 0
    assert torch.allclose(out.depth[0, ..., 0][hit], torch.full_like(out.depth[0, ..., 0][hit], z), atol=1e-5)
    assert (out.depth[0, ..., 0][~hit] == 0).all()
    rgb_expected = torch.tensor(colour) * out.alpha[0] + 0.25 * (1 - out.alpha[0])
    assert torch.allclose(out.rgb[0], rgb_expected, atol=1e-6)


def test_pixel_std_matches_focal_sigma_over_depth():
    cam = identity_camera(48, 48, f=80.0, cx=24.5, cy=24.5)
    for sigma, z in [(0.05, 1.5), (0.1, 3.0)]:
        alpha = render_gaussians(make([0, 0, z], sigma, 0.5, (1, 1, 1)), cam).alpha[0, ..., 0].double()
        u, v = pixel_grid(48, 48)
        inside = alpha > 0
        # log alpha = log o - r^2 / (2 var): a least-squares fit of var over covered pixels.
        r2 = ((u - 24.5) ** 2 + (v - 24.5) ** 2)[inside]
        slope = torch.linalg.lstsq(torch.stack([torch.ones_like(r2), r2], 1), alpha[inside].log()[:, None]).solution[1]
        var = -0.5 / slope.item()
        assert var == pytest.approx((80.0 * sigma / z) ** 2 + 0.3, rel=1e-4)


def test_off_axis_blob_is_centred_at_the_projected_pixel():
    cam = identity_camera(64, 48, f=70.0, cx=31.0, cy=23.2)
    g = make([0.31, -0.17, 2.4], 0.04, 0.9, (0, 1, 0))
    alpha = render_gaussians(g, cam).alpha[0, ..., 0].double()
    u, v = pixel_grid(64, 48)
    centroid = torch.stack([(alpha * u).sum(), (alpha * v).sum()]) / alpha.sum()
    uv, z = cam.project(g.means[None])
    assert torch.allclose(centroid.float(), uv[0, 0], atol=0.02)
    assert z.item() == pytest.approx(2.4)


# ---------------------------------------------------------------------- compositing
def test_front_to_back_order_and_swap():
    cam = identity_camera()
    red, blue = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    bg = torch.tensor([0.0, 1.0, 0.0])

    def centre(z_red, z_blue):  # both centred on the middle pixel: alphas there are the opacities
        g = make([[0, 0, z_red], [0, 0, z_blue]], [0.1, 0.1], [0.6, 0.7], torch.stack([red, blue]))
        return render_gaussians(g, cam, background=bg).rgb[0, 16, 16]

    near_red = centre(2.0, 3.0)
    assert torch.allclose(near_red, 0.6 * red + 0.4 * 0.7 * blue + 0.4 * 0.3 * bg, atol=1e-6)
    near_blue = centre(3.0, 2.0)
    assert torch.allclose(near_blue, 0.7 * blue + 0.3 * 0.6 * red + 0.3 * 0.4 * bg, atol=1e-6)
    assert near_red[0] > near_blue[0] and near_blue[2] > near_red[2]


def test_alpha_clamp_and_early_termination_follow_gsplat():
    cam = identity_camera()
    # alpha is clamped at 0.999.
    one = render_gaussians(make([0, 0, 2], 0.1, 0.9999, (1, 0, 0)), cam)
    assert one.alpha[0, 16, 16, 0].item() == pytest.approx(0.999, abs=1e-6)
    # Two Gaussians of alpha 0.995: the second would leave transmittance 2.5e-5 <= 1e-4 and is
    # not blended at all; the pixel keeps the first one's colour and coverage.
    g = make([[0, 0, 2], [0, 0, 3]], [0.1, 0.1], [0.995, 0.995], [(1, 0, 0), (0, 0, 1)])
    out = render_gaussians(g, cam, background=0.0)
    assert out.alpha[0, 16, 16, 0].item() == pytest.approx(0.995, abs=1e-6)
    assert torch.allclose(out.rgb[0, 16, 16], torch.tensor([0.995, 0.0, 0.0]), atol=1e-6)
    assert out.depth[0, 16, 16, 0].item() == pytest.approx(2.0, abs=1e-5)


def test_background_and_empty_views():
    cam = identity_camera(20, 12)
    behind = make([0, 0, -2.0], 0.3, 0.9, (1, 0, 0))
    out = render_gaussians(behind, cam, background=torch.tensor([0.1, 0.2, 0.3]))
    assert out.rgb.shape == (1, 12, 20, 3) and out.alpha.shape == (1, 12, 20, 1) and out.depth.shape == (1, 12, 20, 1)
    assert torch.allclose(out.rgb, torch.tensor([0.1, 0.2, 0.3]).expand(1, 12, 20, 3))
    assert (out.alpha == 0).all() and (out.depth == 0).all() and out.normal is None
    per_camera = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    two = render_gaussians(behind, Cameras.cat([cam, cam]), background=per_camera)
    assert torch.allclose(two.rgb[1], torch.ones(12, 20, 3)) and torch.allclose(two.rgb[0], torch.zeros(12, 20, 3))


# ---------------------------------------------------------------------- independent reference
def reference_render(g: Gaussians, cams: Cameras, background: float):
    """Per-pixel brute force over all Gaussians, written from the 3DGS / gsplat rules."""
    dt = torch.float64
    means, opac = g.means.to(dt), g.opacities.to(dt)
    rot = torch.from_numpy(Rotation.from_quat(g.quats.detach().to(dt).roll(-1, dims=1).numpy()).as_matrix())
    cov = rot @ torch.diag_embed(g.scales.to(dt) ** 2) @ rot.transpose(1, 2)
    colours = g.colors(cams.centers.to(dt)).to(dt)
    u, v = pixel_grid(cams.width, cams.height)
    rgbs, alphas, depths = [], [], []
    for c in range(len(cams)):
        w2c = torch.linalg.inv(cams.c2w[c].to(dt))
        p = means @ w2c[:3, :3].T + w2c[:3, 3]
        fx, fy, cx, cy = (cams.K[c, i, j].item() for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
        col = colours[c] if colours.ndim == 3 else colours
        pix_rgb = torch.zeros(cams.height, cams.width, 3, dtype=dt)
        pix_t = torch.ones(cams.height, cams.width, dtype=dt)
        pix_d = torch.zeros(cams.height, cams.width, dtype=dt)
        done = torch.zeros(cams.height, cams.width, dtype=torch.bool)
        for i in torch.argsort(p[:, 2]).tolist():
            x, y, z = p[i].tolist()
            if not 0.01 < z < 100.0:
                continue
            limx = (cams.width - cx) / fx + 0.15 * cams.width / fx, cx / fx + 0.15 * cams.width / fx
            limy = (cams.height - cy) / fy + 0.15 * cams.height / fy, cy / fy + 0.15 * cams.height / fy
            tx, ty = min(max(x / z, -limx[1]), limx[0]), min(max(y / z, -limy[1]), limy[0])
            J = torch.tensor([[fx / z, 0, -fx * tx / z], [0, fy / z, -fy * ty / z]], dtype=dt)
            cov2 = J @ w2c[:3, :3] @ cov[i] @ w2c[:3, :3].T @ J.T + 0.3 * torch.eye(2, dtype=dt)
            inv = torch.linalg.inv(cov2)
            d = torch.stack([u - (fx * x / z + cx), v - (fy * y / z + cy)], -1)
            maha = torch.einsum("hwi,ij,hwj->hw", d, inv, d)
            a = (opac[i] * torch.exp(-0.5 * maha)).clamp(max=0.999)
            use = (a >= 1 / 255) & ~done
            t_next = pix_t * (1 - a)
            stop = use & (t_next <= 1e-4)
            done |= stop
            use &= ~stop
            w = torch.where(use, a * pix_t, torch.zeros_like(a))
            pix_rgb += w[..., None] * col[i]
            pix_d += w * z
            pix_t = torch.where(use, t_next, pix_t)
        alpha = 1 - pix_t
        rgbs.append(pix_rgb + pix_t[..., None] * background)
        alphas.append(alpha[..., None])
        depths.append((pix_d / alpha.clamp_min(1e-10))[..., None])
    return torch.stack(rgbs), torch.stack(alphas), torch.stack(depths)


def random_scene(n, seed, dtype=torch.float64, sh_degree=0):
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians.random_ball(n, 0.5, sh_degree=sh_degree, opacity=0.6, generator=gen, dtype=dtype)
    g.log_scales = g.log_scales + 0.6 * torch.randn(n, 3, generator=gen, dtype=dtype)  # anisotropic
    g.opacity_logits = 2.0 * torch.randn(n, generator=gen, dtype=dtype)
    if sh_degree:
        g.sh_rest = 0.3 * torch.randn(g.sh_rest.shape, generator=gen, dtype=dtype)
    return g


def test_matches_independent_reference_for_any_tile_size():
    g = random_scene(40, seed=3, sh_degree=1)
    cams = orbit_cameras([10.0, -20.0], [30.0, 150.0], 2.5, 45.0, width=23, height=17).to(dtype=torch.float64)
    ref_rgb, ref_alpha, ref_depth = reference_render(g, cams, background=0.5)
    out = render_gaussians(g, cams, background=0.5)
    assert out.alpha.max() > 0.9 and (out.alpha == 0).any()
    assert torch.allclose(out.rgb, ref_rgb, atol=1e-9)
    assert torch.allclose(out.alpha, ref_alpha, atol=1e-9)
    assert torch.allclose(out.depth, ref_depth, atol=1e-8)
    for ts in (4, 16, 32):
        other = rasterization_torch(g.means, g.rotations, g.scales, g.opacities, g.colors(cams.centers),
                                    cams.viewmats, cams.K, 23, 17, render_mode="RGB+ED", tile_size=ts)
        assert torch.allclose(other[1], out.alpha, atol=1e-12)


def test_batch_of_cameras_equals_each_camera_alone():
    g = random_scene(60, seed=5, dtype=torch.float32)
    cams = orbit_cameras([0.0, 30.0, 60.0], [0.0, 120.0, 240.0], 1.8, 40.0, width=32, height=24)
    together = render_gaussians(g, cams)
    for i in range(3):
        alone = render_gaussians(g, cams[i])
        assert torch.allclose(together.rgb[i], alone.rgb[0], atol=1e-6)
        assert torch.allclose(together.depth[i], alone.depth[0], atol=1e-5)


# ---------------------------------------------------------------------- gradients
def test_gradients_reach_every_parameter():
    g = random_scene(200, seed=1, dtype=torch.float32, sh_degree=1).trainable()
    cams = orbit_cameras([15.0, 40.0], [20.0, 200.0], 1.7, 40.0, width=32, height=32)
    out = render_gaussians(g, cams, background=0.3)
    loss = (out.rgb * torch.linspace(0, 1, 3)).sum() + out.alpha.mean() + 0.1 * out.depth.mean()
    loss.backward()
    for name, t in g.tensors().items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name


def test_gradcheck_float64_tiny_scene(one_thread):
    g = random_scene(4, seed=11, sh_degree=1)
    g.opacity_logits = torch.tensor([0.5, 1.0, -0.3, 2.0], dtype=torch.float64)
    cams = orbit_cameras(20.0, 40.0, 1.5, 50.0, width=10, height=9).to(dtype=torch.float64)
    names = ["means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest"]

    weights = torch.rand(3, 9, 10, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def f(*tensors):  # a fixed random projection of all outputs: one backward per check
        scene = Gaussians(**dict(zip(names, tensors)))
        out = render_gaussians(scene, cams, background=0.2)
        return (torch.cat([out.rgb, out.alpha, out.depth], dim=-1) * weights).sum()

    inputs = [getattr(g, n).detach().clone().requires_grad_(True) for n in names]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_info_exposes_projected_means_with_gradient():
    g = random_scene(50, seed=2, dtype=torch.float32).trainable()
    cams = orbit_cameras([0.0, 30.0], [0.0, 90.0], 1.8, 40.0, width=24, height=24)
    info = {}
    render_gaussians(g, cams, info=info).rgb.sum().backward()
    assert info["means2d"].shape == (2, 50, 2) and info["radii"].shape == (2, 50, 2)
    assert info["means2d"].grad is not None and info["means2d"].grad.abs().sum() > 0
    assert (info["width"], info["height"], info["n_cameras"], info["backend"]) == (24, 24, 2, "torch")


# ---------------------------------------------------------------------- backends
def test_backend_choice():
    g = make([0, 0, 2], 0.1, 0.5, (1, 1, 1))
    cam = identity_camera()
    info = {}
    render_gaussians(g, cam, backend="auto", info=info)
    assert info["backend"] == "torch"  # CPU tensors
    with pytest.raises(UserError):
        render_gaussians(g, cam, backend="opengl")
    if not gsplat_available():
        with pytest.raises(UserError, match="gsplat"):
            render_gaussians(g, cam, backend="gsplat")


# ---------------------------------------------------------------------- optimisation
def test_short_optimisation_fits_a_coloured_blob(one_thread):
    start = time.perf_counter()
    torch.manual_seed(0)
    size = 32
    cams = orbit_cameras(10.0, 0.0, 2.0, 40.0, width=size, height=size)
    u, v = pixel_grid(size, size, torch.float32)
    blob = torch.exp(-(((u - 15) / 7.0) ** 2 + ((v - 17) / 5.0) ** 2))[..., None]
    target = blob * torch.tensor([1.0, 0.45, 0.1]) + (1 - blob)  # an orange blob on white

    g = Gaussians.random_ball(500, 0.5, opacity=0.1, generator=torch.Generator().manual_seed(0)).trainable()
    groups = g.param_groups()
    for grp, lr in zip(groups, [0.01, 0.01, 0.02, 0.05, 0.05, 0.0]):
        grp["lr"] = lr
    opt = torch.optim.Adam(groups)
    losses = []
    for _ in range(30):
        loss = ((render_gaussians(g, cams).rgb[0] - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])
    assert time.perf_counter() - start < 20.0
