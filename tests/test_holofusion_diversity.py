"""benchmarks/holofusion_diversity.py on a tiny untrained model: the spread statistic, and a full call."""

import json

import pytest
import torch
from benchmark_scripts import load_benchmark

from distill3d.configs import config_to_dict
from distill3d.methods.holofusion.train import HoloFusionModel, tiny_holofusion
from distill3d.model_folder import WEIGHTS_FILE, save_weights


@pytest.fixture(scope="module")
def script():
    return load_benchmark("holofusion_diversity")


def test_spread_is_zero_for_copies_and_the_standard_deviation_otherwise(script):
    one = torch.rand(1, 2, 4, 4, 3)
    assert script.spread(one.expand(5, -1, -1, -1, -1)) == 0
    pair = torch.stack([torch.zeros(2, 4, 4, 3), torch.ones(2, 4, 4, 3)])
    assert script.spread(pair) == pytest.approx(2 ** -0.5)        # std (n - 1) of {0, 1}


def test_a_call_measures_every_model_and_writes_the_sheet(script, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    config = tiny_holofusion()
    torch.manual_seed(0)
    save_weights(HoloFusionModel(config), folder / WEIGHTS_FILE, torch.float32)
    (folder / "config.json").write_text(json.dumps(config_to_dict(config)))
    out = tmp_path / "div.json"
    result = script.main(["--model", str(folder), "--out", str(out), "--count", "3", "--views", "2",
                          "--conditioned", "2", "--sample-steps", "2", "--device", "cpu"])
    row = result["models"][str(folder)]
    assert row["objective"] == "all" and row["reference_spread"] > 0
    assert row["spread_ratio"] == pytest.approx(row["unconditional_spread"] / row["reference_spread"])
    assert len(row["conditioned"]) == 2 and all(r["psnr"] > 0 for r in row["conditioned"])
    assert json.loads(out.read_text())["models"][str(folder)]["spread_ratio"] == row["spread_ratio"]
    assert (tmp_path / "div_0.png").is_file()
    with pytest.raises(Exception, match="--count"):
        script.main(["--model", str(folder), "--out", str(out), "--count", "1"])
