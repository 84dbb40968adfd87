"""NoiseSchedule, parameterisation conversions and classifier-free guidance."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from distill3d.diffusion import (
    NoiseSchedule,
    apply_cfg,
    eps_from_v,
    eps_from_x0,
    guided_prediction,
    sigma_space_to_vp,
    standard_scale,
    v_from_x0_eps,
    vp_to_sigma_space,
    x0_and_eps,
    x0_from_eps,
    x0_from_v,
)


SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def sd_scheduler(**kwargs) -> DDPMScheduler:
    return DDPMScheduler(**SD_BETAS, **kwargs)


def test_default_is_stable_diffusion_schedule():
    schedule = NoiseSchedule()
    assert schedule.num_train_timesteps == 1000
    assert torch.equal(schedule.alphas_cumprod, sd_scheduler().alphas_cumprod)
    assert schedule.prediction_type == "epsilon"


def test_from_diffusers_reads_config():
    scheduler = DDIMScheduler(
        beta_schedule="linear", prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1,
        timestep_spacing="trailing", num_train_timesteps=500,
    )
    schedule = NoiseSchedule.from_diffusers(scheduler)
    assert schedule.num_train_timesteps == 500
    assert schedule.prediction_type == "v_prediction"
    assert schedule.final_alpha_bar == pytest.approx(float(scheduler.alphas_cumprod[0]))
    assert (schedule.timestep_spacing, schedule.steps_offset) == ("trailing", 1)
    assert NoiseSchedule.from_diffusers(DDIMScheduler()).final_alpha_bar == 1.0
    euler = EulerDiscreteScheduler(prediction_type="v_prediction", **SD_BETAS)
    from_euler = NoiseSchedule.from_diffusers(euler)
    assert torch.equal(from_euler.alphas_cumprod, NoiseSchedule().alphas_cumprod)
    assert from_euler.prediction_type == "v_prediction"
    # diffusers' Euler sigmas are the sigma-form noise levels of the same table.
    torch.testing.assert_close(from_euler.sigma(torch.arange(1000)), euler.sigmas[:-1].flip(0), rtol=1e-5, atol=0)


def test_sigma_matches_scheduler_alphas_cumprod():
    schedule = NoiseSchedule()
    abar = sd_scheduler().alphas_cumprod.double()
    t = torch.arange(1000)
    expected = ((1 - abar) / abar).sqrt().float()
    torch.testing.assert_close(schedule.sigma(t), expected, rtol=1e-6, atol=0)
    assert schedule.sigma(999).shape == ()
    assert float(schedule.sigma(999)) == pytest.approx(float(expected[999]), rel=1e-6)


def test_float_timesteps_interpolate_and_invert():
    schedule = NoiseSchedule()
    table = schedule.alphas_cumprod
    # Integer-valued floats give the table itself.
    torch.testing.assert_close(schedule.alpha_bar(torch.arange(1000).float()), table, rtol=1e-6, atol=0)
    # Half steps: the geometric mean of the neighbours (log-linear interpolation).
    half = schedule.alpha_bar(torch.tensor([10.5, 700.5]))
    torch.testing.assert_close(half, (table[[10, 700]] * table[[11, 701]]).sqrt(), rtol=1e-6, atol=0)
    # t_from_sigma inverts sigma exactly, for integer and fractional t.
    t = torch.tensor([0.0, 1.0, 20.25, 500.0, 731.7, 998.5, 999.0])
    torch.testing.assert_close(schedule.t_from_sigma(schedule.sigma(t)), t, atol=2e-3, rtol=0)
    assert float(schedule.t_from_sigma(1e-6)) == 0.0 and float(schedule.t_from_sigma(1e6)) == 999.0


def test_add_noise_matches_diffusers():
    scheduler = sd_scheduler()
    schedule = NoiseSchedule.from_diffusers(scheduler)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    t = torch.tensor([0, 417, 999])
    torch.testing.assert_close(schedule.add_noise(x0, eps, t), scheduler.add_noise(x0, eps, t), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(schedule.add_noise(x0, eps, 417), scheduler.add_noise(x0, eps, torch.tensor([417])))


def test_conversions_round_trip_and_match_diffusers_velocity():
    scheduler = sd_scheduler()
    schedule = NoiseSchedule.from_diffusers(scheduler)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(3, 4, 6, 6, generator=g), torch.randn(3, 4, 6, 6, generator=g)
    t = torch.tensor([3, 500, 990])
    abar = schedule.alpha_bar(t)
    x_t = schedule.add_noise(x0, eps, t)
    torch.testing.assert_close(x0_from_eps(x_t, eps, abar), x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_from_x0(x_t, x0, abar), eps, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_from_eps(x_t, eps_from_x0(x_t, x0, abar), abar), x0, atol=1e-4, rtol=1e-4)
    v = v_from_x0_eps(x0, eps, abar)
    torch.testing.assert_close(v, scheduler.get_velocity(x0, eps, t), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(x0_from_v(x_t, v, abar), x0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(eps_from_v(x_t, v, abar), eps, atol=1e-5, rtol=1e-5)
    for kind, pred in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        got_x0, got_eps = x0_and_eps(pred, x_t, abar, kind)
        torch.testing.assert_close(got_x0, x0, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got_eps, eps, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError):
        x0_and_eps(eps, x_t, abar, "score")


def test_sigma_space_form():
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    t = torch.tensor([100, 800])
    x_t = schedule.add_noise(x0, eps, t)
    scaled = vp_to_sigma_space(x_t, schedule.alpha_bar(t))
    sigma = schedule.sigma(t).view(2, 1, 1, 1)
    torch.testing.assert_close(scaled, x0 + sigma * eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sigma_space_to_vp(scaled, schedule.alpha_bar(t)), x_t, atol=1e-6, rtol=1e-6)


def test_cfg_forms():
    g = torch.Generator().manual_seed(3)
    cond, uncond = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    torch.testing.assert_close(apply_cfg(cond, uncond, 1.0), cond)
    torch.testing.assert_close(apply_cfg(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(apply_cfg(cond, uncond, 7.5), uncond + 7.5 * (cond - uncond))
    torch.testing.assert_close(apply_cfg(cond, uncond, 6.5, form="code"), apply_cfg(cond, uncond, 7.5))
    torch.testing.assert_close(apply_cfg(cond, uncond, 0.0, form="code"), cond)
    assert standard_scale(6.5, "code") == 7.5 and standard_scale(7.5, "standard") == 7.5


def test_guided_prediction_batches_once():
    calls = []

    def predict(x, t, emb):
        calls.append(x.shape[0])
        return x * emb.mean(dim=(1, 2)).view(-1, 1, 1, 1) + torch.sin(t.float()).view(-1, 1, 1, 1)

    x, t = torch.randn(2, 3, 4, 4), torch.tensor([10, 20])
    cond_emb, uncond_emb = torch.randn(2, 7, 8), torch.randn(2, 7, 8)
    out = guided_prediction(predict, x, t, cond_emb, uncond_emb, 3.0)
    assert calls == [4]
    expected = apply_cfg(predict(x, t, cond_emb), predict(x, t, uncond_emb), 3.0)
    torch.testing.assert_close(out, expected)
    calls.clear()
    torch.testing.assert_close(guided_prediction(predict, x, t, cond_emb, uncond_emb, 1.0), predict(x, t, cond_emb))
    assert calls[0] == 2


def test_guidance_commutes_with_conversion():
    """Guiding v then converting equals converting then guiding (affine combination)."""
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(4)
    x_t, v_c, v_u = (torch.randn(1, 4, 3, 3, generator=g) for _ in range(3))
    abar = schedule.alpha_bar(torch.tensor([600]))
    guided = x0_from_v(x_t, apply_cfg(v_c, v_u, 7.5), abar)
    separate = apply_cfg(x0_from_v(x_t, v_c, abar), x0_from_v(x_t, v_u, abar), 7.5)
    torch.testing.assert_close(guided, separate, atol=1e-5, rtol=1e-5)
    assert math.isfinite(float(guided.sum()))
