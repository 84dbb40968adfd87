"""How training, collection and the text-to-3D table scale with the number of GPUs of one host.

    python benchmarks/multi_gpu_scaling.py --out runs/scaling --gpus 2

Each workload runs twice in the same call, under torchrun with one process (the multi-process code path
on one GPU) and with one process per GPU, and the throughputs are compared:

- ``teacher``: ``distill3d teacher train text-to-image`` (the world text-to-image teacher);
- ``holofusion``: ``distill3d holofusion train``;
- ``dd3g-collect``: ``distill3d dd3g collect`` of the same items with the same seed; the two collections
  are also compared shard by shard (they should hold the same quadruples whatever the number of
  processes);
- ``dd3g-train``: ``distill3d dd3g train`` on the one-process collection;
- ``c3d-table``: ``benchmarks/consistent3d_table.py`` with ``--workers-per-gpu`` workers on each GPU.

Trainers: the median of the logged ``images_per_second`` (all processes together, each with the
default batch) over the log windows after the first third, so that start-up and warm-up stay out.
Collection and the table: items or runs over the launch's wall-clock time, start-up included (the same
for both process counts). The ratio is N processes over 1; the issue's target is 1.8x on 2 GPUs and
3.5x on 4 for training and collection.

``OUT/scaling.json`` keeps every finished measurement (a repeated command skips them; ``--redo``
measures again) and ``OUT/scaling.md`` the table; each launch's output is in ``OUT/logs/``.
``--tiny --device cpu`` runs tiny models in CPU processes (gloo): the code path, not a scaling figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("teacher", "holofusion", "dd3g-collect", "dd3g-train", "c3d-table")
TRAINERS = ("teacher", "holofusion", "dd3g-train")
TARGET_RATIO = {2: 1.8, 4: 3.5}
"""Several GPUs issue: at least 1.8x on 2 GPUs and 3.5x on 4, for training and collection."""
REPO = Path(__file__).resolve().parents[1]
# NVLink multicast stays off on shared hosts (NCCL / PyTorch); a launch inherits the rest of the environment
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


def torchrun(processes: int, *args: str) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node P -m distill3d ARGS``."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "distill3d", *args]


def command(workload: str, processes: int, run: Path, args: argparse.Namespace) -> list[str]:
    """The launch of ``workload`` on ``processes`` processes, writing into ``run``."""
    small = ["--tiny"] if args.tiny else []
    device = ["--device", args.device]
    train = ["--steps", str(args.steps), "--log-every", str(max(1, args.steps // 10)), *small, *device]
    if workload == "teacher":
        return torchrun(processes, "teacher", "train", "text-to-image", "--out", str(run), *train)
    if workload == "holofusion":
        return torchrun(processes, "holofusion", "train", "--out", str(run), *train)
    if workload == "dd3g-collect":
        return torchrun(processes, "dd3g", "collect", "--out", str(run), "--count", str(args.collect_count),
                        "--ddim-steps", str(args.ddim_steps), "--batch-size", str(args.collect_batch),
                        "--shard-size", str(args.collect_batch), *device)
    if workload == "dd3g-train":
        return torchrun(processes, "dd3g", "train", "--data", str(args.out / "dd3g-collect-p1"), "--out", str(run),
                        *train)
    gpus = [] if args.device == "cpu" else ["--gpus", str(processes)]
    return [sys.executable, str(REPO / "benchmarks" / "consistent3d_table.py"), "--out", str(run),
            "--representation", "gaussians", "--steps", str(args.table_steps), "--prompts", str(args.table_prompts),
            "--variants", "sds", "--seeds", "0", "--workers", str(args.workers_per_gpu * processes),
            "--device", args.device, *gpus]


def trainer_throughput(run: Path) -> float:
    """Median ``images_per_second`` of the log windows after the first third of ``run/log.jsonl``."""
    rates = [json.loads(line)["images_per_second"] for line in (run / "log.jsonl").read_text().splitlines()]
    return statistics.median(rates[len(rates) // 3:])


def same_shards(first: Path, second: Path) -> bool:
    """Whether two collections hold the same shard files with the same tensors."""
    from safetensors.torch import load_file

    names = sorted(p.name for p in first.glob("quadruples-*.safetensors"))
    if not names or names != sorted(p.name for p in second.glob("quadruples-*.safetensors")):
        return False
    for name in names:
        a, b = load_file(str(first / name)), load_file(str(second / name))
        if a.keys() != b.keys() or any(not (a[k] == b[k]).all() for k in a):
            return False
    return True


def measure(workload: str, processes: int, args: argparse.Namespace) -> dict:
    """One launch: its throughput (``unit``), wall-clock seconds and return code."""
    run = args.out / f"{workload}-p{processes}"
    shutil.rmtree(run, ignore_errors=True)
    log = args.out / "logs" / f"{workload}-p{processes}.log"
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **SAFE_ENV, "PYTHONPATH": python_path}
    if args.device == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    with log.open("w") as sink:
        try:
            code = subprocess.run(command(workload, processes, run, args), stdout=sink, stderr=subprocess.STDOUT,
                                  env=env, cwd=REPO, timeout=args.timeout_minutes * 60, check=False).returncode
        except subprocess.TimeoutExpired:
            code = -1
            print(f"stopped after --timeout-minutes {args.timeout_minutes}", file=sink)
    seconds = time.perf_counter() - start
    row = {"workload": workload, "processes": processes, "seconds": round(seconds, 2), "returncode": code}
    if code != 0:
        return {**row, "error": log.read_text()[-2000:]}
    if workload in TRAINERS:
        return {**row, "unit": "images/s", "throughput": trainer_throughput(run)}
    if workload == "dd3g-collect":
        return {**row, "unit": "quadruples/s", "throughput": args.collect_count / seconds}
    return {**row, "unit": "runs/min", "throughput": args.table_prompts * 60.0 / seconds}


def table(rows: dict[str, dict], counts: list[int]) -> str:
    """Markdown: per workload, the throughput at each process count, the ratio and its target."""
    n = counts[-1]
    head = ["workload", "unit", *(f"{p} process{'es' if p > 1 else ''}" for p in counts), f"{n} / 1", "target"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for workload in WORKLOADS:
        cells = [rows.get(f"{workload}-p{p}", {}) for p in counts]
        if not any(cells):
            continue
        rates = [c.get("throughput") for c in cells]
        values = [f"{r:.3g}" if r is not None else ("failed" if c else "") for r, c in zip(rates, cells)]
        ratio = f"{rates[-1] / rates[0]:.2f}x" if None not in (rates[0], rates[-1]) else ""
        target = f"{TARGET_RATIO[n]}x" if n in TARGET_RATIO and workload != "c3d-table" else ""
        unit = next((c["unit"] for c in cells if "unit" in c), "")
        lines.append("| " + " | ".join([workload, unit, *values, ratio, target]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, default=None, help="N (default: the GPUs torch sees; 2 with --device cpu)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--steps", type=int, default=300, help="training steps of each trainer launch")
    parser.add_argument("--collect-count", type=int, default=1024)
    parser.add_argument("--collect-batch", type=int, default=64, help="groups per teacher call, and per shard")
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--table-prompts", type=int, default=16)
    parser.add_argument("--table-steps", type=int, default=800)
    parser.add_argument("--workers-per-gpu", type=int, default=4)
    parser.add_argument("--device", default="cuda", help="cuda (one process per GPU) or cpu (gloo, --tiny)")
    parser.add_argument("--tiny", action="store_true", help="tiny models: the code path on a CPU")
    parser.add_argument("--timeout-minutes", type=float, default=30.0, help="of each launch")
    parser.add_argument("--redo", action="store_true", help="measure again what OUT/scaling.json holds")
    args = parser.parse_args(argv)
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.gpus is None:
        import torch

        args.gpus = 2 if args.device == "cpu" else torch.cuda.device_count()
    if args.gpus < 2:
        parser.error(f"--gpus {args.gpus}: scaling needs at least 2 (torch sees {args.gpus} GPU(s))")
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    store = args.out / "scaling.json"
    rows = {} if args.redo or not store.is_file() else json.loads(store.read_text())["rows"]
    counts = [1, args.gpus]
    if "dd3g-train" in workloads and "dd3g-collect" not in workloads and not (args.out / "dd3g-collect-p1").is_dir():
        workloads.insert(workloads.index("dd3g-train"), "dd3g-collect")  # its data
    for workload in workloads:
        for processes in counts:
            key = f"{workload}-p{processes}"
            if key in rows and "throughput" in rows[key]:
                continue
            rows[key] = measure(workload, processes, args)
            print(f"{key}: {rows[key].get('throughput', 'failed')} {rows[key].get('unit', '')}", flush=True)
            if workload == "dd3g-collect" and processes == counts[-1] and "throughput" in rows[key]:
                rows[key]["same_as_one_process"] = same_shards(args.out / "dd3g-collect-p1", args.out / key)
            store.write_text(json.dumps({"gpus": args.gpus, "device": args.device, "tiny": args.tiny,
                                         "argv": sys.argv[1:], "rows": rows}, indent=1))
    (args.out / "scaling.md").write_text(table(rows, counts))
    print(table(rows, counts))
    return 0 if all("throughput" in r for r in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
