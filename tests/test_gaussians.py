"""3D Gaussians: constructors, activations, SH colours, densification and optimiser surgery."""

import math

import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.render.splat import render_gaussians
from distill3d.scene.gaussians import (
    SH_C0,
    DensifyConfig,
    Densifier,
    Gaussians,
    clone_gaussians,
    prune_gaussians,
    reset_opacity,
    sh_basis,
    split_gaussians,
)


@pytest.fixture
def one_thread():
    """Tiny renders gain nothing from intra-op threads and lose much when cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------- construction
def test_random_ball_shapes_ranges_and_seed():
    g = Gaussians.random_ball(300, radius=0.7, sh_degree=2, opacity=0.3, generator=gen(1))
    assert len(g) == 300 and g.sh_degree == 2
    assert g.means.shape == (300, 3) and g.quats.shape == (300, 4) and g.log_scales.shape == (300, 3)
    assert g.opacity_logits.shape == (300,) and g.sh_dc.shape == (300, 1, 3) and g.sh_rest.shape == (300, 8, 3)
    assert (g.means.norm(dim=-1) <= 0.7 + 1e-6).all() and g.means.norm(dim=-1).max() > 0.6
    assert torch.allclose(g.opacities, torch.full((300,), 0.3), atol=1e-6)
    assert torch.allclose(g.rotations.norm(dim=-1), torch.ones(300))
    assert ((g.rgb >= 0) & (g.rgb <= 1)).all()
    again = Gaussians.random_ball(300, radius=0.7, sh_degree=2, opacity=0.3, generator=gen(1))
    assert all(torch.equal(a, b) for a, b in zip(g.tensors().values(), again.tensors().values()))


def test_from_points_colours_and_nearest_neighbour_scale():
    square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.25, 0.75]])
    g = Gaussians.from_points(square, rgb)
    assert torch.allclose(g.rgb, rgb, atol=1e-6)
    assert torch.allclose(g.sh_dc[:, 0], (rgb - 0.5) / SH_C0)
    # 3 nearest neighbours of a unit square's corner: 1, 1, sqrt(2) -> rms sqrt(4/3).
    assert torch.allclose(g.scales, torch.full((4, 3), math.sqrt(4 / 3)), atol=1e-6)
    assert torch.allclose(g.opacities, torch.full((4,), 0.1), atol=1e-6)
    assert torch.equal(g.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(4, 4))


def test_from_values_round_trip_and_covariance():
    means = torch.randn(5, 3, generator=gen())
    scales = torch.tensor([[0.1, 0.2, 0.3]]).expand(5, 3)
    half = math.sqrt(0.5)
    quats = torch.tensor([[half, 0.0, 0.0, half]]).expand(5, 4)  # 90 degrees about +z
    g = Gaussians.from_values(means, scales, torch.full((5,), 0.7), rgb=torch.full((5, 3), 0.2), quats=quats)
    assert torch.allclose(g.scales, scales) and torch.allclose(g.opacities, torch.full((5,), 0.7))
    assert torch.allclose(g.rgb, torch.full((5, 3), 0.2), atol=1e-6)
    # Local x maps to world y: the world covariance is diag(0.2^2, 0.1^2, 0.3^2).
    assert torch.allclose(g.covariances[0], torch.diag(torch.tensor([0.04, 0.01, 0.09])), atol=1e-6)
    with pytest.raises(ValueError):
        Gaussians(means, quats, g.log_scales, g.opacity_logits, g.sh_dc, torch.zeros(5, 2, 3))


def test_select_cat_and_trainable():
    g = Gaussians.random_ball(10, generator=gen())
    both = Gaussians.cat([g[:4], g[4:]])
    assert torch.equal(both.means, g.means)
    t = g.trainable()
    assert all(isinstance(p, torch.nn.Parameter) for p in t.parameters())
    assert [grp["name"] for grp in t.param_groups()] == list(t.tensors())


# ---------------------------------------------------------------------- colours
def test_sh_basis_is_orthonormal_on_the_sphere():
    dirs = torch.nn.functional.normalize(torch.randn(400_000, 3, generator=gen(), dtype=torch.float64), dim=-1)
    basis = sh_basis(3, dirs)
    gram = 4 * math.pi * basis.T @ basis / dirs.shape[0]
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.02)


def test_view_dependent_colour_uses_direction_from_camera():
    g = Gaussians.from_values(torch.zeros(1, 3), torch.full((1, 3), 0.1), torch.full((1,), 0.5),
                              sh=torch.zeros(1, 4, 3))
    g.sh_rest[0, 2] = torch.tensor([2.0, 0.5, 0.0])  # coefficients of Y_1,1 = -c1 x (3DGS sign)
    centres = torch.tensor([[2.0, 0, 0], [-2.0, 0, 0]])
    c = g.colors(centres)  # [2, 1, 3]
    c1 = math.sqrt(3 / (4 * math.pi))
    # from +x the direction camera -> Gaussian is -x, so Y = +c1; from -x it is -c1.
    assert torch.allclose(c[0, 0], torch.tensor([0.5 + 2 * c1, 0.5 + 0.5 * c1, 0.5]), atol=1e-6)
    assert torch.allclose(c[1, 0], torch.tensor([0.0, 0.5 - 0.5 * c1, 0.5]), atol=1e-6)  # red clamped at 0
    assert torch.allclose(g.colors(centres, sh_degree=0), torch.full((1, 3), 0.5))


# ---------------------------------------------------------------------- densification
def adam_with_state(g: Gaussians) -> torch.optim.Adam:
    opt = torch.optim.Adam(g.param_groups())
    loss = sum((t ** 2).sum() for t in g.parameters())
    loss.backward()
    opt.step()
    return opt


def check_state(g: Gaussians, opt: torch.optim.Adam):
    params = [p for grp in opt.param_groups for p in grp["params"]]
    assert [id(p) for p in params] == [id(p) for p in g.parameters()]
    for p in params:
        st = opt.state.get(p)
        if st:  # parameters that never had a gradient (e.g. empty sh_rest) have no state
            assert st["exp_avg"].shape == p.shape and st["exp_avg_sq"].shape == p.shape
    assert opt.state[g.means]["exp_avg"].shape == g.means.shape


def test_clone_split_prune_keep_optimizer_state_consistent():
    g = Gaussians.random_ball(20, sh_degree=1, generator=gen()).trainable()
    opt = adam_with_state(g)
    before = {name: opt.state[p]["exp_avg"].clone() for name, p in g.tensors().items()}
    old_means = g.means.detach().clone()

    mask = torch.zeros(20, dtype=torch.bool)
    mask[[1, 5, 7]] = True
    assert clone_gaussians(g, mask, opt) == 3
    assert len(g) == 23 and isinstance(g.means, torch.nn.Parameter)
    assert torch.equal(g.means[20:].detach(), old_means[mask])
    check_state(g, opt)
    assert torch.equal(opt.state[g.means]["exp_avg"][:20], before["means"])
    assert (opt.state[g.means]["exp_avg"][20:] == 0).all()

    split = torch.zeros(23, dtype=torch.bool)
    split[[0, 2]] = True
    parents = g[split].detach()
    assert split_gaussians(g, split, opt, generator=gen(3)) == 2
    assert len(g) == 23 - 2 + 4
    check_state(g, opt)
    children = g[-4:].detach()
    assert torch.allclose(children.log_scales, parents.log_scales.repeat(2, 1) - math.log(1.6))
    assert torch.equal(children.sh_dc, parents.sh_dc.repeat(2, 1, 1))
    offsets = (children.means - parents.means.repeat(2, 1)).norm(dim=-1)
    assert (offsets > 0).all() and (offsets < 5 * parents.scales.max(dim=-1).values.repeat(2)).all()

    prune = torch.zeros(25, dtype=torch.bool)
    prune[:5] = True
    kept_state = opt.state[g.quats]["exp_avg_sq"][5:].clone()
    assert prune_gaussians(g, prune, opt) == 5
    assert len(g) == 20
    check_state(g, opt)
    assert torch.equal(opt.state[g.quats]["exp_avg_sq"], kept_state)

    reset_opacity(g, 0.01, opt)
    assert (g.opacities <= 0.01 + 1e-6).all()
    assert (opt.state[g.opacity_logits]["exp_avg"] == 0).all()
    # the optimiser still steps with the new parameters
    (g.means.sum() + g.opacity_logits.sum()).backward()
    opt.step()


def fake_info(grads_px: torch.Tensor, width=64, height=64) -> dict:
    """An ``info`` dict as the renderer fills it, with a given means2d gradient [C, N, 2]."""
    means2d = torch.zeros_like(grads_px, requires_grad=True)
    means2d.grad = grads_px
    radii = torch.ones(grads_px.shape[:-1] + (2,), dtype=torch.int32)
    return {"means2d": means2d, "radii": radii, "width": width, "height": height, "n_cameras": grads_px.shape[0]}


def test_densifier_schedule_and_decisions():
    n = 8
    g = Gaussians.random_ball(n, generator=gen()).trainable()
    with torch.no_grad():
        g.log_scales[:4] = math.log(0.005)  # small: cloned when the gradient is high
        g.log_scales[4:] = math.log(0.05)  # large: split
        g.opacity_logits[:] = 0.0
        g.opacity_logits[7] = -8.0  # opacity 3e-4: pruned
    opt = adam_with_state(g)
    d = Densifier(DensifyConfig(), generator=gen(1))
    grads = torch.zeros(1, n, 2)
    grads[0, [0, 1, 4], 0] = 0.001 / 32  # NDC gradient 0.001 > 0.0002 (pixels: times 2 / width)
    grads[0, [2, 5], 0] = 0.0001 / 32  # below the threshold
    d.accumulate(fake_info(grads))
    assert torch.allclose(d.mean_grads(n, "cpu")[[0, 2]], torch.tensor([0.001, 0.0001]))

    assert d.step(550, g, opt) == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}  # not a multiple of 100
    assert d.step(500, g, opt)["cloned"] == 0  # densification starts after step 500
    done = d.step(600, g, opt)
    assert (done["cloned"], done["split"], done["pruned"]) == (2, 1, 1)
    assert len(g) == n + 2 + 1 - 1
    check_state(g, opt)
    assert d.grad_sum is None  # statistics restart after densifying

    assert d.step(3000, g, opt)["reset"] == 1
    assert (g.opacities <= 0.01 + 1e-6).all()
    assert d.step(15_000, g, opt) == {"cloned": 0, "split": 0, "pruned": 0, "reset": 0}


def test_densify_with_rendered_gradients_grows_the_scene(one_thread):
    g = Gaussians.random_ball(100, 0.4, opacity=0.5, generator=gen(2)).trainable()
    opt = torch.optim.Adam(g.param_groups())
    cams = orbit_cameras([0.0, 40.0], [0.0, 120.0], 1.8, 40.0, width=24, height=24)
    target = torch.rand(2, 24, 24, 3, generator=gen(3))
    d = Densifier(DensifyConfig(grad_threshold=1e-7, start_step=0, every=2, percent_dense=0.05), generator=gen(4))
    for step in range(1, 5):
        info = {}
        loss = ((render_gaussians(g, cams, info=info).rgb - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        d.accumulate(info)
        opt.step()
        d.step(step, g, opt)
        check_state(g, opt)
    assert len(g) > 100
