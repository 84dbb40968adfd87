"""DD3G's student training on the CPU: a tiny student on a few collected quadruples."""

import json

import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.cli import main
from distill3d.methods.dd3g.collect import CollectConfig, collect_quadruples
from distill3d.methods.dd3g.objective import curriculum_beta, opacity_term, random_grey
from distill3d.methods.dd3g.train import STUDENT_FRAME_DISTANCE, student_cameras
from distill3d.world_models.multiview_cameras import sample_multiview_groups, split_groups, MultiViewGroupCameras


@pytest.fixture(scope="module")
def quadruples(tmp_path_factory):
    root = tmp_path_factory.mktemp("dd3g") / "q"
    collect_quadruples(CollectConfig(count=2, shard_size=2, batch_size=2, ddim_steps=1, device="cpu"), root,
                       progress=False)
    return root


def test_curriculum_opacity_and_background_follow_the_paper():
    assert curriculum_beta(0, 100, 0.4) == 0.0
    assert curriculum_beta(50, 100, 0.4) == pytest.approx(0.5 * (2.718281828 ** 0.5 - 1))  # 0.324
    assert curriculum_beta(100, 100, 0.4) == 0.4  # 0.5 (e - 1) = 0.86 capped at eta
    assert float(opacity_term(torch.full((2, 5), 0.5))) == pytest.approx(-torch.log(torch.tensor(0.5)).item())
    grey = random_grey(10000, torch.Generator().manual_seed(0))
    assert 0.0 <= float(grey.min()) and float(grey.max()) <= 1.0
    assert float(grey.mean()) == pytest.approx(0.75, abs=0.01)  # E[1 - (1 - zeta)^3] = 3/4


def test_student_frame_puts_the_input_camera_at_a_fixed_distance_and_keeps_the_targets_turns():
    cams, params = sample_multiview_groups(3, 64, MultiViewGroupCameras(), torch.Generator().manual_seed(0))
    inputs, targets = split_groups(cams, 4)
    rel = student_cameras(inputs, targets)
    # the targets share the input's distance, so they sit at the frame's distance too
    assert torch.allclose(rel.c2w[:, :3, 3].norm(dim=-1), torch.full((12,), STUDENT_FRAME_DISTANCE), atol=1e-4)
    # turning the whole world about the up axis changes nothing in the student's frame
    turned = orbit_cameras(params["elevation"].reshape(-1), params["azimuth"].reshape(-1) + 70.0,
                           params["distance"].reshape(-1), params["fovy"].reshape(-1), 64, 64)
    t_inputs, t_targets = split_groups(turned, 4)
    assert torch.allclose(student_cameras(t_inputs, t_targets).c2w, rel.c2w, atol=1e-4)


def test_training_runs_resumes_and_exports(quadruples, tmp_path):
    out = tmp_path / "run"
    common = ["dd3g", "train", "--data", str(quadruples), "--out", str(out), "--tiny", "--steps", "3",
              "--batch-size", "2", "--lr", "1e-3", "--device", "cpu", "--log-every", "1",
              "--set", "optim.warmup_steps=1"]
    assert main(common + ["--max-minutes", "0.001"]) == 0  # stops at once, after saving
    assert main(["dd3g", "train", "--out", str(out), "--resume", "--device", "cpu", "--log-every", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 3
    lines = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(json.loads(line)["loss"])) for line in lines)
    assert (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "dd3g-student" and config["objective"]["eta"] == 0.4


def test_training_refuses_what_it_cannot_use(tmp_path, capsys):
    assert main(["dd3g", "train", "--out", str(tmp_path / "r")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["dd3g", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r2"), "--tiny",
                 "--device", "cpu"]) == 2
    assert "no meta.json" in capsys.readouterr().err
    assert main(["dd3g", "train", "--data", str(tmp_path), "--out", str(tmp_path / "r3"),
                 "--perceptual", "lpips:/nowhere/alex.pth:/nowhere/lin.pth"]) == 2


def test_loss_runs_under_bf16_mixed_precision(quadruples):
    """On CUDA the trainer runs the student under accelerate's bf16 autocast; the same path on the CPU:
    the student's bf16 output reaches the renderer and the teacher, and every weight gets a finite gradient."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from distill3d.eval.perceptual import perceptual_distance
    from distill3d.methods.dd3g.train import DD3GTask, DD3GTrainConfig, tiny_student
    from distill3d.random_streams import Generators

    config = DD3GTrainConfig(data=str(quadruples), student=tiny_student(), steps=10)
    task = DD3GTask(config, lambda device: perceptual_distance("classifier", device))
    AcceleratorState._reset_state(True)  # the process-wide state of earlier tests' full-precision runs
    try:
        accelerator = Accelerator(cpu=True, mixed_precision="bf16")
        model = accelerator.prepare(task.build_model())
        source = task.build_source(torch.device("cpu"))
        source.step = 9  # late: the implicit verification is on
        with accelerator.autocast():
            loss = task.loss(model, source, 2, Generators.seeded(0, 0, torch.device("cpu")))
        loss.backward()
    finally:
        AcceleratorState._reset_state(True)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
