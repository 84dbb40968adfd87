"""benchmarks/holofusion_fid_ceiling.py with the shipped HoloFusion model's sizes and cameras: its images and
one small call."""

import json

import pytest
import torch
from benchmark_scripts import load_benchmark

from distill3d.methods.holofusion.sample import load_holofusion
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects


@pytest.fixture(scope="module")
def script():
    return load_benchmark("holofusion_fid_ceiling")


def test_exact_renders_are_the_heldout_objects_round_robin_in_8_bits(script):
    cams = load_holofusion("holofusion-world").config.views.draw(30, 16, 1)
    images = script.exact_renders(cams[28:30], torch.device("cpu"))
    direct = render_reference(heldout_objects()[:2], cams[28:30]).rgb.clamp(0, 1)
    assert images.shape == (2, 16, 16, 3) and torch.equal(images * 255, (images * 255).round())
    assert (images - direct).abs().max() <= 0.5 / 255 + 1e-6


def test_upsampling_keeps_8_bit_images_at_their_size_and_doubles_them(script):
    images = torch.randint(0, 256, (2, 8, 8, 3)).float() / 255
    assert torch.equal(script.upsampled(images, 8), images)
    assert script.upsampled(images, 16).shape == (2, 16, 16, 3)


def test_a_call_writes_both_rows_and_the_resolution_cost(script, tmp_path):
    out = tmp_path / "ceiling.json"
    result = script.main(["--count", "1", "--views", "8", "--kid-subsets", "5", "--device", "cpu", "--out", str(out)])
    assert (result["resolution"], result["coarse_resolution"], result["count"]) == (64, 32, 8)
    assert set(result["rows"]) == {"exact at S, upsampled", "exact, second draw"}
    assert all(row["fid"] >= 0 for row in result["rows"].values())
    assert result["resolution_cost"] == result["rows"]["exact at S, upsampled"]["fid"]
    assert json.loads(out.read_text())["resolution_cost"] == result["resolution_cost"]
