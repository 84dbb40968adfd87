"""Consistent3D text-to-3D: a tiny CPU run end to end, reproducibility, resume and the camera sampler."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tiny_configs import tiny_text_to_3d as tiny

from distill3d.camera_sampling import OrbitCameraConfig, sample_quadrant_cameras
from distill3d.cli import main
from distill3d.errors import UserError
from distill3d.guidance import CDSLoss
from distill3d.methods.consistent3d import Consistent3DConfig, text_to_3d, view_prompts
from distill3d.world import VIEW_BUCKETS, parse_prompt, view_prompt

PROMPT = "a red striped torus"


def stored(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "checkpoint.safetensors"))


@pytest.mark.parametrize("representation, asset", [("nerf", "mesh.glb"), ("gaussians", "gaussians.ply")])
def test_tiny_run_writes_outputs_and_reproduces(tmp_path, representation, asset):
    config = tiny(representation)
    summary = text_to_3d(PROMPT, config, tmp_path / "a", progress=False)
    for name in ("config.json", "checkpoint.safetensors", "summary.json", asset, "turntable.gif"):
        assert (tmp_path / "a" / name).exists(), name
    assert json.loads((tmp_path / "a" / "config.json").read_text())["scene"]["representation"] == representation
    assert summary["steps"] == 4 and torch.isfinite(torch.tensor(summary["final_loss"]))
    first = stored(tmp_path / "a")
    assert first["extra.cds_fixed_noise"].shape == (4, 3, 64, 64)  # renders at 16 are upsampled to the teacher's 64
    text_to_3d(PROMPT, config, tmp_path / "b", progress=False)
    second = stored(tmp_path / "b")
    assert first.keys() == second.keys()
    for key in first:
        if key != "rng.torch":
            assert torch.equal(first[key], second[key]), key
    fresh = Consistent3DConfig(**{**config.__dict__, "seed": 1})
    text_to_3d(PROMPT, fresh, tmp_path / "c", progress=False)
    assert not torch.equal(stored(tmp_path / "c")["extra.cds_fixed_noise"], first["extra.cds_fixed_noise"])


def test_resume_continues_and_restores_fixed_noise(tmp_path, monkeypatch):
    config = tiny("gaussians")
    text_to_3d(PROMPT, config, tmp_path / "straight", progress=False)
    straight = stored(tmp_path / "straight")

    real_call = CDSLoss.__call__

    def crash_at_step_2(self, images, teacher, cond, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_call(self, images, teacher, cond, step)

    monkeypatch.setattr(CDSLoss, "__call__", crash_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        text_to_3d(PROMPT, config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(CDSLoss, "__call__", real_call)
    with safe_open(str(tmp_path / "cut" / "checkpoint.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["distill3d"])["step"] == 2
    with pytest.raises(UserError):  # an existing run is not overwritten without --resume
        text_to_3d(PROMPT, config, tmp_path / "cut", progress=False)
    text_to_3d(PROMPT, config, tmp_path / "cut", resume=True, progress=False)
    resumed = stored(tmp_path / "cut")
    for key in straight:
        if key != "rng.torch":
            assert torch.allclose(straight[key], resumed[key], atol=1e-6), key

    # the noise really comes from the checkpoint: a planted eps* survives the resume
    path = tmp_path / "straight" / "checkpoint.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    planted = torch.full_like(straight["extra.cds_fixed_noise"], 0.25)
    save_file({**straight, "extra.cds_fixed_noise": planted}, str(path), metadata=meta)
    longer = Consistent3DConfig(**{**config.__dict__, "steps": 5})
    text_to_3d(PROMPT, longer, tmp_path / "straight", resume=True, progress=False)
    assert torch.equal(stored(tmp_path / "straight")["extra.cds_fixed_noise"], planted)


def test_unknown_word_fails_before_any_folder(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(UserError, match="blorp"):
        text_to_3d("a red blorp torus", tiny(), out, progress=False)
    assert not out.exists()
    with pytest.raises(UserError, match="view"):
        text_to_3d(PROMPT + ", front view", tiny(), out, progress=False)
    assert main(["text-to-3d", "a red blorp torus", "--out", str(out)]) == 2
    assert "blorp" in capsys.readouterr().err and not out.exists()


def test_length_and_cameras_default_by_representation():
    from distill3d.methods.consistent3d import DEFAULT_CAMERAS_PER_STEP, DEFAULT_STEPS
    from distill3d.scene.factory import SceneConfig

    for representation in ("nerf", "gaussians"):
        config = Consistent3DConfig(scene=SceneConfig(representation=representation))
        assert config.steps == DEFAULT_STEPS[representation]
        assert config.cameras.cameras_per_step == DEFAULT_CAMERAS_PER_STEP[representation]
    assert DEFAULT_CAMERAS_PER_STEP["nerf"] != DEFAULT_CAMERAS_PER_STEP["gaussians"]
    given = Consistent3DConfig(steps=7, cameras=OrbitCameraConfig(cameras_per_step=3))
    assert (given.steps, given.cameras.cameras_per_step) == (7, 3)
    with pytest.raises(ValueError, match="unset"):
        sample_quadrant_cameras(OrbitCameraConfig(cameras_per_step=None), torch.Generator())


def test_quadrant_sampler_one_camera_per_quarter_with_matching_prompt():
    config = OrbitCameraConfig(cameras_per_step=12)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        cams, params = sample_quadrant_cameras(config, generator)
        az = params["azimuth"]
        assert len(cams) == 12 and cams.width == 64
        for i in range(12):
            centre = 90.0 * (i % 4)
            offset = (az[i] - centre + 180.0) % 360.0 - 180.0
            assert -45.0 <= offset < 45.0
        prompts = [view_prompts(PROMPT)[b] for b in params["bucket"].tolist()]
        assert prompts == view_prompt(parse_prompt(PROMPT)[0], az, params["elevation"])
        assert [p.rsplit(", ", 1)[1] for p in prompts[:4]] == ["front view", "side view", "back view", "side view"]
        config = OrbitCameraConfig()
        assert ((params["distance"] >= config.distance_min) & (params["distance"] <= config.distance_max)).all()
        assert ((params["fovy"] >= 30) & (params["fovy"] <= 45)).all()
        assert ((params["elevation"] >= -10) & (params["elevation"] <= 45)).all()
        centres = cams.centers
        assert torch.allclose(centres.norm(dim=-1), params["distance"], atol=1e-4)
    assert VIEW_BUCKETS.index("front") in params["bucket"].tolist()
