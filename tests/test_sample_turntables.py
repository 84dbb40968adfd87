"""benchmarks/sample_turntables.py: the samples' turntables side by side, in sample order."""

import imageio.v3 as iio
import numpy as np
import pytest
from benchmark_scripts import load_benchmark

from distill3d.export.video import write_video


def test_turntables_are_put_side_by_side_in_sample_order(tmp_path):
    script = load_benchmark("sample_turntables")
    colours = {"sample-001": (0, 0, 255), "sample-000": (255, 0, 0)}
    for name, colour in colours.items():
        frames = np.zeros((3 + (name == "sample-001"), 8, 6, 3), np.uint8) + np.array(colour, np.uint8)
        frames[:, 0, :] = np.arange(len(frames), dtype=np.uint8)[:, None, None] * 60   # frames differ (GIF merges equal ones)
        (tmp_path / name).mkdir()
        write_video(tmp_path / name / "turntable.gif", frames, fps=10)
    sheet = script.side_by_side(tmp_path)
    assert sheet.shape == (3, 8, 12, 3)                              # the shorter video's length
    assert (sheet[:, 1:, :6] == (255, 0, 0)).all() and (sheet[:, 1:, 6:] == (0, 0, 255)).all()
    out = script.main([str(tmp_path), "--out", str(tmp_path / "all.gif")])
    assert iio.imread(out).shape[:3] == (3, 8, 12)
    with pytest.raises(SystemExit, match="no sample"):
        script.side_by_side(tmp_path / "sample-000")
