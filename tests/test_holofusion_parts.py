"""HoloFusion's parts on tiny sizes: the 3D U-Net, the batched renderer, unprojection, the objective."""

import math

import pytest
import torch
from torch import nn

from distill3d.cameras import Cameras, intrinsics_from_fovy, look_at, orbit_cameras
from distill3d.methods.holofusion.objective import (
    DiffusionConfig,
    ObjectiveConfig,
    double_denoise,
    grid_schedule,
)
from distill3d.methods.holofusion.unet3d import UNet3D, UNet3DConfig
from distill3d.methods.holofusion.unproject import (
    grid_points,
    sample_source_masks,
    unproject_features,
)
from distill3d.render.volume import render_volume
from distill3d.render.voxel_batch import render_voxel_batch
from distill3d.scene.voxel_grid import VoxelDecoder, VoxelRadianceField

TINY_UNET = UNet3DConfig(channels=(8, 16), norm_groups=4, attention_heads=2)


def test_unet_shapes_bounds_and_every_input_matters():
    torch.manual_seed(0)
    net = UNet3D(TINY_UNET, feature_dim=4, cond_channels=5)
    for block in net.modules():  # leave the zero-initialised last layers: every path must carry signal
        if isinstance(block, (nn.Conv3d, nn.Conv1d)):
            nn.init.normal_(block.weight, std=0.2)
    v_t, v_bar, t = torch.randn(2, 4, 8, 8, 8), torch.randn(2, 5, 8, 8, 8), torch.tensor([3, 90])
    out = net(v_t, v_bar, t)
    assert out.shape == (2, 4, 8, 8, 8) and out.abs().max() <= 1.0
    assert not torch.allclose(net(v_t, v_bar + 1.0, t), out, atol=1e-4)       # Vbar is used
    assert not torch.allclose(net(v_t, torch.zeros_like(v_bar), t), out, atol=1e-4)
    assert not torch.allclose(net(v_t + 1.0, v_bar, t), out, atol=1e-4)        # V_t is used
    assert not torch.allclose(net(v_t, v_bar, t + 5), out, atol=1e-4)          # t is used
    # grids are independent of each other in a batch
    assert torch.allclose(net(v_t[1:], v_bar[1:], t[1:]), out[1:], atol=1e-5)
    with pytest.raises(ValueError, match="Vbar"):
        net(v_t, v_bar[:, :3], t)


def test_batched_renderer_equals_one_grid_at_a_time():
    torch.manual_seed(1)
    B, V = 3, 2
    grids = torch.randn(B, 4, 8, 8, 8)
    decoder = VoxelDecoder(4, hidden_dim=16, num_hidden_layers=1, density_bias=0.5)
    cams = orbit_cameras(torch.rand(B * V) * 80 - 20, torch.rand(B * V) * 360, 1.8 + torch.rand(B * V), 40.0, 12, 10)
    bg = torch.rand(B * V, 3)
    out = render_voxel_batch(grids, decoder, cams, num_samples=12, stratified=False, background=bg,
                             chunk_points=1000)  # several chunks
    assert out.rgb.shape == (B * V, 10, 12, 3) and out.alpha.shape == (B * V, 10, 12, 1)
    for b in range(B):
        views = slice(b * V, (b + 1) * V)
        ref = render_volume(VoxelRadianceField.from_features(grids[b], decoder), cams[views], num_samples=12,
                            stratified=False, compute_normals=False, background=bg[views])
        assert torch.allclose(out.rgb[views], ref.rgb, atol=1e-5)
        assert torch.allclose(out.alpha[views], ref.alpha, atol=1e-5)
        assert torch.allclose(out.depth[views], ref.depth, atol=1e-4)
    assert (out.alpha > 0.05).any() and (out.alpha < 0.95).any()
    # a camera looking away from the cube sees only the background
    away = Cameras(look_at(torch.tensor([[3.0, 0, 0]]), torch.tensor([[6.0, 0, 0]])), intrinsics_from_fovy(
        torch.tensor([40.0]), 6, 6), 6, 6)
    empty = render_voxel_batch(grids[:1], decoder, away, num_samples=4, background=0.25)
    assert torch.equal(empty.alpha, torch.zeros_like(empty.alpha)) and torch.allclose(empty.rgb, torch.full_like(empty.rgb, 0.25))
    # gradients reach the grids and the decoder
    grids.requires_grad_(True)
    render_voxel_batch(grids, decoder, cams, num_samples=4, generator=torch.Generator().manual_seed(0)).rgb.sum().backward()
    assert grids.grad.abs().sum() > 0 and decoder.mlp[0].weight.grad.abs().sum() > 0


