"""Run folders behave the same for every command: the folder checks, damaged checkpoints, the NaN guard,
config.json's method and version, and ``distill3d export`` on the folder of each command."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from tiny_configs import tiny_text_to_3d

from distill3d import __version__
from distill3d.cli import main
from distill3d.errors import NonFiniteLoss, UserError
from distill3d.export.ply import read_gaussians_ply
from distill3d.methods.consistent3d import text_to_3d
from distill3d.training.run_dir import RunDir, checkpoint_problem
from distill3d.training.scene_loop import LoopConfig, SceneJob, run_loop

PROMPT = "a red striped torus"
TINY_CLI = ["--steps", "2", "--cameras-per-step", "2", "--cameras.resolution", "16", "--num-samples", "8",
            "--scene.nerf.num-levels", "2", "--scene.nerf.log2-table-size", "8", "--scene.nerf.max-resolution", "32",
            "--scene.gaussians.count", "32", "--checkpoint-every", "1", "--turntable-frames", "0",
            "--export.mesh-resolution", "16", "--device", "cpu"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("distill3d: error:") and err.count("\n") == 1, err
    return err


@pytest.fixture(scope="module")
def gaussians_run(tmp_path_factory):
    """A finished 2-step text-to-3d run of Gaussians (checkpoints at steps 1 and 2)."""
    out = tmp_path_factory.mktemp("runs") / "g"
    assert main(["text-to-3d", PROMPT, "--out", str(out), "--representation", "gaussians", *TINY_CLI]) == 0
    return out


# ---------------------------------------------------------------------- the folder
def test_config_records_the_method_and_version(gaussians_run):
    config = json.loads((gaussians_run / "config.json").read_text())
    assert config["method"] == "text-to-3d" and config["distill3d_version"] == __version__
    assert config["prompt"] == PROMPT and config["scene"]["representation"] == "gaussians"


@pytest.mark.parametrize("command", [
    ["text-to-3d", PROMPT, *TINY_CLI],
    ["fit", "DATA", "--steps", "1"],
    ["demo", "--steps", "1"],
])
def test_out_naming_a_file_is_a_one_line_error(tmp_path, capsys, command):
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    (tmp_path / "DATA").mkdir()
    command = [str(tmp_path / "DATA") if c == "DATA" else c for c in command]
    assert main([*command, "--out", str(target)]) == 2
    assert "is a file" in one_line_error(capsys)
    assert target.read_text() == "mine"


@pytest.mark.parametrize("command", [
    ["text-to-3d", PROMPT, *TINY_CLI],
    ["teacher", "train", "classifier", "--tiny", "--device", "cpu"],
])
def test_resume_of_a_missing_folder_is_refused(tmp_path, capsys, command):
    out = tmp_path / "nowhere"
    assert main([*command, "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in one_line_error(capsys)
    assert not out.exists()


def test_a_folder_of_other_files_is_not_taken(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["text-to-3d", PROMPT, *TINY_CLI, "--out", str(tmp_path)]) == 2
    assert "not empty" in one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_resuming_with_another_prompt_or_method_is_refused(gaussians_run, capsys):
    with pytest.raises(UserError, match="prompt"):
        text_to_3d("a blue plain cube", tiny_text_to_3d("gaussians"), gaussians_run, resume=True, progress=False)
    assert main(["fit", str(gaussians_run), "--out", str(gaussians_run), "--resume"]) == 2
    assert "text-to-3d" in one_line_error(capsys)


# ---------------------------------------------------------------------- checkpoints
def test_each_checkpoint_keeps_the_one_before(gaussians_run):
    run = RunDir(gaussians_run)
    assert run.checkpoint_step() == 2
    with safe_open(str(run.previous_checkpoint_path), framework="pt") as f:
        assert json.loads(f.metadata()["distill3d"])["step"] == 1
    assert checkpoint_problem(run.previous_checkpoint_path) is None


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    out = tmp_path / "run"
    config = tiny_text_to_3d("gaussians", steps=2, turntable_frames=0, loop=LoopConfig(checkpoint_every=1))
    text_to_3d(PROMPT, config, out, progress=False)
    straight = {k: v.clone() for k, v in load_file(str(out / "checkpoint.safetensors")).items()}
    path = out / "checkpoint.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    assert checkpoint_problem(path) is not None
    summary = text_to_3d(PROMPT, config, out, resume=True, progress=False)  # resumes at step 1, redoes step 2
    assert "previous checkpoint, step 1" in capsys.readouterr().err
    assert summary["steps"] == 2 and (out / "checkpoint.damaged.safetensors").is_file()
    resumed = load_file(str(out / "checkpoint.safetensors"))
    for key in straight:
        if key != "rng.torch":
            assert torch.allclose(straight[key], resumed[key], atol=1e-6), key


def test_a_damaged_checkpoint_without_a_previous_one_says_what_to_do(tmp_path, capsys):
    out = tmp_path / "run"
    command = ["text-to-3d", PROMPT, *TINY_CLI, "--checkpoint-every", "5", "--out", str(out)]
    assert main(command) == 0 and not (out / "checkpoint.previous.safetensors").exists()
    (out / "checkpoint.safetensors").write_bytes(b"\x10\x00")
    capsys.readouterr()
    assert main([*command, "--resume"]) == 2
    err = one_line_error(capsys)
    assert "truncated" in err and "new --out" in err


# ---------------------------------------------------------------------- the NaN guard
def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare({"lr": 0.1}, method="test", resume=False)
    weight = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(weight.parameters(), lr=0.1)

    def step(i, timer):
        loss = weight(torch.ones(1, 2)).square().sum()
        return (loss * float("nan") if i == 3 else loss), {}

    job = SceneJob({"scene": weight}, optimizer, step)
    with pytest.raises(NonFiniteLoss, match="step 4") as error:
        run_loop(run, job, steps=10, config=LoopConfig(checkpoint_every=2), resuming=False,
                 device=torch.device("cpu"), desc="test", progress=False)
    assert "checkpoint of step 2 is kept" in str(error.value)
    assert run.checkpoint_step() == 2
    assert all(torch.isfinite(p).all() for p in weight.parameters())  # the optimiser never took the NaN step


def test_non_finite_parameters_are_never_checkpointed(tmp_path):
    run = RunDir(tmp_path / "run")
    run.prepare({"lr": 0.1}, method="test", resume=False)
    weight = torch.nn.Linear(2, 1)

    def step(i, timer):
        if i == 2:
            with torch.no_grad():
                weight.bias.fill_(float("inf"))
        return weight(torch.ones(1, 2)).sum() * 0.0, {}

    job = SceneJob({"scene": weight}, torch.optim.SGD(weight.parameters(), lr=0.1), step)
    with pytest.raises(NonFiniteLoss, match="parameters"):
        run_loop(run, job, steps=4, config=LoopConfig(checkpoint_every=2), resuming=False,
                 device=torch.device("cpu"), desc="test", progress=False)
    assert run.checkpoint_step() == 2
    assert torch.isfinite(load_file(str(run.checkpoint_path))["module.scene.bias"]).all()


# ---------------------------------------------------------------------- export, every command's folder
def test_export_on_a_text_to_3d_run(gaussians_run, tmp_path, capsys):
    assert main(["export", str(gaussians_run), "--to", str(tmp_path / "out")]) == 0
    assert len(read_gaussians_ply(tmp_path / "out" / "gaussians.ply")) == 32
    assert main(["export", str(gaussians_run), "--format", "glb"]) == 2
    assert "ply" in one_line_error(capsys)


def test_export_on_a_teacher_run_copies_its_model_folder(tmp_path, capsys):
    run = tmp_path / "teacher"
    assert main(["teacher", "train", "classifier", "--tiny", "--steps", "1", "--device", "cpu", "--out", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["method"] == "teacher train classifier"
    capsys.readouterr()
    assert main(["export", str(run)]) == 2
    assert "--to" in one_line_error(capsys)
    assert main(["export", str(run), "--format", "model", "--to", str(tmp_path / "model")]) == 0
    from distill3d.world_models.classifier import WorldClassifier
    WorldClassifier.from_pretrained(tmp_path / "model", device="cpu")


def test_export_says_when_a_folder_is_not_a_run(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "not a distill3d run folder" in one_line_error(capsys)
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "does not exist" in one_line_error(capsys)
