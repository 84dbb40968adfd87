"""World classifier: labels, augmentation, a short training run on real renders, loading."""

import json
import math
from dataclasses import asdict

import pytest
import torch

from distill3d.errors import UserError
from distill3d.eval.teacher_quality import (bucket_misses_by_degrees, classifier_passed, eval_objects,
                                            evaluate_classifier)
from distill3d.model_folder import resolve_model_folder
from distill3d.model_folder import save_weights
from distill3d.random_streams import Generators
from distill3d.training.run_dir import write_json_atomic
from distill3d.world import COLOURS, PATTERNS, SHAPES, WorldObject, all_objects, heldout_objects
from distill3d.world.vocabulary import SHAPES_WITH_FRONT
from distill3d.world_models.classifier import DEFAULT_CLASSIFIER, HEADS, WorldClassifier, attribute_labels, has_front
from distill3d.world_models.classifier_recolour import (CHANNEL_PERMUTATIONS, LOOKALIKE_DISTANCE,
                                                allowed_permutations, looks_like_heldout, recolour)
from distill3d.world_models.classifier_training import ClassifierTask, ClassifierTrainConfig, augment, classifier_loss, tiny_config


def test_attribute_labels_invert_the_object_index():
    objects = all_objects()[::5]
    labels = attribute_labels(torch.tensor([o.index for o in objects]))
    assert [SHAPES[i] for i in labels["shape"]] == [o.shape for o in objects]
    assert [tuple(COLOURS)[i] for i in labels["colour"]] == [o.colour for o in objects]
    assert [PATTERNS[i] for i in labels["pattern"]] == [o.pattern for o in objects]
    assert has_front(torch.tensor([SHAPES.index("mug"), SHAPES.index("torus")])).tolist() == [True, False]


def test_augmentation_keeps_the_colours():
    config = tiny_config()
    x = torch.rand(64, 3, 16, 16) * 2 - 1
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    y = augment(x, config, gens)
    assert y.shape == x.shape
    assert torch.allclose(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=0.05)


def test_bucket_loss_only_counts_shapes_with_a_front():
    logits = {name: torch.zeros(2, len(words)) for name, words in HEADS.items()}
    logits["bucket"][0, 0] = 50.0  # a confident wrong bucket on the torus does not matter
    torus, mug = WorldObject("red", "plain", "torus"), WorldObject("red", "plain", "mug")
    index = torch.tensor([torus.index, mug.index])
    base = classifier_loss(logits, index, torch.tensor([2, 1]))
    uniform = math.log(len(SHAPES)) + math.log(len(COLOURS)) + math.log(len(PATTERNS)) + math.log(4)
    assert math.isclose(float(base), uniform, rel_tol=1e-5)
    logits["bucket"][1, 0] = 50.0  # on the mug it does
    assert classifier_loss(logits, index, torch.tensor([2, 1])) > base + 10


