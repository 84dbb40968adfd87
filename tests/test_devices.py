"""``pick_device``: the CPU fallback, clear errors, and one GPU per process under a launcher."""

import pytest
import torch

from distill3d.devices import pick_device
from distill3d.errors import UserError


@pytest.fixture
def two_gpus(monkeypatch):
    """torch sees two GPUs; ``set_device`` calls are recorded, not made."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: current.append(torch.device(device)))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return current


def test_auto_is_the_cpu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu") and pick_device(None) == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA device"):
        pick_device("cuda")


def test_alone_cuda_stays_unnumbered(two_gpus):
    assert pick_device("auto") == torch.device("cuda") and two_gpus == []


@pytest.mark.parametrize("local_rank, expected", [("0", 0), ("1", 1), ("3", 1)])
def test_each_launched_process_takes_its_own_gpu(two_gpus, monkeypatch, local_rank, expected):
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    for asked in ("auto", "cuda", None):
        assert pick_device(asked) == torch.device("cuda", expected)
    assert set(two_gpus) == {torch.device("cuda", expected)}


def test_a_numbered_device_or_the_cpu_is_kept_under_a_launcher(two_gpus, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert pick_device("cuda:0") == torch.device("cuda", 0)
    assert pick_device("cpu") == torch.device("cpu") and two_gpus == []