def _front_camera(width: int, height: int, distance: float = 3.0) -> Cameras:
    """A camera on +X looking at the origin, image up = world +Z: image u grows with +Y, v with -Z."""
    return Cameras(look_at(torch.tensor([[distance, 0.0, 0.0]]), torch.zeros(1, 3)),
                   intrinsics_from_fovy(torch.tensor([40.0]), width, height), width, height)


def test_unprojection_puts_features_where_the_voxels_project():
    S, W, H, d = 6, 20, 16, 3.0
    cam = _front_camera(W, H, d)
    fy = 0.5 * H / math.tan(math.radians(20.0))
    u_px = torch.arange(W).float() + 0.5
    v_px = torch.arange(H).float() + 0.5
    ramp = torch.stack([u_px[None, :].expand(H, W) / W, v_px[:, None].expand(H, W) / H])  # [2, H, W]
    grid = unproject_features(ramp[None, None], cam, torch.ones(1, 1, dtype=torch.bool), S, bound=1.0)
    assert grid.shape == (1, 3, S, S, S)
    p = grid_points(S, 1.0)
    depth = d - p[:, 0]
    u = W / 2 + fy * p[:, 1] / depth  # the pinhole by hand, from the camera's placement
    v = H / 2 - fy * p[:, 2] / depth
    inside = (u >= 0.5) & (u <= W - 0.5) & (v >= 0.5) & (v <= H - 0.5)  # away from the border clamp
    got = grid.reshape(3, -1)
    assert inside.sum() > 20
    assert torch.allclose(got[0, inside], u[inside] / W, atol=1e-5)
    assert torch.allclose(got[1, inside], v[inside] / H, atol=1e-5)
    seen = (u >= 0) & (u <= W) & (v >= 0) & (v <= H)
    assert torch.equal(got[2] > 0, seen) and (~seen).any()  # the visibility channel
    assert torch.equal(got[:2, ~seen], torch.zeros(2, int((~seen).sum())))


def test_unprojection_averages_the_views_that_see_a_voxel_and_empty_is_zero():
    S = 5
    front = _front_camera(8, 8)
    side = Cameras(look_at(torch.tensor([[0.0, 3.0, 0.0]]), torch.zeros(1, 3)), front.K, 8, 8)
    cams = Cameras.cat([front, side])
    feats = torch.stack([torch.full((1, 8, 8), 2.0), torch.full((1, 8, 8), 4.0)])[None]  # [1, 2, 1, 8, 8]
    both = unproject_features(feats, cams, torch.ones(1, 2, dtype=torch.bool), S).reshape(2, -1)
    share = both[1]
    assert set(share.unique().tolist()) <= {0.0, 0.5, 1.0} and (share == 1.0).any()
    assert torch.allclose(both[0, share == 1.0], torch.tensor(3.0))  # mean of 2 and 4
    only_front = unproject_features(feats, cams, torch.tensor([[True, False]]), S).reshape(2, -1)
    assert torch.allclose(only_front[0, only_front[1] > 0], torch.tensor(2.0))
    assert torch.equal(unproject_features(feats, cams, torch.zeros(1, 2, dtype=torch.bool), S),
                       torch.zeros(1, 2, S, S, S))
    none = unproject_features(torch.zeros(3, 0, 7, 1, 1), front[:0],
                              torch.zeros(3, 0, dtype=torch.bool), S)
    assert torch.equal(none, torch.zeros(3, 8, S, S, S))


