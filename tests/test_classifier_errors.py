"""The bucket-boundary distance of benchmarks/classifier_errors.py."""

import importlib.util
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("classifier_errors", BENCHMARKS / "classifier_errors.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_distance_to_the_nearest_bucket_cut():
    distance = _module().degrees_to_bucket_boundary
    azimuth = torch.tensor([0.0, 40.0, 50.0, -130.0, 180.0, 90.0, 10.0, 200.0])
    elevation = torch.tensor([0.0, 0.0, 0.0, 10.0, 20.0, 58.0, 70.0, 85.0])
    expected = torch.tensor([45.0, 5.0, 5.0, 5.0, 40.0, 2.0, 10.0, 25.0])
    assert torch.allclose(distance(azimuth, elevation), expected)
