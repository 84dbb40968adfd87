"""benchmarks/holofusion_table.py end to end on a tiny untrained model: a time-boxed call that stops before any
sample, a full call, and a repeated call that reuses every sample; the rows, the images and the FIDs are
checked against direct computations."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark
from PIL import Image

from distill3d.cameras import Cameras
from distill3d.configs import config_to_dict
from distill3d.eval.feature_networks import feature_network
from distill3d.eval.fid import fid_between_folders
from distill3d.eval.memorisation import PixelFeatures
from distill3d.methods.holofusion.sample import load_holofusion, sample_grids
from distill3d.methods.holofusion.train import HoloFusionModel, tiny_holofusion
from distill3d.model_folder import WEIGHTS_FILE, save_weights
from distill3d.render.volume import render_volume
from distill3d.scene.voxel_grid import VoxelRadianceField
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects, train_objects

VARIANTS = ("holodiffusion", "holodiffusion_star", "sds", "mse", "patch_remix")


@pytest.fixture(scope="module")
def table_script():
    return load_benchmark("holofusion_table")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A fresh tiny model exported as the CLI does (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("model")
    config = tiny_holofusion()
    torch.manual_seed(0)
    save_weights(HoloFusionModel(config), folder / WEIGHTS_FILE, torch.float32)
    (folder / "config.json").write_text(json.dumps(config_to_dict(config)))
    return folder


def args(model_dir, out, *extra):
    return ["--model", str(model_dir), "--out", str(out), "--count", "2", "--views", "4", "--distill-steps", "3",
            "--distill-set", "num_cameras=4", "--distill-set", "views_per_step=2", "--num-samples", "16",
            "--sample-steps", "3", "--memorisation-train-objects", "3", "--memorisation-heldout-objects", "2",
            "--memorisation-resolution", "16", "--kid-subsets", "10", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def runs(table_script, model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    boxed = table_script.main(args(model_dir, out, "--max-minutes", "0"))
    full = table_script.main(args(model_dir, out))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json") if p.parent.name == "measures"}
    again = table_script.main(args(model_dir, out))
    return out, boxed, full, again, stamps


def read_png(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)


def test_a_time_box_of_zero_makes_no_sample_and_says_so(runs):
    _, boxed, _, _, _ = runs
    assert not boxed["complete"] and [r["samples_done"] for r in boxed["rows"]] == [0] * 5
    assert all(r["fid"] is None and r["seconds_per_sample"] is None for r in boxed["rows"])
    assert boxed["aim"]["met"] is None and boxed["reference"]["floor"]["fid"] >= 0   # the reference is made anyway


def test_the_table_has_every_row_and_its_files(runs):
    out, _, full, again, stamps = runs
    assert full["complete"] and [r["variant"] for r in full["rows"]] == list(VARIANTS)
    for row in full["rows"]:
        assert len(list((out / row["variant"]).glob("*.png"))) == 8
        assert math.isfinite(row["fid"]) and math.isfinite(row["kid_mean"]) and row["seconds_per_sample"] > 0
        assert set(row["consistency"]) == {"mae", "psnr", "valid_share", "samples"}
        assert sum(row["predicted_shapes"].values()) == 8
        assert (row["memorisation"] is None) == (row["variant"] == "holodiffusion_star")
    trained = [o.prompt for o in train_objects()]
    for row in full["rows"]:
        if row["memorisation"]:
            assert len(row["memorisation"]["nearest"]) == 2 and set(row["memorisation"]["nearest"]) <= set(trained)
    hd = full["rows"][0]["fid"]
    for row in full["rows"]:
        assert row["fid_change_pct"] == pytest.approx(100 * (row["fid"] - hd) / hd)
    assert full["aim"]["fid_change_pct"] == full["rows"][-1]["fid_change_pct"]
    assert len(list((out / "reference").glob("*.png"))) == 8 and full["reference"]["floor"]["fid"] >= 0
    md = (out / "table.md").read_text()
    assert all(label in md for label in ("HoloDiffusion*", "HoloFusion (SDS)", "HoloFusion (MSE)", "Aim"))
    assert json.loads((out / "table.json").read_text())["complete"]
    # the repeated call redid nothing and measured the same
    assert stamps and all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert [r["fid"] for r in again["rows"]] == pytest.approx([r["fid"] for r in full["rows"]])


def test_the_rows_sheet_holds_the_reference_and_each_variants_first_views(runs):
    out = runs[0]
    sheet = read_png(out / "rows.png")
    assert sheet.shape == (16 * 6, 16 * 2, 3)                         # 1 + 5 rows of 2 samples at 16 px
    assert torch.equal(sheet[:16, 16:], read_png(out / "reference" / "00001.png"))
    for r, variant in enumerate(VARIANTS, start=1):
        assert torch.equal(sheet[16 * r:16 * r + 16, 16:], read_png(out / variant / "001-000.png"))


def test_holodiffusion_images_are_renders_of_the_sampled_grids(runs, model_dir):
    out = runs[0]
    model = load_holofusion(model_dir)
    grids = sample_grids(model, 2, steps=3, generator=torch.Generator().manual_seed(0))
    cams = Cameras.from_dicts(json.loads((out / "cameras.json").read_text())["samples"])
    assert len(cams) == 8 and cams.width == 16                       # S = 8 super-resolved x2
    for i in range(2):
        field = VoxelRadianceField.from_features(grids[i], model.decoder, model.config.grid)
        expected = render_volume(field, cams[4 * i:4 * i + 4], num_samples=16, stratified=False,
                                 compute_normals=False).rgb.clamp(0, 1)
        written = torch.stack([read_png(out / "holodiffusion" / f"{i:03d}-{k:03d}.png") for k in range(4)])
        assert (written - expected).abs().max() <= 0.5 / 255 + 1e-4


def test_reference_and_fid_match_direct_computations(runs):
    out, _, full, _, _ = runs
    cams = Cameras.from_dicts(json.loads((out / "cameras.json").read_text())["reference"])
    held = heldout_objects()
    expected = render_reference([held[k % len(held)] for k in range(8)], cams).rgb
    written = torch.stack([read_png(out / "reference" / f"{k:05d}.png") for k in range(8)])
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-4
    network = feature_network("classifier", "cpu")
    direct = fid_between_folders(out / "holodiffusion", out / "reference", network)
    assert full["rows"][0]["fid"] == pytest.approx(direct["fid"], rel=1e-6)
    assert fid_between_folders(out / "reference", out / "reference", network)["fid"] == pytest.approx(0, abs=1e-6)


def test_predicted_shapes_from_features_equal_the_classifier(runs, table_script):
    out = runs[0]
    files = sorted((out / "reference").glob("*.png"))
    images = torch.stack([read_png(p) for p in files])
    network = feature_network("classifier", "cpu")
    expected = network.classifier.predict(images)["shape"]
    from_features = table_script.predicted_shapes(files, network.features(images), network, None)
    pixels = PixelFeatures(8)
    from_images = table_script.predicted_shapes(files, pixels.features(images), pixels, network.classifier)
    assert from_features == expected and from_images == expected


def test_jobs_deal_the_samples_to_workers_and_give_the_same_table(runs, table_script, model_dir, tmp_path):
    """--jobs 2: two worker processes make the pairs, the caller writes the table: the same images and FIDs
    as the single process (every sample's seeds are its own)."""
    out, _, full, _, _ = runs
    parallel = table_script.main(args(model_dir, tmp_path, "--jobs", "2"))
    assert parallel["complete"]
    assert [r["fid"] for r in parallel["rows"]] == pytest.approx([r["fid"] for r in full["rows"]], rel=1e-5)
    for variant in VARIANTS:
        for png in sorted((out / variant).glob("*.png")):
            assert (read_png(tmp_path / variant / png.name) - read_png(png)).abs().max() == 0, png