def test_source_subsets_are_prefixes_with_the_documented_distribution():
    masks = sample_source_masks(20000, 15, 0.3, torch.Generator().manual_seed(0))
    counts = masks.sum(1)
    assert torch.equal(masks, torch.arange(15)[None] < counts[:, None])  # the first k views
    assert abs((counts == 0).float().mean().item() - 0.3) < 0.015
    nonempty = counts[counts > 0]
    assert nonempty.min() == 1 and nonempty.max() == 15
    assert abs(nonempty.float().mean().item() - 8.0) < 0.1  # uniform on 1..15


def test_grid_schedule_is_ddpm_linear():
    from diffusers import DDPMScheduler

    schedule = grid_schedule(DiffusionConfig())
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    assert torch.allclose(schedule.alphas_cumprod, ref.alphas_cumprod.float(), rtol=1e-5)
    assert schedule.prediction_type == "sample"


class _Spy(nn.Module):
    """A denoiser that records its inputs: out = tanh(w * V_t + Vbar mean)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.7))
        self.calls = []

    def forward(self, v_t, v_bar, t):
        self.calls.append((v_t, t, v_bar))
        return torch.tanh(self.w * v_t + v_bar.mean(1, keepdim=True))


@pytest.mark.parametrize("detach", [True, False])
def test_double_denoising_renoises_the_first_pass(detach):
    schedule = grid_schedule(DiffusionConfig(num_train_timesteps=50))
    spy, v_bar = _Spy(), torch.randn(3, 2, 4, 4, 4)
    gen = torch.Generator().manual_seed(5)
    replay = torch.Generator().set_state(gen.get_state())
    out = double_denoise(spy, v_bar, schedule, gen, feature_dim=1, detach_first_pass=detach)
    (v_T, t_first, first_bar), (v_t, t, second_bar) = spy.calls
    assert first_bar is v_bar and second_bar is v_bar                           # Eq. 5-6: the same Vbar
    assert torch.equal(t_first, torch.full((3,), 49))                          # from pure noise at T
    assert torch.equal(v_T, torch.randn(3, 1, 4, 4, 4, generator=replay))
    assert torch.equal(t, torch.randint(0, 50, (3,), generator=replay))
    eps = torch.randn(3, 1, 4, 4, 4, generator=replay)
    abar = schedule.alphas_cumprod[t].reshape(3, 1, 1, 1, 1)
    assert torch.allclose(v_t, abar.sqrt() * out["v_0"] + (1 - abar).sqrt() * eps, atol=1e-6)  # Eq. 2
    out["v_0_again"].sum().backward()
    direct = torch.autograd.grad(torch.tanh(spy.w * v_t.detach() + v_bar.mean(1, keepdim=True)).sum(), spy.w)[0]
    if detach:  # only the second pass carries gradient
        assert torch.allclose(spy.w.grad, direct)
    else:
        assert not torch.allclose(spy.w.grad, direct)


def test_first_pass_views_all_gives_the_first_pass_its_own_conditioning():
    schedule = grid_schedule(DiffusionConfig(num_train_timesteps=50))
    spy, v_bar, v_all = _Spy(), torch.zeros(2, 2, 4, 4, 4), torch.randn(2, 2, 4, 4, 4)
    out = double_denoise(spy, v_bar, schedule, torch.Generator().manual_seed(1), feature_dim=1, v_bar_first=v_all)
    (_, _, first_bar), (_, _, second_bar) = spy.calls
    assert first_bar is v_all and second_bar is v_bar
    assert torch.allclose(out["v_0"], torch.tanh(spy.w * spy.calls[0][0] + v_all.mean(1, keepdim=True)))
    with pytest.raises(ValueError, match="first_pass_views"):
        ObjectiveConfig(first_pass_views="none")
