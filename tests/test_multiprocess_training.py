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


def launch(processes: int, *args: str, torchrun: bool | None = None) -> subprocess.CompletedProcess:
    """``distill3d holofusion train`` under torchrun (by default when ``processes`` > 1) or alone."""
    torchrun = processes > 1 if torchrun is None else torchrun
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if torchrun else []
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
    """Runs "one" (1 process) and "two" (2 processes) of 2 steps, their weights kept, then each resumed to
    4 steps on the other number of processes."""
    root = tmp_path_factory.mktemp("mp")
    launch(1, "--out", str(root / "one"), "--steps", "2")
    two = launch(2, "--out", str(root / "two"), "--steps", "2")
    launch(1, "--out", str(root / "launched"), "--steps", "2", torchrun=True)
    after_two_steps = {name: weights(root / name) for name in ("one", "two", "launched")}
    assert (root / "two" / "pool-rank1.safetensors").is_file()
    launch(2, "--out", str(root / "one"), "--resume", "--steps", "4")     # 1 process, then 2
    launch(1, "--out", str(root / "two"), "--resume", "--steps", "4")     # 2 processes, then 1
    return root, two, after_two_steps


def test_two_processes_share_their_gradients(runs):
    """Rank 0 of two processes draws the same data and noise as a process alone (streams are seeded by
    rank, and nothing else depends on the number of processes), so after the same 2 steps its weights
    differ from the lone run's only through rank 1's gradients."""
    _, two, after = runs
    alone, shared = after["one"], after["two"]
    assert all(torch.equal(alone[k], after["launched"][k]) for k in alone)  # the launcher alone changes nothing
    assert any(not torch.equal(alone[k], shared[k]) for k in alone)
    assert two.stdout.count("holofusion: step 2/2 finished") == 1                # one report, from rank 0


def test_a_run_resumes_on_another_number_of_processes(runs):
    root, _, _ = runs
    for name in ("one", "two"):
        summary = json.loads((root / name / "summary.json").read_text())
        assert summary["finished"] and summary["step"] == 4 and summary["steps_this_run"] == 2, name
        assert steps_logged(root / name) == [1, 2, 3, 4], name
        assert all(torch.isfinite(v.float()).all() for v in weights(root / name).values())
    assert (root / "one" / "pool-rank1.safetensors").is_file()   # the new process made its own batch source
