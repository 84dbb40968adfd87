"""DD3G's student PEPD (Sec. III-B): shapes, activations, gradients, NC, "PD only", parameter budget."""

import math

import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.configs import config_from_dict, config_to_dict
from distill3d.methods.dd3g.gaussian_heads import GaussianHeadsConfig, HeadTap
from distill3d.methods.dd3g.image_encoder import ImageEncoderConfig
from distill3d.methods.dd3g.noise_cameras import noise_with_rays
from distill3d.methods.dd3g.pattern_extraction import PatternExtractionConfig
from distill3d.methods.dd3g.progressive_decoding import ProgressiveDecodingConfig
from distill3d.methods.dd3g.student import PARAMETER_BUDGET, PEPDConfig, PEPDStudent


def tiny_config(**fields) -> PEPDConfig:
    """16 x 16 images and noise, 2 views, 4 x 4 tokens per view, D = 16, 6 blocks, 4 Gaussians per token."""
    values = dict(image_size=16, num_views=2, noise_channels=3, noise_size=16, token_dim=16,
                  image_encoder=ImageEncoderConfig(stride=4, hidden=8),
                  pattern=PatternExtractionConfig(channels=(8, 16, 16), layers=1, head_dim=8, norm_groups=4),
                  decoder=ProgressiveDecodingConfig(num_blocks=6, head_dim=8,
                                                    heads=GaussianHeadsConfig(gaussians_per_token=4)))
    values.update(fields)
    return PEPDConfig(**values)


def inputs(config: PEPDConfig, B: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    V, C, s = config.num_views, config.noise_channels, config.noise_size
    images = torch.rand(B, config.image_size, config.image_size, 3, generator=g)
    noise = torch.randn(B, V, C, s, s, generator=g)
    azimuth = torch.arange(B * V, dtype=torch.float32) * (360.0 / V) + 10.0
    cameras = orbit_cameras(torch.full((B * V,), 15.0), azimuth, 2.7, 40.0, s, s)
    return images, noise, cameras


def test_output_shapes_and_ranges():
    torch.manual_seed(0)
    config = tiny_config()
    out = PEPDStudent(config)(*inputs(config))
    B, N = 2, config.num_gaussians
    assert out.means.shape == (B, N, 3) and out.quats.shape == (B, N, 4) and out.scales.shape == (B, N, 3)
    assert out.opacities.shape == (B, N) and out.colours.shape == (B, N, 3)
    lo, hi = config.decoder.heads.log_scale_range
    assert out.scales.min() >= math.exp(lo) and out.scales.max() <= math.exp(hi)
    assert out.opacities.min() > 0 and out.opacities.max() < 1
    assert out.colours.min() >= 0 and out.colours.max() <= 1
    assert torch.allclose(out.quats.norm(dim=-1), torch.ones(B, N), atol=1e-5)
    assert out.means.abs().max() <= config.decoder.heads.mean_bound
    assert all(torch.isfinite(t).all() for t in vars(out).values())


def test_paper_scale_range_is_an_option():
    config = tiny_config(decoder=ProgressiveDecodingConfig(num_blocks=6, head_dim=8, heads=GaussianHeadsConfig(
        gaussians_per_token=2, log_scale_range=(-9.0, -3.0))))
    scales = PEPDStudent(config)(*inputs(config, B=1)).scales
    assert scales.min() >= math.exp(-9.0) and scales.max() <= math.exp(-3.0)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    config = tiny_config()
    student = PEPDStudent(config)
    out = student(*inputs(config))
    sum(t.sum() for t in vars(out).values()).backward()
    missing = [name for name, p in student.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_number_of_gaussians_is_tokens_times_per_token():
    config = tiny_config()
    P = config.num_views * (config.noise_size // 4) ** 2
    assert config.num_pattern_tokens == P == 32
    out = PEPDStudent(config)(*inputs(config, B=1))
    assert out.means.shape[1] == P * 4 == config.num_gaussians
    decoder = ProgressiveDecodingConfig(num_blocks=6, head_dim=8, gaussians_from_image_tokens=True,
                                        heads=GaussianHeadsConfig(gaussians_per_token=4))
    config = tiny_config(decoder=decoder)
    out = PEPDStudent(config)(*inputs(config, B=1))
    assert out.means.shape[1] == (P + config.num_image_tokens) * 4 == config.num_gaussians


def test_noise_with_rays_holds_the_noise_then_the_cameras_pluecker_rays():
    config = tiny_config()
    _, noise, cameras = inputs(config)
    B, V, C, h, w = noise.shape
    nc = noise_with_rays(noise, cameras)
    assert nc.shape == (B, V, C + 6, h, w)
    assert torch.equal(nc[:, :, :C], noise)
    rays = cameras.plucker().reshape(B, V, h, w, 6).permute(0, 1, 4, 2, 3)
    assert torch.allclose(nc[:, :, C:], rays)
    # cameras of another image size: their rays at the noise's resolution
    big = cameras.resized(2 * w, 2 * h)
    assert torch.allclose(noise_with_rays(noise, big)[:, :, C:], rays, atol=1e-6)


def test_each_views_gaussians_see_every_views_noise():
    torch.manual_seed(0)
    config = tiny_config()
    student = PEPDStudent(config).eval()
    images, noise, cameras = inputs(config, B=1)
    changed = noise.clone()
    changed[:, 1] = torch.randn_like(changed[:, 1])
    per_view = config.num_gaussians // config.num_views
    with torch.no_grad():
        a = student(images, noise, cameras).means[:, :per_view]
        b = student(images, changed, cameras).means[:, :per_view]
    assert not torch.allclose(a, b)  # view 0's Gaussians depend on view 1's noise


def test_pd_only_builds_and_runs_without_noise():
    torch.manual_seed(0)
    config = tiny_config(pattern_extraction_enabled=False)
    student = PEPDStudent(config)
    assert student.pattern_extraction is None
    images, noise, cameras = inputs(config)
    out = student(images)
    assert out.means.shape == (2, config.num_gaussians, 3)
    assert torch.equal(student(images, noise, cameras).means, out.means)  # noise and cameras are ignored
    sum(t.sum() for t in vars(out).values()).backward()
    assert student.queries.grad is not None and student.queries.grad.abs().sum() > 0


def test_default_config_is_under_the_parameter_budget():
    config = PEPDConfig()
    assert (config.image_size, config.num_views, config.noise_channels, config.noise_size) == (64, 4, 3, 64)
    student = PEPDStudent(config)
    count = sum(p.numel() for p in student.parameters())
    assert count < PARAMETER_BUDGET
    assert count * 4 < 16 * 2 ** 20  # float32 safetensors well under 16 MiB
    assert config.token_grid == 8 and config.num_gaussians == 4 * 64 * 32


def test_config_round_trips_and_checks_its_taps():
    config = tiny_config()
    assert config_from_dict(PEPDConfig, config_to_dict(config)) == config
    bad = GaussianHeadsConfig(means=HeadTap((0, 2), (0.5, 0.5)))
    with pytest.raises(ValueError, match="adjacent"):
        PEPDStudent(tiny_config(decoder=ProgressiveDecodingConfig(num_blocks=6, head_dim=8, heads=bad)))
    with pytest.raises(ValueError, match="adjacent"):
        PEPDStudent(tiny_config(decoder=ProgressiveDecodingConfig(num_blocks=4, head_dim=8)))
