"""HoloFusion's super-resolution diffusion model D_beta (Sec. 3.3.1, Eq. 7) on tiny images."""

import pytest
import torch

from distill3d.diffusion.samplers import ddim_sample
from distill3d.errors import UserError
from distill3d.methods.holofusion.super_resolution import (
    SuperResolutionConfig,
    SuperResolutionNet,
    SuperResolutionTeacher,
    sr_diffusion_loss,
    sr_schedule,
    super_resolve,
)

TINY = SuperResolutionConfig(block_out_channels=(8, 16), layers_per_block=1, mid_attention=False,
                             norm_num_groups=4, sampling_steps=3)


def _net(seed: int = 0, **changes) -> SuperResolutionNet:
    torch.manual_seed(seed)
    config = SuperResolutionConfig(**{**TINY.__dict__, **changes})
    return SuperResolutionNet(config)


def _pair(seed: int = 0, batch: int = 2, h: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    high = torch.rand(batch, 2 * h, 2 * h, 3, generator=g)
    low = torch.nn.functional.avg_pool2d(high.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    return high, low


def test_schedule_is_ddpm_linear_with_x0_prediction():
    schedule = sr_schedule(SuperResolutionConfig())
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float32)
    assert torch.allclose(schedule.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=1e-5)
    assert schedule.prediction_type == "sample"  # Eq. 7: D_beta regresses the clean image


def test_default_network_is_light():
    net = SuperResolutionNet()
    count = sum(p.numel() for p in net.parameters())
    assert 1e6 < count < 5e6  # "a lightweight U-Net" (Sec. 3.3.1): 3.6 M
    out = net(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 32, 32), torch.tensor([10]))
    assert out.shape == (1, 3, 64, 64)


def test_loss_is_eq_7_with_the_drawn_t_and_noise():
    net, schedule = _net(), sr_schedule(TINY)
    high, low = _pair()
    loss = sr_diffusion_loss(net, schedule, high, low, torch.Generator().manual_seed(5))
    # the same draws, in the same order, computed directly from the table of abar
    g = torch.Generator().manual_seed(5)
    t = torch.randint(1000, (2,), generator=g)
    eps = torch.randn(2, 3, 16, 16, generator=g)
    x0 = high.permute(0, 3, 1, 2) * 2 - 1
    a = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    expected = ((net(x_t, low.permute(0, 3, 1, 2) * 2 - 1, t) - x0) ** 2).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_reaches_the_low_res_render():
    net, schedule = _net(), sr_schedule(TINY)
    high, low = _pair()
    low.requires_grad_(True)
    sr_diffusion_loss(net, schedule, high, low, torch.Generator().manual_seed(0)).backward()
    assert low.grad is not None and low.grad.abs().sum() > 0  # trained end-to-end with the 3D model


def test_training_lowers_the_loss_on_a_fixed_pair():
    net, schedule = _net(predict_residual=False), sr_schedule(TINY)
    high, low = _pair(batch=1)
    high, low = high.expand(8, -1, -1, -1), low.expand(8, -1, -1, -1)

    def held_out_loss() -> float:  # the same t and noise before and after
        with torch.no_grad():
            return sr_diffusion_loss(net, schedule, high, low, torch.Generator().manual_seed(123)).item()

    before = held_out_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = sr_diffusion_loss(net, schedule, high, low, g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    assert after < 0.5 * before, (before, after)


def test_one_step_sample_is_the_clipped_x0_estimate_at_t_max():
    net, schedule = _net(1), sr_schedule(TINY)
    _, low = _pair(batch=3)
    out = super_resolve(net, schedule, low, num_steps=1, generator=torch.Generator().manual_seed(7))
    noise = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        x0 = net(noise, low.permute(0, 3, 1, 2) * 2 - 1, torch.full((3,), 999)).clamp(-1, 1)
    assert torch.allclose(out, ((x0 + 1) / 2).permute(0, 2, 3, 1), atol=1e-6)


def test_super_resolve_shape_range_and_seed():
    net, schedule = _net(2), sr_schedule(TINY)
    _, low = _pair(batch=3, h=6)
    first = super_resolve(net, schedule, low, generator=torch.Generator().manual_seed(3), batch_size=2)
    again = super_resolve(net, schedule, low, generator=torch.Generator().manual_seed(3))
    other = super_resolve(net, schedule, low, generator=torch.Generator().manual_seed(4))
    assert first.shape == (3, 12, 12, 3)
    assert first.min() >= 0 and first.max() <= 1
    assert torch.allclose(first, again, atol=1e-6)      # a seed repeats the samples, chunked or not
    assert (first - other).abs().max() > 1e-3           # another seed draws other samples


def test_teacher_answers_with_consistent_x0_and_eps():
    net, schedule = _net(), sr_schedule(TINY)
    teacher = SuperResolutionTeacher(net, schedule, native_image_size=16)
    _, low = _pair()
    x_t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 700])
    out = teacher.denoise(x_t, t, low.permute(0, 3, 1, 2) * 2 - 1)
    a = schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    assert torch.allclose(a.sqrt() * out.x0 + (1 - a).sqrt() * out.eps, x_t, atol=1e-4)
    # the generic DDIM sampler runs on it (as SDS and the bank use it)
    x = ddim_sample(teacher, (2, 3, 16, 16), low.permute(0, 3, 1, 2) * 2 - 1, 2,
                    generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16)
    with pytest.raises(UserError):
        teacher.denoise(x_t, t, low.permute(0, 3, 1, 2), guidance_scale=7.5)


def test_bad_settings_are_user_errors():
    with pytest.raises(UserError):
        SuperResolutionConfig(block_out_channels=(12, 24), norm_num_groups=8)
    with pytest.raises(UserError):
        SuperResolutionConfig(scale=0)
    with pytest.raises(ValueError):
        _net()(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), torch.tensor([1]))