def test_tiny_classifier_training_on_renders_reduces_the_loss():
    task = ClassifierTask(tiny_config())
    torch.manual_seed(0)
    model = task.build_model()
    pool = task.build_source(torch.device("cpu"))
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    pool.fill(gens.data, progress=False)
    assert len(pool) == 16 and set(pool.object_index.tolist()) <= {o.index for o in all_objects()}
    assert not set(pool.object_index.tolist()) & {o.index for o in heldout_objects()}
    x = pool.images_float(torch.arange(len(pool)))[:, 0]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = classifier_loss(model(x), pool.object_index, pool.bucket[:, 0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_classifier_loads_and_evaluates(tmp_path):
    config = tiny_config()
    torch.manual_seed(0)
    model = WorldClassifier(config.net)
    write_json_atomic(tmp_path / "config.json", asdict(config))
    save_weights(model, tmp_path / "model.safetensors", torch.float32)
    loaded = WorldClassifier.from_pretrained(tmp_path, device="cpu")
    images = torch.rand(3, 40, 40, 3)  # any size is resized to the classifier's
    with torch.no_grad():
        assert torch.equal(loaded(loaded.prepare(images))["shape"], model.eval()(model.prepare(images))["shape"])
    objects = [WorldObject("red", "plain", "torus"), WorldObject("blue", "striped", "mug")]
    scores = loaded.prompt_log_likelihood(images, objects)
    assert scores.shape == (3, 2) and (scores <= 0).all()
    assert set(loaded.predict(images)) == set(HEADS)
    metrics = evaluate_classifier(loaded, count=24)  # the held-out mugs and houses come last: 5 of 24
    assert {"shape_accuracy", "colour_accuracy", "pattern_accuracy", "bucket_accuracy_front_shapes", "passed"} <= set(metrics)
    assert sum(metrics["shape_errors"].values()) == round((1.0 - metrics["shape_accuracy"]) * 24)
    bands = metrics["bucket_misses_by_degrees_to_cut"].values()
    front = sum(band["views"] for band in bands)
    assert front == sum(o.shape in SHAPES_WITH_FRONT for o in eval_objects(24)) == 5
    assert sum(band["misses"] for band in bands) == round((1.0 - metrics["bucket_accuracy_front_shapes"]) * front)
    assert all(key.split(" -> ")[1] in HEADS["shape"] for key in metrics["shape_errors"])
    with pytest.raises(UserError):
        WorldClassifier.from_pretrained(tmp_path / "missing")


def test_the_classifier_passes_only_with_the_view_bucket_too():
    metrics = {"shape_accuracy": 1.0, "colour_accuracy": 0.99, "pattern_accuracy": 0.98,
               "bucket_accuracy_front_shapes": 0.98}
    assert classifier_passed(metrics)
    assert not classifier_passed({**metrics, "bucket_accuracy_front_shapes": 0.9711})
    assert not classifier_passed({**metrics, "pattern_accuracy": 0.9771})


def test_recolouring_permutes_channels_and_hides_only_those_colour_labels():
    objects = [o for o in all_objects() if o.shape == "cube"][:16]
    index = torch.tensor([o.index for o in objects])
    x = torch.rand(16, 3, 8, 8) * 2 - 1
    allowed = allowed_permutations()
    gen = torch.Generator().manual_seed(0)
    y, colour_known = recolour(x, index, 0.5, allowed, gen)
    assert 0 < int((~colour_known).sum()) < 16
    for i in range(16):
        if colour_known[i]:
            assert torch.equal(y[i], x[i])
        else:
            matches = [p for p in CHANNEL_PERMUTATIONS if torch.equal(y[i], x[i][list(p)])]
            assert matches and allowed[index[i], CHANNEL_PERMUTATIONS.index(matches[0])]
    same, known = recolour(x, index, 0.0, allowed, gen)
    assert torch.equal(same, x) and bool(known.all())


def test_no_allowed_recolouring_looks_like_a_heldout_object():
    allowed = allowed_permutations()
    green_sphere = WorldObject("green", "plain", "sphere")  # (G, R, B) order makes it nearly red: held out
    assert looks_like_heldout(green_sphere, (1, 0, 2))
    assert not allowed[green_sphere.index, CHANNEL_PERMUTATIONS.index((1, 0, 2))]
    heldout = heldout_objects()
    for obj in all_objects():
        for j, p in enumerate(CHANNEL_PERMUTATIONS):
            if not allowed[obj.index, j] or obj.pattern != "plain":
                continue
            permuted = torch.tensor(COLOURS[obj.colour])[list(p)]
            for twin in heldout:
                if (twin.shape, twin.pattern) == (obj.shape, obj.pattern):
                    assert (permuted - torch.tensor(COLOURS[twin.colour])).norm() >= LOOKALIKE_DISTANCE, (obj, p)
    assert allowed.float().mean() > 0.9  # the guard removes few permutations


def test_colour_loss_ignores_images_without_a_colour_label():
    logits = {name: torch.zeros(2, len(words)) for name, words in HEADS.items()}
    index = torch.tensor([WorldObject("red", "plain", "torus").index, WorldObject("blue", "plain", "torus").index])
    bucket = torch.tensor([0, 0])
    known = torch.tensor([True, False])
    base = classifier_loss(logits, index, bucket, known)
    logits["colour"][1, 0] = 40.0  # a confident wrong colour on the recoloured image does not matter
    assert torch.isclose(classifier_loss(logits, index, bucket, known), base)
    logits["colour"][0, 0] = 40.0  # the red image's colour is now right
    assert classifier_loss(logits, index, bucket, known) < base - 1.0


def test_the_default_training_command_is_the_shipped_classifiers_recipe():
    _, shipped = resolve_model_folder(DEFAULT_CLASSIFIER, "world-classifier")
    assert json.loads(json.dumps(asdict(ClassifierTrainConfig()), sort_keys=True)) == json.loads(
        json.dumps(shipped, sort_keys=True))


def test_bucket_misses_are_counted_by_degrees_to_the_cut():
    to_cut = torch.tensor([0.0, 0.5, 0.51, 2.9, 3.0, 12.0, 44.0])
    right = torch.tensor([False, True, False, False, True, False, True])
    bands = bucket_misses_by_degrees(to_cut, right)
    assert list(bands) == ["0-0.5", "0.5-1", "1-2", "2-3", "3-5", "5-10", "10-180"]
    assert bands["0-0.5"] == {"views": 2, "misses": 1} and bands["0.5-1"] == {"views": 1, "misses": 1}
    assert bands["2-3"] == {"views": 2, "misses": 1} and bands["1-2"] == {"views": 0, "misses": 0}
    assert bands["10-180"] == {"views": 2, "misses": 1}
