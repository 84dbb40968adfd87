"""Several DD3G students trained side by side on one collection, then scored on held-out objects.

    python benchmarks/dd3g_runs.py --data Q --out runs/dd3g_table --steps 2500 --max-minutes 7 \\
        --variant es_only="--set objective.implicit_verification=false" \\
        --variant joint="" --variant pd_only_es="--set objective.implicit_verification=false \\
                                                 --set student.pattern_extraction_enabled=false"

With ``--collect N --collect-processes P`` the quadruples are first collected into ``--data`` (items
0 .. N-1 of ``--seed``; P processes on the device, one shard set each, as torchrun would start them; a
finished collection is reused).

Each variant is ``distill3d dd3g train --data Q --out OUT/NAME --steps S --max-minutes M FLAGS``, all
started at once (on one GPU they share it; ``--max-minutes`` stops the slower ones, which then report
fewer steps), then ``distill3d eval image-to-3d --model OUT/NAME --count C`` for each, also side by side.
With ``--train-split`` each is also scored on training objects (``--split train``: the generalisation gap).
``OUT/runs.json`` holds, per variant, the flags, the steps reached, the minutes, the last logged loss and
the evaluation's means: the layout of ``benchmarks/results/dd3g_runs_h200.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, flags = text.partition("=")
    if not name or "/" in name:
        raise SystemExit(f"--variant {text!r}: give NAME=FLAGS")
    return name, shlex.split(flags)


def run_all(commands: dict[str, list[str]], logs: Path, env: dict[str, dict[str, str]] | None = None) -> dict[str, int]:
    """Start every command at once (with its extra environment ``env[name]``), wait for all; their return
    codes by name."""
    processes = {}
    for name, command in commands.items():
        log = (logs / f"{name}.log").open("w")
        extra = (env or {}).get(name, {})
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **extra}), log)
    codes = {}
    for name, (process, log) in processes.items():
        codes[name] = process.wait()
        log.close()
    return codes


def collect(distill3d: list[str], args: argparse.Namespace) -> float:
    """Collect ``args.collect`` quadruples into ``args.data`` with ``args.collect_processes`` processes;
    the seconds it took."""
    start = time.perf_counter()
    P = args.collect_processes
    command = distill3d + ["dd3g", "collect", "--out", args.data, "--count", str(args.collect), "--seed",
                           str(args.seed), "--shard-size", "128", "--device", args.device, "--resume"]
    codes = run_all({f"collect_{r}": command for r in range(P)}, args.out / "logs",
                    {f"collect_{r}": {"RANK": str(r), "WORLD_SIZE": str(P)} for r in range(P)})
    if any(codes.values()):
        raise SystemExit(f"collection failed: {codes} (see {args.out / 'logs'})")
    seconds = time.perf_counter() - start
    print(f"collected {args.collect} quadruples with {P} processes in {seconds:.0f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a `distill3d dd3g collect` folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="instead of --max-minutes: the whole script's seconds; training gets what is left "
                             "after the collection, less --eval-seconds")
    parser.add_argument("--eval-seconds", type=float, default=90.0)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=FLAGS",
                        help="extra `dd3g train` flags of one run (repeat for each run)")
    parser.add_argument("--eval-count", type=int, default=64)
    parser.add_argument("--train-split", action="store_true", help="also score each student on training objects")
    parser.add_argument("--collect", type=int, default=0, metavar="N", help="first collect N quadruples into --data")
    parser.add_argument("--collect-processes", type=int, default=4, help="collection processes (RANK / WORLD_SIZE)")
    parser.add_argument("--seed", type=int, default=0, help="collection seed")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    distill3d = [sys.executable, "-m", "distill3d"]
    start = time.perf_counter()
    if args.collect:
        collect_seconds = collect(distill3d, args)
    if args.budget_seconds:
        args.max_minutes = (args.budget_seconds - args.eval_seconds - (time.perf_counter() - start)) / 60.0
        if args.max_minutes < 1.0:
            raise SystemExit(f"--budget-seconds leaves {args.max_minutes:.2f} minutes for training")
        print(f"training for at most {args.max_minutes:.2f} minutes")
    limit = ["--max-minutes", str(args.max_minutes)] if args.max_minutes else []
    train = {name: distill3d + ["dd3g", "train", "--data", args.data, "--out", str(args.out / name), "--steps",
                                str(args.steps), "--device", args.device, "--log-every", "50"] + limit + flags
             for name, flags in variants.items()}
    codes = run_all(train, args.out / "logs")
    trained = [name for name, code in codes.items() if code == 0]
    splits = {"": "heldout", "train_": "train"} if args.train_split else {"": "heldout"}
    evals = {f"eval_{prefix}{name}": distill3d + ["eval", "image-to-3d", "--model", str(args.out / name), "--out",
                                                  str(args.out / f"eval_{prefix}{name}.json"), "--count",
                                                  str(args.eval_count), "--device", args.device, "--split", split]
             for name in trained for prefix, split in splits.items()}
    eval_codes = run_all(evals, args.out / "logs")
    runs = {}
    for name, flags in variants.items():
        row: dict = {"flags": shlex.join(flags), "train_exit": codes[name]}
        log = args.out / name / "log.jsonl"
        if log.is_file() and log.read_text().strip():
            last = json.loads(log.read_text().splitlines()[-1])
            row.update(steps=args.steps, steps_reached=last["step"], minutes=round(last["elapsed_minutes"], 2),
                       final_loss=last["loss"])
        result = args.out / f"eval_{name}.json"
        if eval_codes.get(f"eval_{name}") == 0 and result.is_file():
            evaluation = json.loads(result.read_text())
            row.update(eval_count=evaluation["count"], mean=evaluation["mean"])
        train_result = args.out / f"eval_train_{name}.json"
        if eval_codes.get(f"eval_train_{name}") == 0 and train_result.is_file():
            row.update(train_split_mean=json.loads(train_result.read_text())["mean"])
        runs[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "mean"}), json.dumps(row.get("mean", {})))
    record = {"data": args.data, "runs": runs}
    if args.collect:
        record.update(collect=args.collect, collect_processes=args.collect_processes, collect_seconds=collect_seconds)
    (args.out / "runs.json").write_text(json.dumps(record, indent=1))
    print("written:", args.out / "runs.json")


if __name__ == "__main__":
    main()
