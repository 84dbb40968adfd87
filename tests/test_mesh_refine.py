"""Consistent3D's mesh refinement stage on CPU-sized settings: a tiny coarse NeRF run refined into a textured mesh."""

import json

import pytest
import trimesh

from tiny_configs import tiny_text_to_3d

from distill3d.camera_sampling import OrbitCameraConfig
from distill3d.cli import main
from distill3d.errors import UserError
from distill3d.methods.consistent3d import text_to_3d
from distill3d.methods.mesh_refine import MeshRefineConfig, load_refined, refine_mesh
from distill3d.scene.dmtet import DMTetConfig
from distill3d.training.scene_loop import LoopConfig

PROMPT = "a red plain sphere"


@pytest.fixture(scope="module")
def coarse(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coarse") / "nerf"
    text_to_3d(PROMPT, tiny_text_to_3d("nerf", guidance="sds", turntable_frames=0), folder, progress=False)
    return folder


def tiny_refine(**fields) -> MeshRefineConfig:
    values = dict(steps=2, device="cpu", resolution=16, dmtet=DMTetConfig(resolution=12),
                  cameras=OrbitCameraConfig(cameras_per_step=2, resolution=16), texture_size=32,
                  turntable_frames=2, loop=LoopConfig(checkpoint_every=1))
    values.update(fields)
    return MeshRefineConfig(**values)


def test_refinement_writes_a_textured_mesh_and_resumes(coarse, tmp_path):
    summary = refine_mesh(coarse, tiny_refine(), tmp_path / "fine", progress=False)
    assert summary["steps"] == 2 and summary["guidance"] == "sds" and summary["prompt"] == PROMPT
    assert summary["final_stats"]["faces"] > 0
    for name in ("mesh.glb", "mesh.obj", "mesh.mtl", "mesh.png", "turntable.gif", "checkpoint.safetensors"):
        assert (tmp_path / "fine" / name).is_file(), name
    mesh = trimesh.load(tmp_path / "fine" / "mesh.glb", force="mesh")
    assert len(mesh.faces) > 0 and mesh.visual.uv is not None and mesh.visual.material is not None
    config = json.loads((tmp_path / "fine" / "config.json").read_text())
    assert config["method"] == "text-to-3d-refine" and config["prompt"] == PROMPT
    more = refine_mesh(coarse, tiny_refine(steps=3), tmp_path / "fine", resume=True, progress=False)
    assert more["steps"] == 3
    # the checkpoint gives back the exported mesh and its colours (what benchmarks/eval_refined_mesh.py scores)
    verts, faces, colour = load_refined(tmp_path / "fine")
    exported = trimesh.load(tmp_path / "fine" / "mesh.glb", force="mesh")
    assert faces.shape[0] == len(exported.faces) and verts.shape[1] == 3
    rgb = colour(verts[:7])
    assert rgb.shape == (7, 3) and float(rgb.min()) >= 0.0 and float(rgb.max()) <= 1.0
    with pytest.raises(UserError, match="not a `distill3d text-to-3d-refine` run"):
        load_refined(coarse)


def test_refinement_refuses_what_it_cannot_start_from(coarse, tmp_path):
    with pytest.raises(UserError, match="not a run folder"):
        refine_mesh(tmp_path / "nothing", tiny_refine(), tmp_path / "out", progress=False)
    gaussians = tmp_path / "gaussians"
    text_to_3d(PROMPT, tiny_text_to_3d("gaussians", steps=1, turntable_frames=0), gaussians, progress=False)
    with pytest.raises(UserError, match="starts from a NeRF"):
        refine_mesh(gaussians, tiny_refine(), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # refused before any folder was made
    assert main(["text-to-3d-refine", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) != 0
