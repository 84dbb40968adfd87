import json
from dataclasses import dataclass

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh

from distill3d.errors import UserError
from distill3d.export.mesh import write_mesh
from distill3d.export.video import write_video
from distill3d.metrics import mask_iou, psnr, ssim
from distill3d.training.run_dir import RunDir


@dataclass
class _Config:
    lr: float = 0.01
    steps: int = 10


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_checkpoint_round_trip_restores_model_optimizer_and_rng(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare(_Config(), method="test", resume=False)
    model, opt = _model_and_opt()
    torch.manual_seed(123)
    run.save_checkpoint(7, {"model": model}, {"opt": opt}, extra={"best": 1.5},
                        extra_tensors={"noise": torch.arange(3.0)})
    expected_next = torch.rand(3)
    assert not list((tmp_path / "run").glob("*.tmp"))

    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    step, extra, tensors = run.load_checkpoint({"model": model2}, {"opt": opt2})
    assert step == 7 and extra == {"best": 1.5} and torch.equal(tensors["noise"], torch.arange(3.0))
    assert torch.equal(model2.weight, model.weight)
    assert opt2.param_groups[0]["lr"] == 0.01
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(torch.as_tensor(s1["step"]),
                                                                       torch.as_tensor(s2["step"]))
    assert torch.equal(torch.rand(3), expected_next)


def test_existing_run_needs_resume_and_same_config(tmp_path):
    run = RunDir(tmp_path)
    run.prepare(_Config(), method="test", resume=False)
    model, opt = _model_and_opt()
    run.save_checkpoint(1, {"model": model})
    with pytest.raises(UserError, match="--resume"):
        run.prepare(_Config(), method="test", resume=False)
    with pytest.raises(UserError, match="lr"):
        run.prepare(_Config(lr=0.5), method="test", resume=True)
    run.prepare(_Config(steps=20), method="test", resume=True)  # extending a run is allowed
    assert json.loads(run.config_path.read_text())["steps"] == 20


def test_metrics_known_values():
    a = torch.zeros(2, 8, 8, 3)
    b = torch.full((2, 8, 8, 3), 0.1)
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)
    x = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(x, 1 - x).item() < 0.2
    m1 = torch.zeros(1, 4, 4, 1)
    m1[:, :2] = 1
    m2 = torch.zeros(1, 4, 4, 1)
    m2[:, 1:3] = 1
    assert mask_iou(m1, m2).item() == pytest.approx(4 / 12)


def test_mesh_and_video_exports(tmp_path):
    mesh = trimesh.creation.box()
    mesh.visual.vertex_colors = np.tile(np.array([[255, 0, 0, 255]], dtype=np.uint8), (len(mesh.vertices), 1))
    for fmt in ("glb", "obj"):
        path = write_mesh(tmp_path / f"m.{fmt}", mesh)
        back = trimesh.load(path, force="mesh")
        assert len(back.faces) == 12
        colours = np.asarray(back.visual.vertex_colors)
        assert (colours[:, 0] == 255).all() and (colours[:, 1] == 0).all()
    frames = np.zeros((6, 31, 20, 3), dtype=np.uint8)
    frames[:, :, :, 1] = 200
    frames[:, :4, :4, 0] = np.arange(6, dtype=np.uint8)[:, None, None] * 40  # distinct frames
    for fmt in ("gif", "mp4"):
        back = iio.imread(write_video(tmp_path / f"t.{fmt}", frames))
        assert back.shape[0] == 6 and abs(int(back[..., 1].mean()) - 200) < 6
    with pytest.raises(UserError):
        write_video(tmp_path / "t.avi", frames)
