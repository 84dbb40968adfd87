"""HoloFusion's distillation (Sec. 3.3.2) on 8^3 grids, 16 px views and a few steps."""

import json

import pytest
import torch
from safetensors.torch import load_file

from distill3d.cameras import orbit_cameras
from distill3d.errors import UserError
from distill3d.export.scene import ExportConfig
from distill3d.guidance.patch_remix import patch_remix_loss
from distill3d.methods.holofusion.distill import (
    DistillConfig,
    distill_cameras,
    distill_sample,
    holodiffusion_star_views,
    render_views,
)
from distill3d.methods.holofusion.super_resolution import (
    SuperResolutionConfig,
    SuperResolutionNet,
    sr_schedule,
    super_resolve,
)
from distill3d.render.volume import render_volume
from distill3d.scene.voxel_grid import VoxelGridConfig, VoxelRadianceField
from distill3d.training.run_dir import RunDir
from distill3d.training.run_scene import load_run_scene
from distill3d.training.scene_loop import LoopConfig

GRID = VoxelGridConfig(resolution=8, feature_dim=4, hidden_dim=16, num_hidden_layers=1, init_std=0.5)
SR = SuperResolutionConfig(block_out_channels=(8, 16), layers_per_block=1, mid_attention=False, norm_num_groups=4,
                           sampling_steps=2)


def tiny(**fields) -> DistillConfig:
    """4 cameras at 8 -> 16 px, 2 views a step, 16 samples a ray, no turntable."""
    return DistillConfig(**{
        "num_cameras": 4, "low_resolution": 8, "views_per_step": 2, "num_samples": 16, "steps": 3, "bank_size": 2,
        "patch_size": 8, "device": "cpu", "loop": LoopConfig(checkpoint_every=2),
        "export": ExportConfig(turntable_frames=0, mesh_resolution=8, mesh_threshold=1.0), **fields})


