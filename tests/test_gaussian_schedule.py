"""The Gaussians' optimisation schedule of text-to-3D: densification by gradient quantile with a cap,
densifying a ``GaussianParameters`` module in place, the centres' learning-rate decay, random backgrounds."""

import math

import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.guidance.regularisers import FieldRegularisers
from distill3d.render.shading import ShadingConfig, sample_backgrounds
from distill3d.render.splat import render_gaussians
from distill3d.scene.factory import (GaussianInitConfig, SceneConfig, SceneOptimConfig, build_scene, scene_optimizer,
                                     set_scene_learning_rates)
from distill3d.scene.gaussians import Densifier, DensifyConfig, GaussianLearningRates


def scene_with_grads(count: int = 200, seed: int = 0):
    """A Gaussians scene, its Adam after one step, and a densifier that has seen that step's gradients."""
    scene = build_scene(SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=count, radius=0.5)),
                        "cpu", seed)
    optimizer = scene_optimizer(scene, SceneOptimConfig())
    cameras = orbit_cameras(torch.tensor([10.0, 30.0]), torch.tensor([0.0, 90.0]), 2.6, 40.0, 24, 24)
    info: dict = {}
    out = render_gaussians(scene.module.gaussians, cameras, info=info)
    (out.rgb - torch.tensor([1.0, 0.0, 0.0])).square().mean().backward()
    optimizer.step()
    densifier = Densifier(DensifyConfig(every=1, start_step=0, grad_quantile=0.9, opacity_reset_every=10**6),
                          generator=torch.Generator().manual_seed(0))
    densifier.accumulate(info)
    return scene, optimizer, densifier


def test_densify_by_quantile_grows_the_top_share_and_keeps_adam_in_step():
    scene, optimizer, densifier = scene_with_grads()
    seen = int((densifier.mean_grads(200, "cpu") > 0).sum())
    done = scene.module.densify(densifier, 1, optimizer)
    grown = done["cloned"] + done["split"]
    assert 0 < grown <= math.ceil(0.1 * seen) + 1
    n = len(scene.module.means)
    assert n == 200 + done["cloned"] + done["split"] - done["pruned"]  # a split replaces one by two
    params = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, p in scene.module.named_parameters():
        assert id(p) in params, name  # the optimiser holds the module's new tensors
        assert p.shape[0] == n
        if p.numel():  # sh_rest is empty at SH degree 0 and gets no Adam state
            assert optimizer.state[p]["exp_avg"].shape == p.shape, name
    loss = render_gaussians(scene.module.gaussians, orbit_cameras(10.0, 0.0, 2.6, 40.0, 16, 16)).rgb.mean()
    loss.backward()
    optimizer.step()  # no shape mismatch after the surgery


def test_densify_stops_growing_at_the_cap():
    scene, optimizer, densifier = scene_with_grads()
    densifier.config.max_count = 150  # already above it: prune only
    done = scene.module.densify(densifier, 1, optimizer)
    assert done["cloned"] == done["split"] == 0
    assert len(scene.module.means) == 200 - done["pruned"]


def test_means_learning_rate_decays_log_linearly():
    config = SceneOptimConfig(gaussians=GaussianLearningRates(means=1e-3), means_lr_end=2e-5)
    assert config.means_lr(0, 100) == pytest.approx(1e-3)
    assert config.means_lr(50, 100) == pytest.approx(math.sqrt(1e-3 * 2e-5))
    assert config.means_lr(100, 100) == pytest.approx(2e-5) == config.means_lr(500, 100)
    scene = build_scene(SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=10)), "cpu", 0)
    optimizer = scene_optimizer(scene, config)
    set_scene_learning_rates(optimizer, config, 100, 100)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["means"] == pytest.approx(2e-5) and rates["sh_dc"] == pytest.approx(GaussianLearningRates().sh_dc)
    assert SceneOptimConfig().means_lr(70, 100) == pytest.approx(GaussianLearningRates().means)  # constant


def test_random_backgrounds():
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(sample_backgrounds(ShadingConfig(), 5, generator), torch.ones(5, 3))
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())  # nothing drawn
    grey = sample_backgrounds(ShadingConfig(random_background_share=0.5), 4000, generator)
    random = (grey != 1).any(-1)
    assert 0.45 < float(random.float().mean()) < 0.55
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_orientation_ramp_is_a_share_of_the_run():
    ramp = FieldRegularisers(orient_weight_start=10.0, orient_weight_end=1000.0, orient_ramp_share=2 / 3)
    assert ramp.orientation_weight(0, 3000) == pytest.approx(10.0)
    assert ramp.orientation_weight(1000, 3000) == pytest.approx(505.0)
    assert ramp.orientation_weight(2000, 3000) == ramp.orientation_weight(2999, 3000) == pytest.approx(1000.0)


def test_grey_start():
    grey = build_scene(SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=50, colour="grey")),
                       "cpu", 0)
    torch.testing.assert_close(grey.module.gaussians.rgb, torch.full((50, 3), 0.5))
    random = build_scene(SceneConfig(representation="gaussians", gaussians=GaussianInitConfig(count=50)), "cpu", 0)
    assert float(random.module.gaussians.rgb.detach().std()) > 0.2
    torch.testing.assert_close(grey.module.means, random.module.means)  # only the colour differs
