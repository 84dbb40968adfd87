"""Classifier training labels: which images carry their pattern label."""

import json

import torch

from distill3d.cli import main
from distill3d.random_streams import Generators
from distill3d.world import WorldObject, all_objects, heldout_objects
from distill3d.world_models.classifier import HEADS
from distill3d.world_models.classifier_training import ClassifierTask, classifier_loss, heldout_looks, pattern_known, tiny_config


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


def test_masked_pattern_labels_leave_the_pattern_of_other_images_trained():
    config = tiny_config()
    assert config.pattern_labels == "off-heldout-looks"
    config.recolour_fraction = 0.0  # every image in its own colours: only the held-out looks lose the label
    task = ClassifierTask(config)
    looks = heldout_looks()
    inside = [o for o in task.training_objects() if looks[o.index]]
    task.training_objects = lambda: inside  # a pool of held-out looks only: no pattern label at all
    model = task.build_model()
    pool = task.build_source(torch.device("cpu"))
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    pool.fill(gens.data, progress=False)
    task.loss(model, pool, 8, gens).backward()
    assert model.heads["pattern"].weight.grad.abs().sum() == 0
    assert model.heads["shape"].weight.grad.abs().sum() > 0


def test_cli_pattern_labels_reach_the_classifier_only(tmp_path, capsys):
    args = ["teacher", "train", "classifier", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "m"), "--pattern-labels", "recoloured"]) == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["pattern_labels"] == "recoloured"
    capsys.readouterr()
    teacher = ["teacher", "train", "text-to-image", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(teacher + ["--out", str(tmp_path / "t"), "--pattern-labels", "recoloured"]) == 2
    assert "classifier" in capsys.readouterr().err
