"""The shared trainer under torchrun with two CPU processes (gloo): the gradients are shared, and a run
resumes on another number of processes. Tiny HoloFusion models; the GPU scaling figures are measured
elsewhere (benchmarks/RESULTS.md)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

TRAIN = ["-m", "distill3d", "holofusion", "train", "--tiny", "--device", "cpu", "--log-every", "1"]


def launch(processes: int, *args: str) -> subprocess.CompletedProcess:
    """``distill3d holofusion train`` under torchrun (``processes`` > 1) or alone."""
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    done = subprocess.run([sys.executable, *runner, *TRAIN, *args], check=False, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(run) -> dict:
    return load_file(str(run / "model.safetensors"))


def steps_logged(run) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mp")
    launch(1, "--out", str(root / "one"), "--steps", "2")
    two = launch(2, "--out", str(root / "two"), "--steps", "2")
    launch(2, "--out", str(root / "one"), "--resume", "--steps", "4")     # 1 process, then 2
    launch(1, "--out", str(root / "two"), "--resume", "--steps", "4")     # 2 processes, then 1
    return root, two


def test_two_processes_share_their_gradients(runs, tmp_path):
    """Rank 0 of two processes draws the same data and noise as a process alone (streams are seeded by
    rank), so its weights differ from the lone run's only through rank 1's gradients."""
    root, two = runs
    alone = tmp_path / "alone"
    launch(1, "--out", str(alone), "--steps", "2")
    shared = root / "two"
    assert (shared / "pool-rank1.safetensors").is_file()
    first, second = weights(alone), weights(shared)   # after 2 steps; the resumed runs are checked below
    assert any(not torch.equal(first[k], second[k]) for k in first)
    assert two.stdout.count("holofusion: step 2/2 finished") == 1                # one report, from rank 0


def test_a_run_resumes_on_another_number_of_processes(runs):
    root, _ = runs
    for name in ("one", "two"):
        summary = json.loads((root / name / "summary.json").read_text())
        assert summary["finished"] and summary["step"] == 4 and summary["steps_this_run"] == 2, name
        assert steps_logged(root / name) == [1, 2, 3, 4], name
        assert all(torch.isfinite(v.float()).all() for v in weights(root / name).values())
    assert (root / "one" / "pool-rank1.safetensors").is_file()   # the new process made its own batch source
