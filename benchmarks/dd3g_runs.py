"""Several DD3G students trained side by side on one collection, then scored on held-out objects.

    python benchmarks/dd3g_runs.py --data Q --out runs/dd3g_table --steps 2500 --max-minutes 7 \\
        --variant es_only="--set objective.implicit_verification=false" \\
        --variant joint="" --variant pd_only_es="--set objective.implicit_verification=false \\
                                                 --set student.pattern_extraction_enabled=false"

Each variant is ``distill3d dd3g train --data Q --out OUT/NAME --steps S --max-minutes M FLAGS``, all
started at once (on one GPU they share it; ``--max-minutes`` stops the slower ones, which then report
fewer steps), then ``distill3d eval image-to-3d --model OUT/NAME --count C`` for each, also side by side.
``OUT/runs.json`` holds, per variant, the flags, the steps reached, the minutes, the last logged loss and
the evaluation's means: the layout of ``benchmarks/results/dd3g_runs_h200.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, flags = text.partition("=")
    if not name or "/" in name:
        raise SystemExit(f"--variant {text!r}: give NAME=FLAGS")
    return name, shlex.split(flags)


def run_all(commands: dict[str, list[str]], logs: Path) -> dict[str, int]:
    """Start every command at once, wait for all; their return codes by name."""
    processes = {}
    for name, command in commands.items():
        log = (logs / f"{name}.log").open("w")
        processes[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
    codes = {}
    for name, (process, log) in processes.items():
        codes[name] = process.wait()
        log.close()
    return codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a `distill3d dd3g collect` folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=FLAGS",
                        help="extra `dd3g train` flags of one run (repeat for each run)")
    parser.add_argument("--eval-count", type=int, default=64)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    variants = dict(parse_variant(v) for v in args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    distill3d = [sys.executable, "-m", "distill3d"]
    limit = ["--max-minutes", str(args.max_minutes)] if args.max_minutes else []
    train = {name: distill3d + ["dd3g", "train", "--data", args.data, "--out", str(args.out / name), "--steps",
                                str(args.steps), "--device", args.device, "--log-every", "50"] + limit + flags
             for name, flags in variants.items()}
    codes = run_all(train, args.out / "logs")
    trained = [name for name, code in codes.items() if code == 0]
    evals = {name: distill3d + ["eval", "image-to-3d", "--model", str(args.out / name), "--out",
                                str(args.out / f"eval_{name}.json"), "--count", str(args.eval_count), "--device",
                                args.device] for name in trained}
    eval_codes = run_all({f"eval_{k}": v for k, v in evals.items()}, args.out / "logs")
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
        runs[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if k != "mean"}), json.dumps(row.get("mean", {})))
    (args.out / "runs.json").write_text(json.dumps({"data": args.data, "runs": runs}, indent=1))
    print("written:", args.out / "runs.json")


if __name__ == "__main__":
    main()
