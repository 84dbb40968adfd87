"""The world's vocabulary, prompts, split, view buckets, shapes and CLI."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from distill3d.cli import main as cli_main
from distill3d.errors import UserError
from distill3d.world import heldout_objects, shapes, split
from distill3d.world.prompts import WorldObject, all_objects, all_prompts, num_objects, parse_prompt
from distill3d.world.views import view_bucket, view_bucket_index, view_prompt
from distill3d.world.vocabulary import (COLOURS, PATTERNS, SECONDARY_COLOURS, SHAPES, SHAPES_WITH_FRONT,
                                        VIEW_BUCKETS)


# ---------------------------------------------------------------------- vocabulary
def test_vocabulary_is_rich_and_colours_are_separated():
    assert {"sphere", "cube", "torus", "cylinder", "cone", "capsule", "mug", "house"} <= set(SHAPES)
    assert set(SHAPES_WITH_FRONT) <= set(SHAPES) and len(SHAPES_WITH_FRONT) >= 2
    assert PATTERNS == ("plain", "striped", "checkered", "two-tone")
    assert len(COLOURS) >= 8
    rgb = torch.tensor(list(COLOURS.values()))
    gaps = torch.cdist(rgb, rgb) + 10 * torch.eye(len(rgb))
    assert gaps.min() > 0.25
    assert max(COLOURS["white"]) < 0.95  # a white object stays darker than the white background


def test_secondary_colours_form_a_cycle_without_swaps():
    assert set(SECONDARY_COLOURS) == set(COLOURS) and set(SECONDARY_COLOURS.values()) == set(COLOURS)
    for colour, second in SECONDARY_COLOURS.items():
        assert second != colour and SECONDARY_COLOURS[second] != colour
        assert shapes.door_colour(colour) not in (colour, second)


# ---------------------------------------------------------------------- prompts
def test_every_prompt_round_trips_and_indices_are_stable():
    prompts = all_prompts()
    assert len(prompts) == len(set(prompts)) == num_objects() == len(SHAPES) * len(COLOURS) * len(PATTERNS)
    for i, (obj, text) in enumerate(zip(all_objects(), prompts)):
        assert obj.index == i and WorldObject.from_index(i) == obj
        assert parse_prompt(text) == (obj, None)
        for view in VIEW_BUCKETS:
            assert parse_prompt(f"{text}, {view} view") == (obj, view)
    assert WorldObject("red", "striped", "torus").prompt == "a red striped torus"
    assert WorldObject("orange", "plain", "cube").prompt == "an orange plain cube"


@pytest.mark.parametrize("text, expected, view", [
    ("a red striped torus", ("red", "striped", "torus"), None),
    ("  A   RED torus ", ("red", "plain", "torus"), None),
    ("red torus", ("red", "plain", "torus"), None),
    ("an orange two tone mug ,  Front View", ("orange", "two-tone", "mug"), "front"),
    ("a blue checkered house, overhead view", ("blue", "checkered", "house"), "overhead"),
    ("a white cone, back", ("white", "plain", "cone"), "back"),
])
def test_parse_prompt_is_tolerant(text, expected, view):
    assert parse_prompt(text) == (WorldObject(*expected), view)


@pytest.mark.parametrize("text, slot, words", [
    ("a teal striped torus", "colour", tuple(COLOURS)),
    ("a red spotted torus", "pattern", PATTERNS),
    ("a red striped donut", "shape", SHAPES),
    ("a torus red", "colour", tuple(COLOURS)),
    ("a red torus, diagonal view", "view", VIEW_BUCKETS),
])
def test_unknown_words_name_the_known_words(text, slot, words):
    with pytest.raises(UserError) as err:
        parse_prompt(text)
    message = str(err.value)
    assert f"known {slot}s" in message and all(w in message for w in words)


@pytest.mark.parametrize("text", ["", "a", "a very big red striped torus"])
def test_impossible_prompts_raise_user_errors(text):
    with pytest.raises(UserError):
        parse_prompt(text)
    with pytest.raises(UserError):
        WorldObject("teal", "plain", "torus")


# ---------------------------------------------------------------------- split
def test_heldout_split_properties():
    held, train = split.heldout_objects(), split.train_objects()
    assert not set(held) & set(train) and len(held) + len(train) == num_objects()
    assert 0.07 <= len(held) / num_objects() <= 0.13
    for attr, words in (("shape", SHAPES), ("colour", tuple(COLOURS)), ("pattern", PATTERNS)):
        assert {getattr(o, attr) for o in train} == set(words)
        assert {getattr(o, attr) for o in held} == set(words)  # every attribute is also evaluated
    for obj in all_objects():  # the documented rule, recomputed independently
        digest = hashlib.sha256(f"{split.HELDOUT_SALT}:{obj.prompt}".encode()).digest()
        assert split.is_heldout(obj) == (int.from_bytes(digest[:8], "big") % 1000 < split.HELDOUT_PER_MILLE)


def test_heldout_split_does_not_depend_on_process_state():
    random.seed(123)
    torch.manual_seed(123)
    here = [o.index for o in split.heldout_objects()]
    code = "from distill3d.world.split import heldout_objects; print([o.index for o in heldout_objects()])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)}).stdout
    assert other == f"{here}\n"


# ---------------------------------------------------------------------- views
@pytest.mark.parametrize("azimuth, elevation, bucket", [
    (0, 0, "front"), (45, 10, "front"), (-45, 30, "front"), (360, 0, "front"), (-30, -20, "front"),
    (46, 0, "side"), (90, 0, "side"), (-90, 45, "side"), (134, 60, "side"), (270, 0, "side"),
    (135, 0, "back"), (180, 0, "back"), (-180, 0, "back"), (-150, 59, "back"),
    (0, 61, "overhead"), (180, 90, "overhead"), (90, 60.5, "overhead"),
])
def test_view_buckets_at_known_angles(azimuth, elevation, bucket):
    assert view_bucket(azimuth, elevation) == bucket
    assert view_bucket(float(azimuth), float(elevation), "torus") == bucket


def test_views_are_batched():
    az, el = torch.tensor([0.0, 90.0, 180.0, 10.0]), torch.tensor([0.0, 0.0, 0.0, 80.0])
    assert view_bucket(az, el) == ["front", "side", "back", "overhead"]
    assert view_bucket_index(az, el).tolist() == [0, 1, 2, 3]
    obj = WorldObject("red", "striped", "torus")
    assert view_prompt(obj, 0.0, 0.0) == "a red striped torus, front view"
    objs = [obj, WorldObject("blue", "plain", "mug")]
    assert view_prompt(objs, np.array([100.0, 200.0]), 10.0) == ["a red striped torus, side view",
                                                                 "a blue plain mug, back view"]
    assert parse_prompt(view_prompt(obj, 170.0, 0.0)) == (obj, "back")


# ---------------------------------------------------------------------- shapes
def _grad(fn, p: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    eye = torch.eye(3, dtype=p.dtype) * h
    return torch.stack([(fn(p + e) - fn(p - e)) / (2 * h) for e in eye], dim=-1)


def _random_points(n: int = 20000, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1)


@pytest.mark.parametrize("shape", SHAPES)
def test_sdfs_are_distance_bounds_inside_their_radius(shape):
    fn = shapes.SHAPE_SDFS[shape]
    p = _random_points()
    q = p + 0.05 * _random_points(seed=1)
    assert ((fn(p) - fn(q)).abs() <= (p - q).norm(dim=-1) + 1e-6).all()  # 1-Lipschitz
    d = fn(p)
    assert (d < 0).float().mean() > 0.01
    assert p[d <= 0].norm(dim=-1).max() <= shapes.BOUNDING_RADII[shape] + 1e-6
    assert shapes.BOUNDING_RADII[shape] <= shapes.OBJECT_RADIUS
    # the bounding radius is tight: some surface point lies within 2% of it
    sphere_dirs = torch.nn.functional.normalize(_random_points(200000, seed=2), dim=-1)
    assert (fn(sphere_dirs * shapes.BOUNDING_RADII[shape] * 0.98) < 0.02).any()


@pytest.mark.parametrize("shape", ["sphere", "cube", "torus", "cylinder", "cone", "capsule"])
def test_primitive_sdfs_are_exact(shape):
    fn = shapes.SHAPE_SDFS[shape]
    p = _random_points(5000, seed=3)
    g = _grad(fn, p).norm(dim=-1)
    assert ((g - 1).abs() < 1e-3).float().mean() > 0.97  # eikonal away from the medial axis
    # stepping by the distance along the gradient lands on the surface
    d = fn(p)[:, None]
    on_surface = p - d * torch.nn.functional.normalize(_grad(fn, p), dim=-1)
    assert (fn(on_surface).abs() < 1e-3).float().mean() > 0.97


def test_analytic_values_of_the_shapes():
    z = torch.tensor
    assert shapes.sphere(z([[0.0, 0.0, 1.0]])).item() == pytest.approx(1.0 - shapes.SPHERE_RADIUS)
    assert shapes.cone(z([[0.0, 0.0, shapes.CONE_APEX_Z + 0.3]])).item() == pytest.approx(0.3)
    assert shapes.cone(z([[0.0, 0.0, shapes.CONE_BASE_Z - 0.2]])).item() == pytest.approx(0.2)
    torus_top = z([[shapes.TORUS_MAJOR_RADIUS, 0.0, shapes.TORUS_MINOR_RADIUS + 0.1]])
    assert shapes.torus(torus_top).item() == pytest.approx(0.1)
    assert shapes.torus(z([[0.0, 0.0, 0.0]])).item() > 0  # the hole is empty
    assert shapes.cube(z([[shapes.CUBE_HALF_SIZE + 0.2, 0.0, 0.0]])).item() == pytest.approx(0.2)
    # the mug's handle sticks out on +Y, the house's door out of the +X wall
    handle = shapes.MUG_RADIUS + shapes.MUG_HANDLE_RADIUS
    assert shapes.mug(z([[0.0, handle, 0.0]])).item() < 0 < shapes.mug(z([[0.0, -handle, 0.0]])).item()
    assert shapes.mug(z([[0.0, 0.0, 0.2]])).item() > 0  # a cup is hollow
    door = z([[shapes.HOUSE_DOOR_MAX[0] - 0.01, 0.0, -0.25]])
    assert shapes.house(door).item() < 0 < shapes.house(door * z([-1.0, 1.0, 1.0])).item()


def test_albedo_follows_the_documented_patterns():
    p = _random_points(4000, seed=4).float()
    red, white = torch.tensor(COLOURS["red"]), torch.tensor(COLOURS["white"])

    def share_secondary(pattern):
        a = shapes.object_albedo(WorldObject("red", pattern, "sphere"), p)
        is_red, is_white = (a == red).all(-1), (a == white).all(-1)
        assert (is_red | is_white).all()
        return is_white

    assert not share_secondary("plain").any()
    assert torch.equal(share_secondary("two-tone"), p[:, 2] < 0)
    assert 0.3 < share_secondary("striped").float().mean() < 0.5
    assert 0.4 < share_secondary("checkered").float().mean() < 0.6
    house = WorldObject("red", "plain", "house")
    door = torch.tensor([[shapes.HOUSE_DOOR_MAX[0], 0.0, -0.25]])
    wall = torch.tensor([[shapes.HOUSE_WALLS_MAX[0], 0.3, -0.25]])
    assert shapes.object_albedo(house, door)[0].tolist() == pytest.approx(COLOURS[shapes.door_colour("red")])
    assert shapes.object_albedo(house, wall)[0].tolist() == pytest.approx(COLOURS["red"])


@pytest.mark.parametrize("pattern", ["striped", "checkered", "two-tone"])
def test_no_face_lies_on_a_pattern_boundary(pattern):
    """Surface points keep their colour when nudged along the normal: no face lies on, and no
    surface touches, a pattern boundary (either would flicker with the hit tolerance)."""
    for shape in SHAPES:
        fn = shapes.SHAPE_SDFS[shape]
        p = _random_points(4000, seed=5)
        for _ in range(6):  # project onto the surface
            p = p - fn(p)[:, None] * torch.nn.functional.normalize(_grad(fn, p), dim=-1)
        smooth = (_grad(fn, p).norm(dim=-1) - 1).abs() < 1e-3  # not on an edge or apex
        p = p[(fn(p).abs() < 1e-5) & smooth]
        n = torch.nn.functional.normalize(_grad(fn, p), dim=-1)
        flips = shapes.pattern_mask(pattern, p + 2e-3 * n) != shapes.pattern_mask(pattern, p - 2e-3 * n)
        assert flips.float().mean() < 0.05, shape  # a face or tangent line on a boundary: > 0.1


# ---------------------------------------------------------------------- CLI
def test_cli_list_and_render(tmp_path, capsys):
    assert cli_main(["world", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{num_objects()} combinations" in listing and "overhead above 60" in listing
    assert all(o.prompt in listing for o in split.heldout_objects())
    out = tmp_path / "mug.png"
    assert cli_main(["world", "render", "--prompt", "a blue mug, back view", "--resolution", "24",
                     "--supersample", "1", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    image = np.asarray(Image.open(out))
    assert image.shape == (24, 24, 4) and image[12, 12, 3] == 255 and image[0, 0, 3] == 0
    assert image[12, 12, 2] > image[12, 12, 0]  # blue


@pytest.mark.parametrize("argv", [
    ["world", "render", "--prompt", "a teal cube", "--out", "x.png"],
    ["world", "render", "--prompt", "a red cube, front view", "--azimuth", "90", "--out", "x.png"],
    ["world", "render", "--prompt", "a red cube", "--distance", "0.3", "--out", "x.png"],
    ["world", "render", "--prompt", "a red cube", "--out", "x.jpg"],
])
def test_cli_bad_input_is_a_user_error(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli_main(argv) == 2
    assert "distill3d: error:" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_dataset_calls_the_writer(tmp_path, monkeypatch, capsys):
    import distill3d.data.world_datasets as world_datasets

    calls = []
    monkeypatch.setattr(world_datasets, "write_world_dataset",
                        lambda *a, **k: calls.append((a, k)) or a[1])
    argv = ["world", "dataset", "multiview-groups", "--out", str(tmp_path), "--count", "3", "--split", "heldout",
            "--resolution", "32", "--seed", "7", "--resume", "--views", "8", "--targets", "2"]
    assert cli_main(argv) == 0
    assert calls == [(("multiview-groups", tmp_path, 3), dict(split="heldout", resolution=32, seed=7, resume=True,
                                                              views=8, targets=2, objects=None))]
    assert capsys.readouterr().out.strip() == str(tmp_path)
    assert cli_main(["world", "dataset", "multiview", "--out", str(tmp_path), "--count", "0"]) == 2
    assert len(calls) == 1
    assert cli_main(["world", "dataset", "multiview", "--out", str(tmp_path), "--count", "1",
                     "--prompt", "a blue cube", "--prompt", "a red torus"]) == 0
    assert calls[-1][1]["objects"] == [WorldObject("blue", "plain", "cube"), WorldObject("red", "plain", "torus")]


def test_world_source_keeps_chosen_objects_inside_their_split():
    from distill3d.data.world_datasets import WorldSource

    held = heldout_objects()[0]
    assert WorldSource("heldout", objects=[held, held]).items == [held]
    with pytest.raises(UserError, match="not in the train split"):
        WorldSource("train", objects=[held])
