"""``distill3d demo``: text-to-3D end to end with the shipped teacher (2 steps), and its errors."""

from __future__ import annotations

import json

from distill3d.cli import main


def test_demo_runs_text_to_3d_and_says_where_the_outputs_are(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    run = out / "text-to-3d"
    for path in (out / "reference_turntable.gif", run / "gaussians.ply", run / "turntable.mp4", run / "summary.json"):
        assert path.is_file() and str(path) in printed
    summary = json.loads((run / "summary.json").read_text())
    assert summary["prompt"] == "an orange striped sphere" and summary["steps"] == 2 and summary["guidance"] == "sds"
    assert "R-precision" in printed
    demo = json.loads((out / "summary.json").read_text())  # the scores, saved with what they mean
    assert set(demo["scores"]) == set(demo["what_the_scores_mean"]) >= {"r_precision", "shape_accuracy", "mask_iou"}
    assert all(0.0 <= demo["scores"][k] <= 1.0 for k in ("r_precision", "shape_accuracy", "mask_iou"))
    assert f"r_precision = {demo['scores']['r_precision']:.3f}" in printed
    assert json.loads((out / "config.json").read_text())["method"] == "demo"
    assert main(["export", str(out), "--format", "gif", "--to", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "turntable.gif").is_file()  # export reads the run the demo holds


def test_demo_refuses_a_non_empty_folder_and_a_bad_prompt(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["demo", "--out", str(out), "--steps", "2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(["demo", "--out", str(tmp_path / "other"), "--prompt", "a red blorp torus"]) == 2
    assert "blorp" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
