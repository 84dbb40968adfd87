"""``distill3d fit``: small reconstructions on the CPU that a broken renderer or optimiser would fail."""

import json

import pytest
import torch
import trimesh

from distill3d.cli import main
from distill3d.data.multiview import MultiviewDataset
from distill3d.data.world_datasets import write_world_dataset
from distill3d.export.ply import read_gaussians_ply
from distill3d.export.scene import ExportConfig
from distill3d.methods.fit import FitConfig, fit
from distill3d.metrics import psnr
from distill3d.scene.factory import GaussianInitConfig, SceneConfig, SceneOptimConfig
from distill3d.scene.hash_grid import HashGridConfig
from distill3d.scene.voxel_grid import VoxelGridConfig
from distill3d.training.run_dir import RunDir
from distill3d.training.scene_loop import LoopConfig
from distill3d.world import parse_prompt

PROMPT = "a blue plain cube"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "data"
    obj, _ = parse_prompt(PROMPT)
    write_world_dataset("multiview", out, 1, views=20, resolution=32, objects=[obj], progress=False)
    return out


def _white_psnr(data) -> float:
    """PSNR of an empty (all-background) prediction on the held-out views: the floor to beat."""
    images = MultiviewDataset(data)[0]["images"][-4:, ..., :3]
    return psnr(torch.ones_like(images), images).mean().item()


SMALL = dict(heldout_views=4, loop=LoopConfig(checkpoint_every=50),
             export=ExportConfig(turntable_frames=4, turntable_resolution=32, mesh_resolution=32))


@pytest.mark.parametrize("representation,extra", [
    ("gaussians", dict(scene=SceneConfig(gaussians=GaussianInitConfig(count=1500)), steps=200,
                       optim=SceneOptimConfig(gaussian_lr_scale=2.0))),
    ("voxels", dict(scene=SceneConfig(representation="voxels", num_samples=32,
                                      voxels=VoxelGridConfig(resolution=16, feature_dim=8)),
                    steps=150, optim=SceneOptimConfig(grid_lr=0.05, mlp_lr=5e-3))),
    ("nerf", dict(scene=SceneConfig(representation="nerf", num_samples=32,
                                    nerf=HashGridConfig(num_levels=6, log2_table_size=12, max_resolution=64)),
                  steps=150, optim=SceneOptimConfig(grid_lr=0.03, mlp_lr=5e-3))),
])
def test_fit_beats_the_empty_prediction_on_unseen_views(data, tmp_path, representation, extra):
    summary = fit(FitConfig(data=str(data), views_per_step=2, **SMALL, **extra),
                  tmp_path / representation, progress=False)
    floor = _white_psnr(data)
    held = summary["heldout"]
    # Measured on this CPU: 21.5 (gaussians), 24.8 (voxels), 25.6 (nerf) dB against a floor of 7.2 dB.
    # A renderer with wrong geometry (flipped axes, misplaced cameras) cannot reach 18 dB on unseen views.
    assert held["psnr"] > 18.0 and held["psnr"] > floor + 10.0, (held, floor)
    assert held["mask_iou"] > 0.75, held
    assert summary["steps"] == extra["steps"]
    if representation == "gaussians":
        assert len(read_gaussians_ply(summary["outputs"]["ply"])) == extra["scene"].gaussians.count
    else:  # the marching-cubes mesh is the cube: its size, and blue
        mesh = trimesh.load(summary["outputs"]["glb"], force="mesh")
        extent = mesh.bounds[1] - mesh.bounds[0]
        assert len(mesh.faces) > 50 and (extent > 0.6).all() and (extent < 2.0).all(), extent
        colours = mesh.visual.vertex_colors[:, :3].astype(float).mean(axis=0)
        assert colours[2] > colours[0] and colours[2] > colours[1], colours


def test_resume_continues_to_the_same_result(data, tmp_path):
    cfg = dict(data=str(data), scene=SceneConfig(gaussians=GaussianInitConfig(count=300)), views_per_step=2,
               heldout_views=4, loop=LoopConfig(checkpoint_every=5), export=ExportConfig(turntable_frames=0))
    fit(FitConfig(steps=10, **cfg), tmp_path / "straight", progress=False)
    fit(FitConfig(steps=5, **cfg), tmp_path / "resumed", progress=False)
    summary = fit(FitConfig(steps=10, **cfg), tmp_path / "resumed", resume=True, progress=False)
    assert summary["steps"] == 10
    a = read_gaussians_ply(tmp_path / "straight" / "gaussians.ply")
    b = read_gaussians_ply(tmp_path / "resumed" / "gaussians.ply")
    for name, tensor in a.tensors().items():
        assert torch.allclose(tensor, b.tensors()[name], atol=1e-6), name


def test_cli_fit_export_and_user_errors(data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", str(data), "--representation", "voxels", "--steps", "3", "--scene.voxels.resolution", "8",
                 "--scene.voxels.feature-dim", "4", "--num-samples", "8", "--heldout-views", "4", "--turntable-frames", "0",
                 "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["heldout_views"] == 4
    # running again into the same folder without --resume is refused, nothing is overwritten
    assert main(["fit", str(data), "--steps", "3", "--out", str(run), "--representation", "voxels"]) == 2
    assert "--resume" in capsys.readouterr().err
    # a Gaussians-only format is a clear error for a voxel run
    assert main(["export", str(run), "--format", "ply"]) == 2
    assert main(["fit", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["fit", str(data), "--item", "5", "--out", str(tmp_path / "r3")]) == 2


def test_export_command_writes_a_readable_ply(data, tmp_path):
    run = tmp_path / "g"
    fit(FitConfig(data=str(data), scene=SceneConfig(gaussians=GaussianInitConfig(count=200)), steps=2,
                  heldout_views=4, export=ExportConfig(turntable_frames=0)), run, progress=False)
    (run / "gaussians.ply").unlink()
    assert main(["export", str(run), "--format", "ply", "--format", "gif"]) == 0
    g = read_gaussians_ply(run / "gaussians.ply")
    assert len(g) == 200
    assert (run / "turntable.gif").exists()
    step, _, _ = RunDir(run).load_checkpoint({}, {})
    assert step == 2
