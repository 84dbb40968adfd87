"""Classifier training labels: which images carry their pattern label, and the camera-angle head."""

import json
import math

import torch

from distill3d.cli import main
from distill3d.diffusion.train import Generators
from distill3d.eval.classifier import (HEADS, ClassifierTask, WorldClassifier, classifier_loss, heldout_looks,
                                       pattern_known, tiny_config, view_angle_target)
from distill3d.world import WorldObject, all_objects, heldout_objects


def test_heldout_looks_mark_every_object_sharing_shape_and_colour_with_a_heldout_one():
    looks = heldout_looks()
    assert looks.shape == (len(all_objects()),)
    heldout = heldout_objects()
    for obj in heldout:
        assert looks[obj.index]
    pairs = {(o.shape, o.colour) for o in heldout}
    for obj in all_objects()[::7]:
        assert bool(looks[obj.index]) == ((obj.shape, obj.colour) in pairs)
    assert 0 < looks.float().mean() < 0.5


def test_pattern_known_rules():
    looks = heldout_looks()
    inside = next(o for o in all_objects() if looks[o.index] and o not in heldout_objects())
    outside = next(o for o in all_objects() if not looks[o.index])
    index = torch.tensor([inside.index, inside.index, outside.index, outside.index])
    colour_known = torch.tensor([True, False, True, False])  # False: shown in other colours
    assert pattern_known("all", index, colour_known, looks).tolist() == [True] * 4
    assert pattern_known("recoloured", index, colour_known, looks).tolist() == [False, True, False, True]
    assert pattern_known("off-heldout-looks", index, colour_known, looks).tolist() == [False, True, True, True]


def test_pattern_loss_ignores_images_without_a_pattern_label():
    logits = {name: torch.zeros(2, len(words)) for name, words in HEADS.items()}
    index = torch.tensor([WorldObject("red", "plain", "torus").index, WorldObject("blue", "plain", "torus").index])
    bucket, known = torch.tensor([0, 0]), torch.tensor([True, False])
    base = classifier_loss(logits, index, bucket, pattern_known=known)
    logits["pattern"][1, 1] = 40.0  # a confident wrong pattern where the label is hidden does not matter
    assert torch.isclose(classifier_loss(logits, index, bucket, pattern_known=known), base)
    logits["pattern"][0, 1] = 40.0  # where it is known it does
    assert classifier_loss(logits, index, bucket, pattern_known=known) > base + 10


def test_view_angle_target_and_loss_count_only_shapes_with_a_front():
    target = view_angle_target(torch.tensor([0.0, 90.0]), torch.tensor([0.0, 30.0]))
    assert torch.allclose(target, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]), atol=1e-6)
    torus, mug = WorldObject("red", "plain", "torus"), WorldObject("red", "plain", "mug")
    logits = {name: torch.zeros(2, len(words)) for name, words in HEADS.items()}
    logits["view_angle"] = target.clone()
    index, bucket = torch.tensor([torus.index, mug.index]), torch.tensor([0, 2])
    base = classifier_loss(logits, index, bucket, view_angle=target, view_angle_weight=1.0)
    assert math.isclose(float(base), float(classifier_loss(logits, index, bucket)), rel_tol=1e-6)
    logits["view_angle"][0] += 3.0  # wrong angle on the torus (no front): no cost
    assert torch.isclose(classifier_loss(logits, index, bucket, view_angle=target, view_angle_weight=1.0), base)
    logits["view_angle"][1, 0] += 2.0  # on the mug: 2 x 2.0^2
    loss = classifier_loss(logits, index, bucket, view_angle=target, view_angle_weight=2.0)
    assert math.isclose(float(loss - base), 8.0, rel_tol=1e-5)


def test_tiny_task_with_angle_head_and_masked_patterns_trains_a_step():
    config = tiny_config()
    config.net.view_angle_head, config.view_angle_weight = True, 1.0
    config.pattern_labels = "off-heldout-looks"
    task = ClassifierTask(config)
    mugs = [o for o in task.training_objects() if o.shape == "mug"]  # a shape with a front: the angle counts
    task.training_objects = lambda: mugs
    model = task.build_model()
    pool = task.build_pool(torch.device("cpu"))
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    pool.fill(gens.data, progress=False)
    loss = task.loss(model, pool, 8, gens)
    loss.backward()
    assert torch.isfinite(loss) and model.view_angle.weight.grad.abs().sum() > 0


def test_cli_angle_head_and_pattern_labels(tmp_path, capsys):
    args = ["teacher", "train", "classifier", "--tiny", "--steps", "1", "--device", "cpu"]
    out = tmp_path / "m"
    assert main(args + ["--out", str(out), "--view-angle-weight", "0.5", "--pattern-labels", "recoloured",
                        "--export-to", str(tmp_path / "export")]) == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["view_angle_weight"], config["net"]["view_angle_head"], config["pattern_labels"]) == (
        0.5, True, "recoloured")
    loaded = WorldClassifier.from_pretrained(tmp_path / "export", device="cpu")
    assert loaded.view_angle is not None and set(loaded.predict(torch.rand(2, 16, 16, 3))) == set(HEADS)
    capsys.readouterr()
    assert main(args + ["--out", str(out), "--resume", "--steps", "2", "--view-angle-weight", "0"]) == 2
    assert "angle head" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "bad"), "--view-angle-weight", "-1"]) == 2
    assert "view-angle-weight" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    teacher = ["teacher", "train", "text-to-image", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(teacher + ["--out", str(tmp_path / "t"), "--pattern-labels", "recoloured"]) == 2
    assert "classifier" in capsys.readouterr().err
