"""Evaluation of text-to-3D runs: rotation search, classifier scores, run folders and the CLI."""

import json
import math

import pytest
import torch

from tiny_configs import tiny_text_to_3d

from distill3d.cameras import Cameras, position_to_spherical
from distill3d.cli import main
from distill3d.errors import UserError
from distill3d.eval.text_to_3d import TextTo3DEvalConfig, eval_cameras, evaluate_run, evaluate_scene
from distill3d.methods.consistent3d import text_to_3d
from distill3d.world import all_objects, is_heldout, parse_prompt, render_reference
from distill3d.world_models.classifier import HEADS, WorldClassifier, prompt_scores

MUG = parse_prompt("a blue checkered mug")[0]  # held out; its handle (+Y) tells the turn
SMALL = TextTo3DEvalConfig(num_views=12, resolution=32, batch_size=6)


@pytest.fixture(scope="module")
def classifier() -> WorldClassifier:
    return WorldClassifier.from_pretrained(device="cpu")


def turned_cameras(cameras: Cameras, degrees: float) -> Cameras:
    """The cameras turned about +Z by ``degrees`` (counter-clockwise): seeing through them is seeing
    the scene turned by ``-degrees``."""
    a = math.radians(degrees)
    R = torch.eye(4)
    R[0, 0], R[0, 1], R[1, 0], R[1, 1] = math.cos(a), -math.sin(a), math.sin(a), math.cos(a)
    return Cameras(R @ cameras.c2w, cameras.K, cameras.width, cameras.height)


def test_cameras_walk_the_circle_at_uniform_azimuth():
    cams = eval_cameras(SMALL)
    elevation, azimuth, distance = position_to_spherical(cams.centers)
    expected = torch.remainder(torch.arange(12) * 30.0 + 180.0, 360.0) - 180.0
    assert torch.allclose(torch.remainder(azimuth - expected + 180.0, 360.0) - 180.0, torch.zeros(12), atol=1e-3)
    assert torch.allclose(elevation, torch.full((12,), 15.0), atol=1e-3)
    assert torch.allclose(distance, torch.full((12,), 2.6), atol=1e-4)
    assert (cams.width, cams.height) == (32, 32)


@pytest.mark.parametrize("turns", [3, -2])
def test_turned_asset_is_recovered(classifier, turns):
    degrees = turns * 30.0  # the asset is the mug turned counter-clockwise about +Z by this much

    def render(cams):
        return render_reference(MUG, turned_cameras(cams, -degrees))

    # direction: the turned mug seen from azimuth 0 is the mug seen from azimuth -degrees
    front = eval_cameras(SMALL)[0]
    by_azimuth = render_reference(MUG, eval_cameras(SMALL)[(-turns) % 12])
    assert torch.allclose(render(front).alpha, by_azimuth.alpha, atol=1e-4)

    m = evaluate_scene(render, MUG, classifier, SMALL, "cpu")
    assert m["best_rotation_deg"] == pytest.approx(degrees)
    assert m["mask_iou"] > 0.999 and m["psnr"] > 50.0
    assert m["mask_iou_unrotated"] < 0.97 and m["psnr_unrotated"] < 30.0
    assert m["num_views"] == 12


class ScriptedClassifier:
    """Log-probabilities chosen per view: views 0-5 read the mug right, 6-8 the wrong colour,
    9-11 the wrong shape and pattern."""

    def log_probs(self, images):
        n = images.shape[0]
        out = {}
        for name, words in HEADS.items():
            truth = words.index(getattr(MUG, name)) if name != "bucket" else 0
            wrong = set(range(6, 9)) if name == "colour" else set(range(9, 12)) if name in ("shape", "pattern") \
                else set()
            picks = torch.tensor([(truth + 1) % len(words) if i in wrong else truth for i in range(n)])
            out[name] = torch.nn.functional.one_hot(picks, len(words)).float().mul(5.0).log_softmax(-1)
        return out


def test_scores_match_hand_counts():
    m = evaluate_scene(lambda c: render_reference(MUG, c), MUG, ScriptedClassifier(), SMALL, "cpu")
    assert m["r_precision"] == pytest.approx(6 / 12)
    assert m["colour_accuracy"] == pytest.approx(9 / 12)
    assert m["shape_accuracy"] == pytest.approx(9 / 12) and m["pattern_accuracy"] == pytest.approx(9 / 12)
    assert m["mask_iou"] == 1.0 and m["best_rotation_deg"] == 0.0 and m["psnr"] > 100.0


def test_shipped_classifier_reads_heldout_reference(classifier):
    config = TextTo3DEvalConfig(num_views=12, resolution=64, batch_size=12)
    obj = parse_prompt("an orange checkered cone")[0]
    assert is_heldout(obj)
    m = evaluate_scene(lambda c: render_reference(obj, c), obj, classifier, config, "cpu")
    # the same figures counted by hand from the heads
    images = render_reference(obj, eval_cameras(config)).rgb
    logp = classifier.log_probs(images)
    right = {name: logp[name].argmax(-1) == HEADS[name].index(getattr(obj, name))
             for name in ("shape", "colour", "pattern")}
    assert m["r_precision"] == pytest.approx(float((right["shape"] & right["colour"] & right["pattern"]).float().mean()))
    for name, hits in right.items():
        assert m[f"{name}_accuracy"] == pytest.approx(float(hits.float().mean()))
    assert m["r_precision"] >= 0.75
    assert torch.allclose(prompt_scores(classifier.log_probs(images[:2]), all_objects()),
                          classifier.prompt_log_likelihood(images[:2], all_objects()))


def test_evaluate_run_and_cli(tmp_path, classifier, capsys):
    config = tiny_text_to_3d("nerf", steps=2, turntable_frames=0)
    run = tmp_path / "run"
    text_to_3d("a red striped torus", config, run, progress=False)
    m = evaluate_run(run, classifier, SMALL, "cpu")
    assert (m["prompt"], m["representation"], m["guidance"], m["steps"]) == ("a red striped torus", "nerf", "cds", 2)
    for key in ("r_precision", "shape_accuracy", "colour_accuracy", "pattern_accuracy", "mask_iou"):
        assert 0.0 <= m[key] <= 1.0
    assert math.isfinite(m["psnr"]) and -180.0 < m["best_rotation_deg"] <= 180.0

    out = tmp_path / "eval.json"
    assert main(["eval", "text-to-3d", str(run), "--out", str(out), "--views", "4", "--device", "cpu"]) == 0
    written = json.loads(out.read_text())
    assert len(written["runs"]) == 1 and written["runs"][0]["num_views"] == 4
    assert written["mean"]["mask_iou"] == pytest.approx(written["runs"][0]["mask_iou"])
    assert "a red striped torus" in capsys.readouterr().out

    (run / "summary.json").unlink()
    with pytest.raises(UserError, match="summary.json"):
        evaluate_run(run, classifier, SMALL, "cpu")
    assert main(["eval", "text-to-3d", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err
