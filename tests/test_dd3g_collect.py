"""DD3G's quadruple collection on the CPU: tiny counts, 2 DDIM steps."""

import json

import pytest
import torch

from distill3d.cli import main
from distill3d.data.quadruples import QuadrupleDataset, quadruple_noise, read_shard, shard_file
from distill3d.errors import UserError
from distill3d.methods.dd3g.collect import CollectConfig, collect_quadruples, verify_quadruples
from distill3d.world.split import is_heldout, train_objects


def tiny(**fields) -> CollectConfig:
    values = dict(count=3, shard_size=2, batch_size=2, ddim_steps=2, device="cpu")
    values.update(fields)
    return CollectConfig(**values)


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("quadruples") / "q"
    summary = collect_quadruples(tiny(), root, progress=False)
    return root, summary


def test_collection_writes_every_shard_and_reads_back(collected):
    root, summary = collected
    assert summary["complete"] and summary["shards_written"] == 2
    meta = json.loads((root / "meta.json").read_text())
    assert meta["complete"] and meta["kind"] == "dd3g-quadruples" and meta["views"] == 4
    data = QuadrupleDataset(root)
    assert len(data) == 3
    item = data[2]
    assert item["input_image"].shape == (64, 64, 3) and item["output_images"].shape == (4, 64, 64, 3)
    assert item["camera_params"].shape == (5, 4) and item["noise"].shape == (4, 3, 64, 64)
    assert 0.0 <= float(item["output_images"].min()) and float(item["output_images"].max()) <= 1.0
    # the input image shows an object (not all white), and N is regenerated from its seed
    assert float(item["input_image"].min()) < 0.9
    seed = int(read_shard(shard_file(root, 1))["noise_seed"][0])
    assert torch.equal(item["noise"], quadruple_noise(seed, 4, 3, 64))
    # training objects only, never a held-out one
    objects = train_objects()
    assert meta["objects"] == [o.prompt for o in objects]
    assert not any(is_heldout(objects[data[i]["object"]]) for i in range(len(data)))


def test_stored_items_are_reproduced_from_noise_cameras_and_input(collected):
    root, _ = collected
    result = verify_quadruples(root, items=2, device="cpu")
    assert result["plan_reproduced"] and result["input_max_abs_diff_uint8"] == 0
    assert result["output_max_abs_diff_uint8"] == 0 and result["reproduced"]  # same batch of 2 as collected
    assert main(["dd3g", "verify", str(root), "--items", "1", "--device", "cpu"]) == 0


def test_resume_rewrites_only_missing_shards_identically(collected, tmp_path):
    root, _ = collected
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("meta.json", "quadruples-00000.safetensors"):
        (copy / name).write_bytes((root / name).read_bytes())
    with pytest.raises(UserError, match="--resume"):
        collect_quadruples(tiny(), copy, progress=False)
    with pytest.raises(UserError, match="other settings"):
        collect_quadruples(tiny(seed=1), copy, resume=True, progress=False)
    summary = collect_quadruples(tiny(batch_size=1), copy, resume=True, progress=False)  # batch size may change
    assert summary["shards_written"] == 1 and summary["complete"]
    old, new = read_shard(shard_file(root, 1)), read_shard(shard_file(copy, 1))
    for name in ("index", "object", "noise_seed", "camera_params", "input_image"):
        assert torch.equal(old[name], new[name]), name
    assert (old["output_images"].int() - new["output_images"].int()).abs().max() <= 1


def test_each_process_writes_its_own_shards(collected, tmp_path, monkeypatch):
    root, _ = collected
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")  # rank 0 opens the folder; shards 0, 2, ... are its own
    first = collect_quadruples(tiny(), tmp_path / "q", progress=False)
    assert first["shards_of_this_rank"] == 1 and not first["complete"]
    assert shard_file(tmp_path / "q", 0).is_file() and not shard_file(tmp_path / "q", 1).exists()
    monkeypatch.setenv("RANK", "1")  # rank 1 joins the folder rank 0 opened
    second = collect_quadruples(tiny(), tmp_path / "q", progress=False)
    assert second["complete"] and shard_file(tmp_path / "q", 1).is_file()
    for s in (0, 1):  # the same items as one process writes
        alone, split = read_shard(shard_file(root, s)), read_shard(shard_file(tmp_path / "q", s))
        assert all(torch.equal(alone[k], split[k]) for k in alone)


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(UserError, match="--count"):
        CollectConfig(count=0)
    assert main(["dd3g", "collect", "--out", str(tmp_path / "q"), "--teacher", str(tmp_path / "none")]) == 2
    assert "neither" in capsys.readouterr().err
    assert main(["dd3g", "verify", str(tmp_path / "nothing")]) == 2
    with pytest.raises(UserError, match="no meta.json"):
        QuadrupleDataset(tmp_path)