def coarse_field(seed: int = 0, tint: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> VoxelRadianceField:
    """A ball of density (feature 0 peaks at the centre; the decoder reads density from it alone) whose
    colour comes from the other random features, shifted by ``tint`` before the sigmoid."""
    field = VoxelRadianceField(GRID, seed=seed)
    with torch.no_grad():
        x = torch.linspace(-1, 1, GRID.resolution)
        r2 = x[:, None, None] ** 2 + x[None, :, None] ** 2 + x[None, None, :] ** 2
        field.features[0] = 3 * torch.exp(-r2 / 0.3) - 1
        first, last = field.decoder.mlp[0], field.decoder.mlp[-1]
        first.weight[0], first.bias[0] = torch.tensor([1.0, 0.0, 0.0, 0.0]), 0.0
        last.weight[0], last.bias[0] = 0.0, 0.0
        last.weight[0, 0] = 8.0                                   # density = softplus(8 relu(f0) - 1)
        last.bias[1:4] += torch.tensor(tint)
    return field


def sr_model(seed: int = 0) -> tuple[SuperResolutionNet, object]:
    torch.manual_seed(seed)
    return SuperResolutionNet(SR), sr_schedule(SR)


def summary(out) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_cameras_sit_on_the_equator_at_uniform_azimuths():
    cams = distill_cameras(tiny(num_cameras=8), 16)
    centres = cams.centers
    assert torch.allclose(centres[:, 2], torch.zeros(8), atol=1e-5)              # elevation 0
    azimuth = torch.rad2deg(torch.atan2(centres[:, 1], centres[:, 0])) % 360
    assert torch.allclose(azimuth, torch.arange(8) * 45.0, atol=1e-3)
    assert cams.width == cams.height == 16


@pytest.mark.parametrize("fine_resolution,tolerance", [(None, 1e-5), (16, 0.06)])
def test_fine_grid_starts_as_the_upsampled_coarse_grid(tmp_path, fine_resolution, tolerance):
    coarse = coarse_field()
    before = coarse.features.detach().clone()
    bank = torch.rand(4, 2, 16, 16, 3)
    # lr 1e-12: Adam moves every parameter by ~1e-12, so the result is the starting point
    fine = distill_sample(coarse, None, None, tiny(lr=1e-12, fine_resolution=fine_resolution), tmp_path / "run",
                          bank=bank, progress=False)
    assert fine.features.shape == (4, fine_resolution or 15, fine_resolution or 15, fine_resolution or 15)
    assert fine.decoder is not coarse.decoder and torch.equal(coarse.features, before)
    cams = orbit_cameras(20.0, [0.0, 130.0], 2.7, 40.0, 16, 16)
    a = render_volume(coarse, cams, num_samples=24, stratified=False, compute_normals=False).rgb
    b = render_volume(fine, cams, num_samples=24, stratified=False, compute_normals=False).rgb
    assert (a - 1).abs().max() > 0.1  # the views do show the object
    assert (a - b).abs().max() < tolerance
    # 2 S - 1 nests the cells: the upsampled grid is the coarse interpolant at the fine points, exactly
    if fine_resolution is None:
        points = torch.rand(500, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
        assert torch.allclose(coarse.query(points)[0], fine.query(points)[0], atol=1e-5)


def test_patch_remix_toward_a_known_target_lowers_the_loss(tmp_path):
    config = tiny(steps=40, lr=0.05, bank_size=3, loss="patch_remix")
    cams = distill_cameras(config, 16)
    target = render_views(coarse_field(seed=5, tint=(2.0, 0.0, -2.0)), cams, num_samples=16, background=1.0)
    # each sample is right on one half only (top / bottom patches), the third nowhere: only a remix of
    # the first two reaches the target
    top, bottom = target.clone(), target.clone()
    top[:, 8:], bottom[:, :8] = 1 - target[:, 8:], 1 - target[:, :8]
    bank = torch.stack([top, bottom, 1 - target], dim=1)
    start = render_views(coarse_field(), cams, num_samples=16, background=1.0)
    fine = distill_sample(coarse_field(), None, None, config, tmp_path / "run", bank=bank, progress=False)
    result = summary(tmp_path / "run")
    end = render_views(fine, cams, num_samples=16, background=1.0)
    assert result["bank_loss_start"] == pytest.approx(patch_remix_loss(start, bank, 8)[0].item(), rel=1e-4)
    assert result["bank_loss_end"] < 0.3 * result["bank_loss_start"], result
    assert ((end - target) ** 2).mean() < 0.3 * ((start - target) ** 2).mean()
    shares = patch_remix_loss(end, bank, 8)[1]
    assert 0.4 <= shares["share_0"] <= 0.6 and 0.4 <= shares["share_1"] <= 0.6  # top from 0, bottom from 1


@pytest.mark.parametrize("loss,k", [("patch_remix", 2), ("mse", 1), ("sds", 0)])
def test_each_loss_runs(tmp_path, loss, k):
    net, schedule = sr_model()
    fine = distill_sample(coarse_field(), net, schedule, tiny(loss=loss), tmp_path / loss, progress=False)
    result = summary(tmp_path / loss)
    assert result["steps"] == 3 and result["samples_per_camera"] == k
    assert result["resolution"] == 16 and torch.isfinite(torch.tensor(result["final_loss"]))
    assert (result["bank_loss_end"] is None) == (loss == "sds")
    assert all(torch.isfinite(p).all() for p in fine.parameters())
    # the run folder reads back like any voxel run (``distill3d export RUN``)
    scene = load_run_scene(RunDir(tmp_path / loss))
    assert torch.equal(scene.module.features.detach(), fine.features.detach())


def test_the_bank_is_d_beta_applied_to_the_coarse_renders(tmp_path):
    net, schedule = sr_model(1)
    coarse = coarse_field()
    config = tiny(steps=1, lr=1e-12)
    distill_sample(coarse, net, schedule, config, tmp_path / "run", progress=False)
    bank = load_file(str(tmp_path / "run" / "checkpoint.safetensors"))["extra.bank"]
    assert bank.shape == (4, 2, 16, 16, 3)
    low = render_views(coarse, distill_cameras(config, 16).resized(8, 8), num_samples=16, background=1.0)
    expected = super_resolve(net, schedule, low.repeat_interleave(2, 0), 2, torch.Generator().manual_seed(2))
    assert torch.allclose(bank, expected.reshape(4, 2, 16, 16, 3), atol=1e-5)
    assert (bank[:, 0] - bank[:, 1]).abs().max() > 1e-3  # K different samples per camera


def test_resume_continues_exactly(tmp_path):
    net, schedule = sr_model()
    straight = distill_sample(coarse_field(), net, schedule, tiny(steps=4), tmp_path / "a", progress=False)
    distill_sample(coarse_field(), net, schedule, tiny(steps=2), tmp_path / "b", progress=False)
    resumed = distill_sample(coarse_field(), net, schedule, tiny(steps=4), tmp_path / "b", resume=True,
                             progress=False)
    assert torch.allclose(straight.features, resumed.features, atol=1e-6)
    assert summary(tmp_path / "b")["steps"] == 4
    with pytest.raises(UserError, match="coarse"):  # another sample cannot continue this run
        distill_sample(coarse_field(seed=9), net, schedule, tiny(steps=6), tmp_path / "b", resume=True,
                       progress=False)


def test_holodiffusion_star_is_per_view_super_resolution():
    net, schedule = sr_model()
    coarse = coarse_field()
    cams = orbit_cameras(10.0, [0.0, 90.0, 200.0], 2.7, 40.0, 16, 16)
    views = holodiffusion_star_views(coarse, net, schedule, cams, num_samples=16, num_steps=2,
                                     generator=torch.Generator().manual_seed(0))
    low = render_views(coarse, cams.resized(8, 8), num_samples=16, background=1.0)
    expected = super_resolve(net, schedule, low, 2, torch.Generator().manual_seed(0))
    assert views.shape == (3, 16, 16, 3) and torch.allclose(views, expected, atol=1e-6)
    with pytest.raises(UserError):
        holodiffusion_star_views(coarse, net, schedule, orbit_cameras(0.0, 0.0, 2.7, 40.0, 15, 15))


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        tiny(loss="l1")
    with pytest.raises(UserError):
        tiny(steps=0)
    with pytest.raises(UserError, match="bank"):
        distill_sample(coarse_field(), None, None, tiny(), tmp_path / "x", bank=torch.rand(4, 3, 16, 16, 3))
    with pytest.raises(UserError):
        distill_sample(coarse_field(), None, None, tiny(loss="sds"), tmp_path / "y", bank=torch.rand(4, 2, 16, 16, 3))
