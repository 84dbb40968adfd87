"""Recolouring by colour mixing (distill3d.world_models.classifier_colour_mix)."""

import json

import torch

from distill3d.cameras import orbit_cameras
from distill3d.cli import main
from distill3d.random_streams import Generators
from distill3d.world import COLOURS, WorldObject, all_objects, heldout_objects
from distill3d.world.reference_render import render_reference
from distill3d.world_models.classifier_colour_mix import (ColourTable, allowed_targets, is_grey, mix_colours, mixing_matrices,
                                                  random_targets)
from distill3d.world_models.classifier_recolour import LOOKALIKE_DISTANCE
from distill3d.world_models.classifier_training import ClassifierTask, tiny_config


def _renders(obj: WorldObject) -> torch.Tensor:
    cams = orbit_cameras(torch.tensor([20.0, 45.0]), torch.tensor([30.0, 200.0]), torch.full((2,), 2.5),
                         torch.full((2,), 40.0), 24, 24)
    return render_reference([obj, obj], cams).rgb.permute(0, 3, 1, 2) * 2.0 - 1.0


def test_a_mixing_matrix_turns_a_render_into_the_render_in_the_target_colours():
    table = ColourTable.build()
    source, target = WorldObject("orange", "striped", "torus"), WorldObject("purple", "striped", "torus")
    M = mixing_matrices(table.albedos[[source.index] * 2], table.albedos[[target.index] * 2])
    assert torch.allclose(M.sum(dim=2), torch.ones(2, 3), atol=1e-5)  # white stays white
    mixed = torch.einsum("bij,bjhw->bihw", M, _renders(source))
    reference = _renders(target)
    assert (_renders(source) - reference).abs().max() > 0.5
    assert (mixed - reference).abs().max() < 1e-4


def test_grey_albedos_keep_their_colour_and_the_other_one_moves():
    table = ColourTable.build()
    red = WorldObject("red", "striped", "cube")  # red with white stripes
    source = table.albedos[[red.index]]
    target = torch.tensor([[[0.2, 0.3, 0.8], list(COLOURS["white"])]])
    M = mixing_matrices(source, target)[0]
    assert torch.allclose(M @ source[0, 0], target[0, 0], atol=1e-5)
    assert torch.allclose(M @ source[0, 1], source[0, 1], atol=1e-5)


def test_random_targets_never_look_like_a_heldout_object_and_keep_the_pattern_visible():
    table = ColourTable.build()
    objects = [o for o in all_objects() for _ in range(20)]
    index = torch.tensor([o.index for o in objects])
    targets, found = random_targets(index, table, torch.Generator().manual_seed(0))
    assert found.float().mean() > 0.95
    assert allowed_targets(targets[found][:, None], index[found], table).all()
    source = table.albedos[index]
    assert torch.equal(targets[is_grey(source)], source[is_grey(source)])
    heldout = heldout_objects()
    for obj, c, ok in zip(objects, targets, found):
        if not ok:
            continue
        assert (c[0] - c[1]).norm() >= LOOKALIKE_DISTANCE
        if obj.pattern == "plain":
            for twin in heldout:
                if (twin.shape, twin.pattern) == (obj.shape, obj.pattern):
                    assert (c[0] - torch.tensor(COLOURS[twin.colour])).norm() >= LOOKALIKE_DISTANCE, obj
    # a draw right on a held-out twin is refused
    twin = next(o for o in heldout if o.pattern == "plain")
    trainee = next(o for o in all_objects() if (o.shape, o.pattern) == (twin.shape, twin.pattern)
                   and o not in heldout and not is_grey(torch.tensor(COLOURS[o.colour])))
    draw = table.albedos[[twin.index]][:, None]
    assert not allowed_targets(draw, torch.tensor([trainee.index]), table).any()


def test_mix_colours_changes_only_the_picked_images_and_hides_their_colour_labels():
    objects = [o for o in all_objects() if o.shape == "cube" and o.colour in ("red", "blue", "orange")][:8]
    index = torch.tensor([o.index for o in objects])
    x = torch.rand(8, 3, 6, 6) * 2 - 1
    y, known = mix_colours(x, index, 0.5, ColourTable.build(), torch.Generator().manual_seed(1))
    assert 0 < int((~known).sum()) < 8
    assert torch.equal(y[known], x[known]) and not torch.allclose(y[~known], x[~known])
    same, all_known = mix_colours(x, index, 0.0, ColourTable.build(), torch.Generator().manual_seed(1))
    assert torch.equal(same, x) and bool(all_known.all())


def test_a_tiny_classifier_trains_with_mixed_colours():
    config = tiny_config()
    config.recolour = "mix"
    task = ClassifierTask(config)
    pool = task.build_source(torch.device("cpu"))
    gens = Generators.seeded(0, 0, torch.device("cpu"))
    pool.fill(gens.data, progress=False)
    loss = task.loss(task.build_model(), pool, 8, gens)
    assert torch.isfinite(loss)


def test_cli_recolour_reaches_the_classifier_config_only(tmp_path, capsys):
    args = ["teacher", "train", "classifier", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "m"), "--recolour", "mix", "--recolour-fraction", "0.75"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["recolour"], config["recolour_fraction"]) == ("mix", 0.75)
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "bad"), "--recolour-fraction", "1.5"]) == 2
    assert "recolour" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main(args + ["--out", str(tmp_path / "s"), "--recolour", "mix", "--recolour-guard", "shape",
                        "--skip-heldout-colour-shapes"]) == 0
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert (config["recolour_guard"], config["skip_heldout_colour_shapes"]) == ("shape", True)
    teacher = ["teacher", "train", "multiview", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(teacher + ["--out", str(tmp_path / "mv"), "--recolour", "mix"]) == 2
    assert "classifier" in capsys.readouterr().err


def test_the_shape_guard_keeps_random_colours_away_from_every_heldout_look_of_the_shape():
    table = ColourTable.build("shape")
    objects = [o for o in all_objects() if o.shape == "sphere" for _ in range(10)]
    index = torch.tensor([o.index for o in objects])
    targets, found = random_targets(index, table, torch.Generator().manual_seed(2))
    looks = torch.tensor([COLOURS[o.colour] for o in heldout_objects() if o.shape == "sphere"])
    assert found.float().mean() > 0.5
    assert (torch.cdist(targets[found][:, 0], looks) >= LOOKALIKE_DISTANCE).all()


def test_skipping_heldout_colour_shapes_drops_every_pattern_of_those_looks():
    config = tiny_config()
    config.skip_heldout_colour_shapes = True
    objects = ClassifierTask(config).training_objects()
    looks = {(o.shape, o.colour) for o in heldout_objects()}
    assert objects and not any((o.shape, o.colour) in looks for o in objects)
    assert {o.shape for o in objects} == {o.shape for o in all_objects()}
