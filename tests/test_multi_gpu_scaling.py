"""benchmarks/multi_gpu_scaling.py on a CPU: two workloads launched with 1 and 2 gloo processes, the
table, the check that both collections hold the same quadruples, and a repeated command that skips."""

import json
import shutil

import pytest
from benchmark_scripts import load_benchmark
from safetensors.torch import load_file, save_file

scaling = load_benchmark("multi_gpu_scaling")
ARGS = ["--device", "cpu", "--tiny", "--steps", "4", "--collect-count", "4", "--collect-batch", "2",
        "--ddim-steps", "1", "--workloads", "holofusion,dd3g-collect"]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    assert scaling.main(["--out", str(out), *ARGS]) == 0
    return out


def test_each_workload_is_measured_on_one_and_two_processes(measured):
    stored = json.loads((measured / "scaling.json").read_text())
    assert stored["gpus"] == 2 and set(stored["rows"]) == {f"{w}-p{p}" for w in ("holofusion", "dd3g-collect")
                                                             for p in (1, 2)}
    for row in stored["rows"].values():
        assert row["returncode"] == 0 and row["throughput"] > 0 and row["seconds"] > 0
    assert stored["rows"]["dd3g-collect-p2"]["same_as_one_process"] is True
    rows = {line.split(" | ")[0].strip("| "): line for line in (measured / "scaling.md").read_text().splitlines()}
    for workload in ("holofusion", "dd3g-collect"):
        one, two = (stored["rows"][f"{workload}-p{p}"]["throughput"] for p in (1, 2))
        assert f"{two / one:.2f}x" in rows[workload] and "1.8x" in rows[workload]


def test_a_changed_quadruple_is_found(measured, tmp_path):
    copy = tmp_path / "q"
    shutil.copytree(measured / "dd3g-collect-p2", copy)
    assert scaling.same_shards(measured / "dd3g-collect-p1", copy)
    shard = max(copy.glob("quadruples-*.safetensors"))
    tensors = load_file(str(shard))
    tensors["noise_seed"] = tensors["noise_seed"] + 1
    save_file(tensors, str(shard))
    assert not scaling.same_shards(measured / "dd3g-collect-p1", copy)


def test_a_repeated_command_keeps_what_was_measured(measured):
    before = (measured / "scaling.json").read_text()
    assert scaling.main(["--out", str(measured), *ARGS]) == 0
    assert json.loads((measured / "scaling.json").read_text())["rows"] == json.loads(before)["rows"]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        scaling.main(["--out", str(tmp_path), "--workloads", "nope", "--device", "cpu"])
    with pytest.raises(SystemExit):
        scaling.main(["--out", str(tmp_path), "--gpus", "1", "--device", "cpu"])
