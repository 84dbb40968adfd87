"""SDS and CDS on a tiny deterministic pixel teacher: gradients, fixed noise, schedules."""

from __future__ import annotations

import math

import pytest
import torch

from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.teacher import PixelTeacher
from distill3d.guidance import CDSConfig, CDSLoss, SDSConfig, SDSLoss
from distill3d.guidance.sds import sample_sds_timesteps

T = 1000


class TinyEpsNet(torch.nn.Module):
    """A fixed conv eps-predictor whose output depends on x_t, t and the prompt embedding."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(0.2 * torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.copy_(0.1 * torch.randn(3, generator=generator))
        self.requires_grad_(False)

    def forward(self, x_t, t, emb):
        scale = 1 + torch.as_tensor(t, dtype=torch.float32).reshape(-1, 1, 1, 1) / T
        return self.conv(x_t) * scale + emb[:, 0, :3].reshape(-1, 3, 1, 1)


def encode_text(prompts: list[str]) -> torch.Tensor:
    return torch.stack([torch.full((1, 4), 0.05 * len(p)) for p in prompts])


def scaled_linear_schedule() -> NoiseSchedule:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, T, dtype=torch.float64) ** 2
    return NoiseSchedule(alphas_cumprod=torch.cumprod(1 - betas, 0).float())


class SpyTeacher(PixelTeacher):
    """Records every denoise call (x_t, t, guidance scale)."""

    def __init__(self):
        super().__init__(TinyEpsNet(), encode_text, scaled_linear_schedule(), native_image_size=8)
        self.calls: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def denoise(self, x_t, t, cond, guidance_scale=1.0):
        self.calls.append((x_t.clone(), torch.as_tensor(t).clone(), guidance_scale))
        return super().denoise(x_t, t, cond, guidance_scale)


@pytest.fixture
def teacher():
    return SpyTeacher()


def images(batch: int, seed: int) -> torch.Tensor:
    return torch.rand(batch, 8, 8, 3, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def used_noise(teacher: SpyTeacher, x: torch.Tensor, call: int) -> torch.Tensor:
    """eps recovered from the first denoise call of a CDS evaluation: x_t1 / sqrt(abar) = x + sigma eps."""
    x_t, t, _ = teacher.calls[call]
    abar = teacher.schedule.alpha_bar(t).reshape(-1, 1, 1, 1)
    sigma = ((1 - abar) / abar).sqrt()
    return (x_t / abar.sqrt() - x) / sigma


@pytest.mark.parametrize("weight_by", ["t2", "t1"])
@pytest.mark.parametrize("skip", ["eps", "x0"])
def test_cds_gradient_matches_eq10(teacher, weight_by, skip):
    config = CDSConfig(weight_by=weight_by, skip_jacobian_of=skip)
    loss_fn = CDSLoss(config, total_steps=10, seed=3)
    step, batch = 3, 2
    cond = teacher.encode_prompt(["a cat"])
    imgs = images(batch, 0)
    loss, stats = loss_fn(imgs, teacher, cond, step)
    (grad_loss,) = torch.autograd.grad(loss, imgs)

    # Eq. 10-11 written out directly in sigma form.
    x = teacher.encode_images(imgs)
    t1_frac, t2_frac = loss_fn.sample_timesteps(step, batch)
    t1, t2 = (t1_frac * T).float(), (t2_frac * T).float()
    a1 = teacher.schedule.alpha_bar(t1).reshape(-1, 1, 1, 1)
    a2 = teacher.schedule.alpha_bar(t2).reshape(-1, 1, 1, 1)
    s1, s2 = ((1 - a1) / a1).sqrt(), ((1 - a2) / a2).sqrt()
    cfg = 50 + (20 - 50) * step / 10
    eps_star = loss_fn.fixed_noise_tensor
    x_t1 = x.detach() + s1 * eps_star
    d1 = teacher.denoise(a1.sqrt() * x_t1, t1, cond, cfg).x0
    x_hat_t2 = x_t1 + (s2 - s1) / s1 * (x_t1 - d1)  # Eq. 11
    d2 = teacher.denoise(a2.sqrt() * x_hat_t2, t2, cond, cfg).x0
    w = 1 - (a2 if weight_by == "t2" else a1)
    if skip == "eps":
        # Poole's skip on the first component's eps: 0.5 w ||eps_hat(x_t1) - sg(eps_hat(x_hat_t2))||^2, d eps/dx = I
        eps1, eps2 = (x_t1 - d1) / s1, (x_hat_t2 - d2) / s2
        first = eps1.detach() + (x - x.detach())
        per_view = (w * (first - eps2.detach()).square()).flatten(1).sum(1)
    else:
        # dD(x_t1)/dx = I: 0.5 (w / sigma_t2) ||D(x_t1) - sg(D(x_hat_t2))||^2
        first = d1.detach() + (x - x.detach())
        per_view = (w / s2 * (first - d2.detach()).square()).flatten(1).sum(1)
    direct = 0.5 * per_view.mean()  # E_pi over the views
    (grad_direct,) = torch.autograd.grad(direct, imgs)

    assert grad_direct.abs().max() > 1e-4  # a non-trivial gradient
    torch.testing.assert_close(grad_loss, grad_direct, rtol=1e-4, atol=1e-6)
    assert stats["cfg"] == pytest.approx(cfg)
    assert stats["t1"] == pytest.approx(float(t1_frac.mean()))


def test_cds_skips_differ_only_in_sign(teacher):
    cond = teacher.encode_prompt(["a cat"])
    grads = []
    for skip in ("eps", "x0"):
        imgs = images(2, 0)
        loss, _ = CDSLoss(CDSConfig(skip_jacobian_of=skip), total_steps=10)(imgs, teacher, cond, 3)
        grads.append(torch.autograd.grad(loss, imgs)[0])
    torch.testing.assert_close(grads[0], -grads[1])


def test_cds_fixed_noise_is_fixed_across_calls_and_steps(teacher):
    loss_fn = CDSLoss(CDSConfig(), total_steps=10)
    cond = teacher.encode_prompt(["a cat"])
    seen = []
    for call, step in enumerate([0, 4, 9]):
        imgs = images(2, seed=step)
        loss_fn(imgs, teacher, cond, step)
        seen.append(used_noise(teacher, teacher.encode_images(imgs).detach(), call=2 * call))
    for eps in seen[1:]:
        torch.testing.assert_close(eps, seen[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen[0], loss_fn.fixed_noise_tensor, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(seen[0][0], seen[0][1])  # one slice per view by default
    # the same seed gives the same eps* in a new run
    other = CDSLoss(CDSConfig(), total_steps=10)
    other(images(2, 0), teacher, cond, 0)
    assert torch.equal(other.fixed_noise_tensor, loss_fn.fixed_noise_tensor)


def test_cds_fresh_noise_ablation_and_shared_noise(teacher):
    cond = teacher.encode_prompt(["a cat"])
    fresh = CDSLoss(CDSConfig(fixed_noise=False), total_steps=10)
    imgs = images(2, 0)
    x = teacher.encode_images(imgs).detach()
    fresh(imgs, teacher, cond, 1)
    fresh(imgs, teacher, cond, 2)
    assert not torch.allclose(used_noise(teacher, x, 0), used_noise(teacher, x, 2), atol=1e-2)
    assert fresh.fixed_noise_tensor is None

    shared = CDSLoss(CDSConfig(share_noise_across_views=True), total_steps=10)
    teacher.calls.clear()
    shared(imgs, teacher, cond, 0)
    eps = used_noise(teacher, x, 0)
    torch.testing.assert_close(eps[0], eps[1], rtol=1e-4, atol=1e-4)
    assert shared.fixed_noise_tensor.shape == (1, 3, 8, 8)


def test_cds_timestep_schedules():
    n = 100
    cds = CDSLoss(CDSConfig(), total_steps=n)
    for step, expected in [(0, 0.7), (n // 2, 0.7 - 0.6 * math.sqrt(0.5)), (n, 0.1)]:
        t1, t2 = cds.sample_timesteps(step, 64)
        torch.testing.assert_close(t2, torch.full_like(t2, expected))
        assert bool(((t1 >= t2 + 0.1 - 1e-12) & (t1 <= t2 + 0.2 + 1e-12)).all())
        assert float(t1.std()) > 0.01  # t1 is random within the interval
    assert torch.equal(cds.sample_timesteps(7, 4)[0], cds.sample_timesteps(7, 4)[0])  # reproducible

    predetermined = CDSLoss(CDSConfig(t_sampling="predetermined"), total_steps=n)
    t1, t2 = predetermined.sample_timesteps(30, 8)
    torch.testing.assert_close(t1, t2 + 0.15)
    assert t2[0] == pytest.approx(0.7 - 0.6 * math.sqrt(0.3))

    random_t = CDSLoss(CDSConfig(t_sampling="random"), total_steps=n)
    t1, t2 = random_t.sample_timesteps(n, 256)  # at the end of the run Eq. 12 would give 0.1
    assert float(t2.min()) >= 0.1 and float(t2.max()) <= 0.7 and float(t2.std()) > 0.1
    assert bool(((t1 - t2 >= 0.1 - 1e-12) & (t1 - t2 <= 0.2 + 1e-12)).all())


@pytest.mark.parametrize("form,offset", [("standard", 0.0), ("code", 1.0)])
def test_cds_cfg_anneals_50_to_20(teacher, form, offset):
    loss_fn = CDSLoss(CDSConfig(cfg_form=form), total_steps=10)
    assert [loss_fn.guidance_scale(s) for s in (0, 5, 10, 20)] == pytest.approx([50, 35, 20, 20])
    cond = teacher.encode_prompt(["a cat"])
    loss_fn(images(1, 0), teacher, cond, 5)
    assert [scale for _, _, scale in teacher.calls] == pytest.approx([35 + offset] * 2)


def test_cds_stats_and_batch_change(teacher):
    loss_fn = CDSLoss(CDSConfig(), total_steps=10)
    cond = teacher.encode_prompt(["a cat"])
    loss, stats = loss_fn(images(2, 0), teacher, cond, 0)
    assert {"loss", "t1", "t2", "cfg", "weight"} <= stats.keys()
    assert stats["t2"] == pytest.approx(0.7) and 0.8 <= stats["t1"] <= 0.9
    assert stats["loss"] == pytest.approx(float(loss.detach())) and loss.ndim == 0
    with pytest.raises(ValueError):
        loss_fn(images(3, 0), teacher, cond, 1)


@pytest.mark.parametrize("weighting", ["one_minus_alpha_bar", "sigma_squared", "uniform"])
def test_sds_gradient_is_weighted_eps_residual(teacher, weighting):
    config = SDSConfig(weighting=weighting)
    batch, step = 2, 11
    cond = teacher.encode_prompt(["a dog"])
    imgs = images(batch, 1)
    eps = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(9))
    loss, stats = SDSLoss(config, total_steps=100, seed=5)(imgs, teacher, cond, step, noise=eps)
    (grad,) = torch.autograd.grad(loss, imgs)

    t = sample_sds_timesteps(config, T, batch, step, total_steps=100, seed=5)
    assert bool(((t >= 20) & (t <= 980)).all())
    x = teacher.encode_images(imgs).detach()
    abar = teacher.schedule.alpha_bar(t).reshape(-1, 1, 1, 1)
    x_t = abar.sqrt() * x + (1 - abar).sqrt() * eps
    eps_hat = teacher.denoise(x_t, t, cond, 100.0).eps
    w = {"one_minus_alpha_bar": 1 - abar, "sigma_squared": (1 - abar) / abar, "uniform": torch.ones_like(abar)}[weighting]
    expected_x = w * (eps_hat - eps) / batch  # d loss / d x
    expected = 2 * expected_x.permute(0, 2, 3, 1)  # x = 2 images - 1
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)
    assert stats["cfg"] == 100.0 and {"loss", "t"} <= stats.keys()


def test_sds_timestep_range_and_annealing():
    config = SDSConfig(t_max_end=0.5)
    early = sample_sds_timesteps(config, T, 4096, 0, total_steps=100)
    late = sample_sds_timesteps(config, T, 4096, 100, total_steps=100)
    assert int(early.min()) >= 20 and int(early.max()) <= 980 and int(early.max()) > 900
    assert int(late.min()) >= 20 and int(late.max()) <= 500


def test_cds_gap_readings_and_t1_clamp():
    """paper: t1 - t2 in [delta, Delta]; code: in [delta, delta + Delta) (randint(end_gap, end_gap + perturb))."""
    n = 100
    code = CDSLoss(CDSConfig(gap_form="code"), total_steps=n)
    t1, t2 = code.sample_timesteps(n, 512)  # t2 = 0.1 at the end
    gap = t1 - t2
    assert float(gap.min()) >= 0.1 - 1e-12 and float(gap.max()) <= 0.3 + 1e-12 and float(gap.max()) > 0.25
    refine = CDSLoss(CDSConfig(gap_min=0.1, gap_max=0.1, gap_form="code"), total_steps=n)
    t1, t2 = refine.sample_timesteps(0, 256)
    assert float((t1 - t2).std()) > 0.01  # the refinement's delta = Delta = 0.1 is a spread of gaps in this reading
    t1, t2 = CDSLoss(CDSConfig(gap_min=0.1, gap_max=0.1), total_steps=n).sample_timesteps(0, 64)
    torch.testing.assert_close(t1 - t2, torch.full_like(t1, 0.1))  # ... and a single gap in the paper's
    clamped = CDSLoss(CDSConfig(t_max=0.9, gap_form="code", t1_max=0.95), total_steps=n)
    t1, _ = clamped.sample_timesteps(0, 256)
    assert float(t1.max()) == pytest.approx(0.95)


def test_cds_gradient_clamp_grows_linearly(teacher):
    cond = teacher.encode_prompt(["a cat"] * 2)
    plain = CDSLoss(CDSConfig(weighting="uniform", cfg_start=100.0, cfg_end=100.0), total_steps=10)
    clamped = CDSLoss(CDSConfig(weighting="uniform", cfg_start=100.0, cfg_end=100.0, grad_clip_start=0.01,
                                grad_clip_end=0.03), total_steps=10)
    assert [clamped.grad_clip(s) for s in (0, 5, 10)] == pytest.approx([0.01, 0.02, 0.03])
    assert plain.grad_clip(5) is None
    grads = []
    for loss_fn in (plain, clamped):
        x = images(2, 3)
        loss_fn(x, teacher, cond, 5)[0].backward()
        grads.append(x.grad)
    # images -> [-1, 1] doubles the gradient; the mean over B = 2 views halves it
    assert float(grads[1].abs().max()) <= 0.02 + 1e-6 < float(grads[0].abs().max())
    inside = grads[0].abs() < 0.02 - 1e-4
    torch.testing.assert_close(grads[1][inside], grads[0][inside])


def test_cds_config_rejects_half_a_clamp():
    from distill3d.errors import UserError

    with pytest.raises(UserError):
        CDSConfig(grad_clip_start=2.0)
    with pytest.raises(UserError):
        CDSConfig(gap_min=0.3, gap_max=0.2)


def test_renders_reach_the_teacher_at_its_own_resolution(teacher):
    """Renders smaller than the teacher's native size are upsampled (bilinear) before encoding."""
    from distill3d.diffusion.teacher import at_teacher_resolution

    small = torch.rand(2, 4, 4, 3)
    big = at_teacher_resolution(small, teacher)
    assert big.shape == (2, 8, 8, 3) and at_teacher_resolution(big, teacher) is big
    torch.testing.assert_close(big.mean(), small.mean(), atol=0.02, rtol=0)
    x = small.clone().requires_grad_(True)
    SDSLoss(SDSConfig(), total_steps=10)(x, teacher, teacher.encode_prompt(["a cat"] * 2), 0)[0].backward()
    assert x.grad is not None and x.grad.shape == small.shape and float(x.grad.abs().sum()) > 0
