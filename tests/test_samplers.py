"""Samplers against diffusers' schedulers, step by step, and against exact ODE solutions."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from distill3d.diffusion import (
    NoiseSchedule,
    PixelTeacher,
    TextCond,
    apply_cfg,
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    euler_sigma_step,
    vp_to_sigma_space,
)

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
SHAPE = (2, 3, 4, 4)


def toy_network(x_t, t, emb):
    """A fixed deterministic 'model': 0.1 x_t + sin(t) (+ a prompt-dependent shift)."""
    t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1, 1)
    return 0.1 * x_t + torch.sin(t) + emb.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)


def toy_teacher(schedule: NoiseSchedule) -> PixelTeacher:
    return PixelTeacher(toy_network, lambda prompts: torch.zeros(len(prompts), 2, 3), schedule, native_image_size=4)


def toy_cond() -> TextCond:
    return TextCond(cond=torch.full((1, 2, 3), 0.2), uncond=torch.full((1, 2, 3), -0.1))


def collect(sampler, *args, **kwargs):
    steps = []
    out = sampler(*args, step_callback=lambda i, t, x: steps.append((t, x.clone())), **kwargs)
    return out, steps


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("num_steps", [1, 7, 50, 1000])
def test_ddim_timesteps_match_diffusers(spacing, offset, num_steps):
    scheduler = DDIMScheduler(timestep_spacing=spacing, steps_offset=offset, **SD_BETAS)
    scheduler.set_timesteps(num_steps)
    assert torch.equal(ddim_timesteps(num_steps, 1000, spacing, offset), scheduler.timesteps)


@pytest.mark.parametrize(
    "prediction_type,spacing,offset,alpha_to_one",
    [("epsilon", "leading", 1, False), ("v_prediction", "trailing", 0, True), ("epsilon", "leading", 0, True)],
)
def test_ddim_sample_matches_diffusers_every_step(prediction_type, spacing, offset, alpha_to_one):
    scheduler = DDIMScheduler(
        prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=offset,
        set_alpha_to_one=alpha_to_one, clip_sample=False, **SD_BETAS,
    )
    teacher = toy_teacher(NoiseSchedule.from_diffusers(scheduler))
    cond, scale = toy_cond(), 7.5
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))

    scheduler.set_timesteps(50)
    reference, x = [], x_T.clone()
    for t in scheduler.timesteps:
        tb = t.expand(SHAPE[0])
        out_c = toy_network(x, tb, cond.cond.expand(SHAPE[0], 2, 3))
        out_u = toy_network(x, tb, cond.uncond.expand(SHAPE[0], 2, 3))
        x = scheduler.step(apply_cfg(out_c, out_u, scale), t, x, eta=0.0).prev_sample
        reference.append((int(t), x.clone()))

    out, steps = collect(ddim_sample, teacher, SHAPE, cond, num_steps=50, guidance_scale=scale, noise=x_T)
    assert [t for t, _ in steps] == [t for t, _ in reference]
    for (_, mine), (_, theirs) in zip(steps, reference):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, reference[-1][1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_steps,clip", [(1000, False), (50, True)])
def test_ddpm_sample_matches_diffusers_with_same_noise(num_steps, clip):
    offset = 0 if num_steps == 1000 else 1  # offset 1 would reach t = 1000
    scheduler = DDPMScheduler(variance_type="fixed_small", clip_sample=clip, steps_offset=offset, **SD_BETAS)
    teacher = toy_teacher(NoiseSchedule.from_diffusers(scheduler))
    cond = toy_cond()

    g = torch.Generator().manual_seed(1)
    x = torch.randn(SHAPE, generator=g)
    scheduler.set_timesteps(num_steps)
    reference = []
    for t in scheduler.timesteps:
        pred = toy_network(x, t.expand(SHAPE[0]), cond.cond.expand(SHAPE[0], 2, 3))
        x = scheduler.step(pred, t, x, generator=g).prev_sample
        reference.append((int(t), x.clone()))

    out, steps = collect(
        ddpm_sample, teacher, SHAPE, cond, num_steps=num_steps,
        generator=torch.Generator().manual_seed(1), clip_x0=1.0 if clip else None,
    )
    assert [t for t, _ in steps] == [t for t, _ in reference]
    for (_, mine), (_, theirs) in zip(steps, reference):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def one_point_teacher(x0_data: torch.Tensor, schedule: NoiseSchedule) -> PixelTeacher:
    """The perfect denoiser of the data distribution {x0_data}: D(x_t, t) = x0_data."""
    schedule = schedule.with_prediction_type("sample")
    return PixelTeacher(lambda x, t, e: x0_data.expand_as(x), lambda p: torch.zeros(len(p), 1, 1), schedule, 4)


def test_euler_sigma_step_from_exact_x0_is_exact():
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    s1, s2 = schedule.sigma(torch.tensor([900, 600])), schedule.sigma(torch.tensor([300, 20]))
    x_t1 = x0 + s1.view(-1, 1, 1, 1) * eps
    x_t2 = euler_sigma_step(x_t1, x0, s1, s2)
    torch.testing.assert_close(x_t2, x0 + s2.view(-1, 1, 1, 1) * eps, atol=1e-5, rtol=1e-5)
    # Scalar sigmas and a step to sigma = 0 (lands on x0).
    torch.testing.assert_close(euler_sigma_step(x_t1[:1], x0[:1], float(s1[0]), 0.0), x0[:1], atol=1e-5, rtol=1e-5)


def test_ddim_step_equals_euler_step_in_sigma_space():
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(3)
    x_t, x0_pred = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t, t_prev = 700, 420
    abar_t, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
    eps_pred = (x_t - abar_t.sqrt() * x0_pred) / (1 - abar_t).sqrt()
    ddim = ddim_step(x_t, x0_pred, eps_pred, t, t_prev, schedule)
    euler = euler_sigma_step(vp_to_sigma_space(x_t, abar_t), x0_pred, schedule.sigma(t), schedule.sigma(t_prev))
    torch.testing.assert_close(vp_to_sigma_space(ddim, abar_prev), euler, atol=1e-4, rtol=1e-5)


def test_ddim_with_exact_x0_follows_the_ode_solution():
    """For one data point, every DDIM step lands on sqrt(abar) x0 + sqrt(1 - abar) eps with eps fixed."""
    schedule = NoiseSchedule()
    g = torch.Generator().manual_seed(4)
    x0_data, x_T = torch.randn(1, 3, 4, 4, generator=g), torch.randn(SHAPE, generator=g)
    teacher = one_point_teacher(x0_data, schedule)
    abar_T = schedule.alpha_bar(981)
    eps = (x_T - abar_T.sqrt() * x0_data) / (1 - abar_T).sqrt()
    out, steps = collect(ddim_sample, teacher, SHAPE, TextCond(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1)), noise=x_T)
    times = ddim_timesteps(50, 1000, "leading", 1).tolist()[1:] + [-1]
    for t_prev, (_, x) in zip(times, steps):
        abar = schedule.alpha_bar_or_final(t_prev)
        torch.testing.assert_close(x, abar.sqrt() * x0_data + (1 - abar).sqrt() * eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, x0_data.expand(SHAPE), atol=1e-3, rtol=0)  # final abar = 1


def gaussian_teacher(mu: float, s: float, schedule: NoiseSchedule) -> PixelTeacher:
    """The exact denoiser of data x0 ~ N(mu, s^2 I): E[x0 | x_t]."""
    schedule = schedule.with_prediction_type("sample")

    def posterior_mean(x_t, t, emb):
        a = schedule.alpha_bar(t).view(-1, 1, 1, 1)
        return mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x_t - a.sqrt() * mu)

    return PixelTeacher(posterior_mean, lambda p: torch.zeros(len(p), 1, 1), schedule, 4)


def test_ddim_inversion_then_sampling_reconstructs():
    """With the exact denoiser of Gaussian data, inversion follows the exact ODE map to first order."""
    schedule = NoiseSchedule(final_alpha_bar=1.0, steps_offset=1)
    mu, s = 0.3, 0.5
    teacher = gaussian_teacher(mu, s, schedule)
    cond = TextCond(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1))
    x0 = mu + s * torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    inversion_errors, reconstruction_errors = [], []
    for num_steps in (10, 50, 200):
        x_T = ddim_invert(teacher, x0, cond, num_steps=num_steps)
        # Exact probability-flow map for Gaussian data: x_t = sqrt(a) mu + sqrt(a s^2 + 1 - a) (x0 - mu) / s.
        a = schedule.alpha_bar(int(ddim_timesteps(num_steps, 1000, "leading", 1)[0]))
        exact_T = a.sqrt() * mu + (a * s**2 + 1 - a).sqrt() * (x0 - mu) / s
        inversion_errors.append(float((x_T - exact_T).abs().max()))
        recon = ddim_sample(teacher, SHAPE, cond, num_steps=num_steps, noise=x_T)
        reconstruction_errors.append(float((recon - x0).abs().max()))
    assert inversion_errors[0] > inversion_errors[1] > inversion_errors[2]
    assert reconstruction_errors[0] > reconstruction_errors[1] > reconstruction_errors[2]
    assert inversion_errors[1] < 0.08 and reconstruction_errors[1] < 0.08
    assert inversion_errors[2] < 0.03 and reconstruction_errors[2] < 0.02


def test_ddim_sample_is_reproducible_from_generator():
    teacher = toy_teacher(NoiseSchedule())
    a = ddim_sample(teacher, SHAPE, toy_cond(), num_steps=5, generator=torch.Generator().manual_seed(7))
    b = ddim_sample(teacher, SHAPE, toy_cond(), num_steps=5, generator=torch.Generator().manual_seed(7))
    c = ddim_sample(teacher, SHAPE, toy_cond(), num_steps=5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