def test_a_folder_of_images_is_collected_with_the_assumed_input_camera(tmp_path):
    import numpy as np
    from PIL import Image

    from distill3d.methods.dd3g.input_images import ASSUMED_DISTANCE, ASSUMED_ELEVATION

    folder = tmp_path / "images"
    folder.mkdir()
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[10:30, 5:25] = (200, 30, 30, 255)  # a red square on a transparent background
    Image.fromarray(rgba).save(folder / "square.png")
    Image.fromarray(rgba[..., :3]).save(folder / "dark.jpg")
    root = tmp_path / "q"
    summary = collect_quadruples(tiny(count=3, ddim_steps=1, images=str(folder)), root, progress=False)
    assert summary["complete"]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["objects"] == ["dark.jpg", "square.png"] and meta["images"] == str(folder)
    data = QuadrupleDataset(root)
    params = data.data["camera_params"]
    assert torch.all(params[:, 0, 0] == ASSUMED_ELEVATION) and torch.all(params[..., 2] == ASSUMED_DISTANCE)
    square = data[1]["input_image"]  # item 1 is the second file: the square, over white
    assert torch.allclose(square[0, 0], torch.ones(3)) and square[32, 32, 0] > 0.7 and square[32, 32, 1] < 0.2
    result = verify_quadruples(root, items=2, device="cpu")
    assert result["reproduced"] and result["input_max_abs_diff_uint8"] == 0


def test_a_render_meshes_data_set_is_collected_with_each_frames_own_camera(tmp_path):
    """`data render-meshes --kind multiview` output as --images: only frames inside the teacher's input
    elevations, each with its recorded elevation, distance and fovy, the frame itself as II."""
    import trimesh

    from distill3d.cli import main
    from distill3d.data.multiview import MultiviewDataset
    from distill3d.methods.dd3g.input_images import read_input_image

    meshes = tmp_path / "meshes"
    meshes.mkdir()
    trimesh.creation.box(extents=(1, 0.6, 0.4)).export(meshes / "box.obj")
    trimesh.creation.icosphere(subdivisions=2).export(meshes / "ball.obj")
    renders = tmp_path / "renders"
    assert main(["data", "render-meshes", str(meshes), "--out", str(renders), "--views", "12"]) == 0
    frames = MultiviewDataset(renders)
    inside = [(i, v) for i in range(len(frames)) for v in range(12) if -10.0 <= float(frames[i]["elevation"][v]) <= 45.0]
    assert 0 < len(inside) < 24  # the sphere band reaches -30 and 80 degrees: some frames are left out
    root = tmp_path / "q"
    collect_quadruples(tiny(count=len(inside), shard_size=len(inside), ddim_steps=1, images=str(renders)), root,
                       progress=False)
    meta = json.loads((root / "meta.json").read_text())
    assert len(meta["objects"]) == len(inside) and meta["objects"][0].split("/")[0] in ("ball.obj", "box.obj")
    data = QuadrupleDataset(root)
    for k, (i, v) in enumerate(inside):
        sample = frames[i]
        params = data.data["camera_params"][k]
        assert params[0, 0] == pytest.approx(float(sample["elevation"][v]), abs=1e-4)
        assert torch.allclose(params[:, 2], torch.full((5,), float(sample["distance"][v])))
        assert torch.allclose(params[:, 3], torch.full((5,), float(sample["fovy"][v])))
        frame = renders / "shard-00000" / f"{i:07d}" / "frames" / f"{v:03d}.png"
        stored = data.data["input_image"][k].float() / 255.0
        assert (stored - read_input_image(frame, 64)).abs().max() <= 1 / 255 + 1e-6
