"""Views in which an attribute cannot be read (distill3d.eval.view_ambiguity)."""

import torch

from distill3d.cameras import orbit_cameras
from distill3d.eval.view_ambiguity import counterpart, degrees_to_bucket_cut, pattern_hidden
from distill3d.world import WorldObject
from distill3d.world.reference_render import render_reference


def test_distance_to_the_nearest_bucket_cut():
    azimuth = torch.tensor([0.0, 40.0, 50.0, -130.0, 180.0, 90.0, 10.0, 200.0])
    elevation = torch.tensor([0.0, 0.0, 0.0, 10.0, 20.0, 58.0, 70.0, 85.0])
    expected = torch.tensor([45.0, 5.0, 5.0, 5.0, 40.0, 2.0, 10.0, 25.0])
    assert torch.allclose(degrees_to_bucket_cut(azimuth, elevation), expected)


def test_a_two_tone_pattern_is_hidden_from_high_above_and_seen_from_the_side():
    objects = [WorldObject("red", "two-tone", "sphere"), WorldObject("red", "plain", "sphere"),
               WorldObject("red", "two-tone", "sphere"), WorldObject("red", "striped", "sphere")]
    assert counterpart(objects[0]) == objects[1] and counterpart(objects[3]) == objects[3]
    cams = orbit_cameras(torch.tensor([85.0, 85.0, 0.0, 85.0]), torch.zeros(4), torch.full((4,), 2.5),
                         torch.full((4,), 40.0), 32, 32)
    images = render_reference(objects, cams).rgb
    assert pattern_hidden(objects, cams, images).tolist() == [True, True, False, False]
