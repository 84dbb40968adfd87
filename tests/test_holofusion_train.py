"""HoloFusion end to end on the CPU: `distill3d holofusion train` (resume = uninterrupted), `sample`, the
training loss on a tiny overfit, and the one-line errors."""

import importlib.util
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from distill3d.cli import main
from distill3d.data import write_world_dataset
from distill3d.methods.holofusion.sample import (
    load_holofusion,
    read_sample_grid,
    sample_grids,
)
from distill3d.methods.holofusion.train import (
    HoloFusionModel,
    HoloFusionTask,
    tiny_holofusion,
)
from distill3d.methods.holofusion.unproject import grid_points
from distill3d.methods.holofusion.view_groups import WorldDataConfig
from distill3d.random_streams import Generators
from distill3d.render.volume import render_volume

TRAIN = ["holofusion", "train", "--tiny", "--device", "cpu", "--log-every", "1"]


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """A world multi-view data set: 2 sequences of 6 frames at 16 px (training objects)."""
    return write_world_dataset("multiview", tmp_path_factory.mktemp("hf") / "mv", 2, resolution=16, views=6,
                               shard_size=2, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """4 steps in one go, and 2 + 2 steps with a resume in between."""
    root = tmp_path_factory.mktemp("runs")
    assert main(TRAIN + ["--out", str(root / "whole"), "--steps", "4"]) == 0
    assert main(TRAIN + ["--out", str(root / "split"), "--steps", "2"]) == 0
    assert main(["holofusion", "train", "--out", str(root / "split"), "--resume", "--steps", "4", "--device", "cpu",
                 "--log-every", "1"]) == 0
    return root


def test_resumed_training_equals_an_uninterrupted_run(trained):
    whole = load_file(str(trained / "whole" / "model.safetensors"))
    split = load_file(str(trained / "split" / "model.safetensors"))
    assert whole.keys() == split.keys() and any(k.startswith("super_resolution.") for k in whole)
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    logs = [[json.loads(line) for line in (trained / run / "log.jsonl").read_text().splitlines()]
            for run in ("whole", "split")]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    assert [r["loss"] for r in logs[0]] == [r["loss"] for r in logs[1]]
    summary = json.loads((trained / "split" / "summary.json").read_text())
    assert summary["finished"] and summary["step"] == 4
    config = json.loads((trained / "whole" / "config.json").read_text())
    assert config["kind"] == "holofusion" and config["method"] == "holofusion train"


def test_sample_writes_grid_turntable_and_mesh(trained, tmp_path):
    run = trained / "whole"
    model = load_holofusion(run)
    grid = sample_grids(model, 2, steps=3, generator=torch.Generator().manual_seed(7))[0]  # as the CLI draws them
    density = model.decoder(grid.reshape(grid.shape[0], -1).T)[0]
    threshold = float(density.min() + density.max()) / 2  # a level the sampled grid crosses
    out = tmp_path / "samples"
    assert main(["holofusion", "sample", "--model", str(run), "--count", "2", "--out", str(out), "--steps", "3",
                 "--seed", "7", "--device", "cpu", "--turntable-frames", "2", "--turntable-resolution", "16",
                 "--mesh-resolution", "12", "--mesh-threshold", str(threshold)]) == 0
    first = out / "sample-000"
    for name in ("grid.safetensors", "turntable.mp4", "turntable.gif", "mesh.glb", "mesh.ply", "summary.json"):
        assert (first / name).is_file() and (first / name).stat().st_size > 0, name
    assert (out / "sample-001" / "grid.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 2 and summary["sampling_seconds_per_object"] > 0
    # the stored grid is the sample of that seed, and reads back as a field that renders like the model's R_eta
    field = read_sample_grid(first / "grid.safetensors")
    assert torch.allclose(field.features, grid, atol=1e-6)
    assert torch.allclose(field.query(grid_points(8, 1.0))[0], model.decoder(
        grid.reshape(grid.shape[0], -1).T)[0], atol=1e-5)
    from distill3d.export.video import turntable_cameras
    cams = turntable_cameras(2, resolution=16, distance=2.7)
    ours = model.render(grid[None], cams)
    ref = render_volume(field, cams, num_samples=model.config.objective.num_samples, stratified=False,
                        compute_normals=False)
    assert torch.allclose(ours.rgb, ref.rgb, atol=1e-5)


def test_sampling_conditioned_on_views_and_training_on_a_data_set(trained, sequences, tmp_path):
    model = load_holofusion(trained / "whole")
    item = next(p for p in sorted(sequences.rglob("cameras.json"))).parent
    from distill3d.methods.holofusion.sample import read_condition

    images, cameras = read_condition(item)
    assert images.shape == (6, 16, 16, 3) and len(cameras) == 6
    plain = sample_grids(model, 1, steps=2, generator=torch.Generator().manual_seed(0))
    seen = sample_grids(model, 1, steps=2, condition=(images, cameras), generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(plain, seen, atol=1e-4)  # the views change the sample
    out = tmp_path / "cond"
    assert main(["holofusion", "sample", "--model", str(trained / "whole"), "--count", "1", "--out", str(out),
                 "--steps", "2", "--device", "cpu", "--condition", str(sequences), "--turntable-frames", "0"]) == 0
    assert (out / "sample-000" / "grid.safetensors").is_file()
    run = tmp_path / "on-data"
    assert main(TRAIN + ["--out", str(run), "--steps", "2", "--data", str(sequences)]) == 0
    assert json.loads((run / "config.json").read_text())["data"] == str(sequences.resolve())


def test_distill_command_refines_a_written_sample(trained, tmp_path, capsys):
    """`holofusion distill` on a `holofusion sample` folder: the fine grid starts as the sample's (2S - 1 nests
    the coarse cells) and the run's bank is the model's D_beta; a folder without a grid is a one-line error."""
    run, out = trained / "whole", tmp_path / "s"
    assert main(["holofusion", "sample", "--model", str(run), "--count", "1", "--out", str(out), "--steps", "2",
                 "--device", "cpu", "--turntable-frames", "0"]) == 0
    field = read_sample_grid(out / "sample-000" / "grid.safetensors")
    density = field.query(grid_points(8, 1.0))[0].detach()
    threshold = float(density.min() + density.max()) / 2  # a level the (untrained) sample crosses
    distill = ["holofusion", "distill", "--model", str(run), "--sample", str(out / "sample-000"), "--num-cameras", "4",
               "--low-resolution", "8", "--num-samples", "8", "--sampling-steps", "2", "--device", "cpu",
               "--turntable-frames", "0", "--mesh-resolution", "12", "--mesh-threshold", str(threshold)]
    assert main(distill + ["--out", str(tmp_path / "d"), "--steps", "3"]) == 0
    assert (tmp_path / "d" / "scene.glb").is_file() or any((tmp_path / "d").glob("*.glb"))
    if importlib.util.find_spec("viser") is not None:  # --viewer: the fine grid shown while it is fitted
        from distill3d.viewer.headless import free_port

        assert main(distill + ["--out", str(tmp_path / "v"), "--steps", "3", "--viewer", "--viewer-port",
                               str(free_port())]) == 0
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["fine_resolution"] == 15 and summary["samples_per_camera"] == 5
    assert summary["bank_loss_start"] is not None and summary["bank_loss_start"] > 0
    # without --model: the model that the sample's summary.json names, so the same bank
    assert main(distill[:2] + distill[4:] + ["--out", str(tmp_path / "n"), "--steps", "3"]) == 0
    assert json.loads((tmp_path / "n" / "summary.json").read_text())["bank_loss_start"] == summary["bank_loss_start"]
    capsys.readouterr()
    assert main(distill[:5] + [str(tmp_path)] + distill[6:] + ["--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--sample" in err and len(err.strip().splitlines()) == 1


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["holofusion", "sample", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 2
    assert "no model folder" in capsys.readouterr().err
    model_dir = tmp_path / "m"
    assert main(TRAIN + ["--out", str(model_dir), "--steps", "1"]) == 0
    capsys.readouterr()
    assert main(["holofusion", "sample", "--model", str(model_dir), "--out", str(tmp_path / "o"), "--device", "cpu",
                 "--condition", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--condition" in err and len(err.strip().splitlines()) == 1
    assert main(TRAIN + ["--out", str(tmp_path / "d"), "--data", str(tmp_path / "none")]) == 2
    assert main(TRAIN + ["--out", str(tmp_path / "x"), "--set", "grid.resolution=7"]) == 2  # not a multiple of 2


def test_the_loss_decreases_on_a_tiny_overfit():
    config = tiny_holofusion(world=WorldDataConfig(size=2, objects_per_block=2, refresh_every=0, supersample=1))
    config = replace(config, conditioning=replace(config.conditioning, empty_probability=0.0),
                     super_resolution=replace(config.super_resolution, enabled=False))
    task = HoloFusionTask(config, progress=False)
    torch.manual_seed(0)
    model: HoloFusionModel = task.build_model()
    source = task.build_source(torch.device("cpu"))
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    source.fill(gens.data, progress=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = task.loss(model, source, 2, gens)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, losses


@pytest.mark.parametrize("first_pass_views", ["subset", "all"])
def test_the_first_pass_sees_all_source_views_only_when_asked(first_pass_views, monkeypatch):
    """objective.first_pass_views: "all" conditions the first pass on every source view (the share of
    voxels seen is that of the whole group) and the second on the random subset; "subset" both on the subset."""
    config = tiny_holofusion(world=WorldDataConfig(size=2, objects_per_block=2, refresh_every=0, supersample=1))
    config = replace(config, conditioning=replace(config.conditioning, empty_probability=1.0),
                     objective=replace(config.objective, first_pass_views=first_pass_views))
    task = HoloFusionTask(config, progress=False)
    model: HoloFusionModel = task.build_model()
    source = task.build_source(torch.device("cpu"))
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    source.fill(gens.data, progress=False)
    seen = []
    forward = model.denoiser.forward
    monkeypatch.setattr(model.denoiser, "forward", lambda v_t, v_bar, t: seen.append(v_bar) or forward(v_t, v_bar, t))
    task.loss(model, source, 2, gens).backward()
    first, second = seen
    assert second.abs().max() == 0                                   # every subset empty
    assert (first[:, -1].max() > 0) == (first_pass_views == "all")   # the share of views that see a voxel


def test_sample_without_model_draws_from_the_shipped_model(tmp_path):
    """`holofusion sample` defaults to the shipped holofusion-world model (S = 32, d = 32)."""
    out = tmp_path / "s"
    assert main(["holofusion", "sample", "--count", "1", "--out", str(out), "--steps", "2", "--device", "cpu",
                 "--turntable-frames", "0", "--mesh-resolution", "16"]) == 0
    summary = json.loads((out / "sample-000" / "summary.json").read_text())
    assert summary["model"] == "holofusion-world" and (summary["grid_resolution"], summary["feature_dim"]) == (32, 32)
