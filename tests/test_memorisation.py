"""Nearest-training-object distance: a turned copy of a training object is found at distance 0 with its turn,
the search equals a brute-force loop, and the summary reads samples against the held-out baseline."""

import math
import statistics

import pytest
import torch

from distill3d.cameras import orbit_cameras
from distill3d.errors import UserError
from distill3d.eval.memorisation import (
    MemorisationConfig,
    ObjectRing,
    PixelFeatures,
    heldout_ring,
    memorisation_summary,
    nearest_training,
    object_ring,
    ring_cameras,
    ring_features,
    subset,
    training_ring,
)
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects, train_objects

CONFIG = MemorisationConfig(views=4, rotation_steps=2, resolution=16, batch_size=32)
PIXELS = PixelFeatures(8)


def test_ring_cameras_are_evenly_spaced_at_the_framing():
    cams = ring_cameras(CONFIG)
    azimuth = torch.rad2deg(torch.atan2(cams.centers[:, 1], cams.centers[:, 0])) % 360
    assert torch.allclose(azimuth, torch.arange(8) * 45.0, atol=1e-3)
    assert torch.allclose(cams.centers.norm(dim=1), torch.full((8,), CONFIG.distance), atol=1e-4)
    assert len(ring_cameras(CONFIG, fine=False)) == 4


def test_a_turned_training_object_is_found_at_distance_zero_with_its_turn():
    mug = next(o for o in train_objects() if o.shape == "mug" and o.pattern == "two-tone")
    others = [o for o in subset(train_objects(), 4) if o != mug][:3]
    training = object_ring(others[:2] + [mug] + others[2:], PIXELS, CONFIG, fine=False)
    assert training.features.shape == (4, 4, 3 * 8 * 8)  # 4 objects, 4 views, 8 x 8 RGB
    # the mug turned by 135 degrees: its view q (ring azimuth 45 q) shows the mug from azimuth 45 q - 135
    turn = 135.0
    cams = orbit_cameras(CONFIG.elevation, torch.arange(8) * 45.0 - turn, CONFIG.distance, CONFIG.fovy, 16, 16)
    query = ring_features(render_reference(mug, cams).rgb[None], PIXELS)
    found = nearest_training(query, training, CONFIG)
    assert found.names == [mug.prompt] and found.index == [2]
    assert found.distance[0] < 1e-4 and found.rotation_deg == [turn]
    # not a copy at any other turn: the handle and the colours change the views
    unturned = orbit_cameras(CONFIG.elevation, torch.arange(8) * 45.0 - 90.0, CONFIG.distance, CONFIG.fovy, 16, 16)
    shifted = ring_features(render_reference(mug, unturned).rgb[None], PIXELS)[:, [1, 2, 3, 4, 5, 6, 7, 0]]
    assert nearest_training(shifted, ObjectRing([mug.prompt], training.features[2:3]), CONFIG).rotation_deg == [45.0]


def test_the_search_equals_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    query, train = torch.randn(3, 8, 5, generator=g).double(), torch.randn(6, 4, 5, generator=g).double()
    found = nearest_training(query, ObjectRing([f"o{i}" for i in range(6)], train), CONFIG)
    for q in range(3):
        best = (math.inf, None, None)
        for n in range(6):
            for r in range(8):
                d = math.sqrt(sum(float((query[q, (r + 2 * k) % 8] - train[n, k]).pow(2).sum()) for k in range(4)) / 4)
                best = min(best, (d, n, r), key=lambda t: t[0])
        assert found.distance[q] == pytest.approx(best[0], rel=1e-9)
        assert found.index[q] == best[1] and found.rotation_deg[q] == best[2] * 45.0
        assert found.names[q] == f"o{best[1]}"


def test_summary_against_the_heldout_baseline():
    samples, heldout = [0.5, 2.0, 0.1, 3.0, 1.0], [1.5, 0.8, 2.5]
    summary = memorisation_summary(samples, heldout)
    assert summary["ratio"] == pytest.approx(statistics.median(samples) / statistics.median(heldout))
    assert summary["share_closer_than_heldout"] == pytest.approx(2 / 5)            # 0.5 and 0.1 below 0.8
    assert summary["heldout_min"] == 0.8 and summary["samples"] == 5
    with pytest.raises(UserError):
        memorisation_summary(samples, [])


def test_heldout_objects_are_new_and_training_objects_are_copies():
    training = training_ring(PIXELS, CONFIG, count=3)
    assert training.names == [o.prompt for o in subset(train_objects(), 3)]
    baseline = heldout_ring(PIXELS, CONFIG, count=2)
    assert baseline.names == [o.prompt for o in subset(heldout_objects(), 2)]
    assert baseline.features.shape[:2] == (2, 8)
    heldout = nearest_training(baseline.features, training, CONFIG)
    assert min(heldout.distance) > 0.05                       # no held-out object is in the training set
    copies = object_ring(subset(train_objects(), 3), PIXELS, CONFIG, fine=True)
    found = nearest_training(copies.features, training, CONFIG)
    assert max(found.distance) < 1e-4 and found.names == training.names
    summary = memorisation_summary(found.distance, heldout.distance)
    assert summary["share_closer_than_heldout"] == 1.0 and summary["ratio"] < 1e-3


def test_ring_features_keep_objects_and_views_apart():
    renders = torch.rand(2, 3, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    features = ring_features(renders, PIXELS, batch_size=4)
    assert features.shape == (2, 3, 192)
    assert torch.allclose(features[1, 2], PIXELS.features(renders[1, 2][None])[0])
