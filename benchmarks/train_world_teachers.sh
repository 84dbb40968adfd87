#!/usr/bin/env bash
# Train the world classifier and teachers on one GPU in resumable chunks of at most 9 minutes.
#
#   benchmarks/train_world_teachers.sh            one chunk of the first model not yet finished
#   benchmarks/train_world_teachers.sh eval       the quality measurements of the finished models
#   benchmarks/train_world_teachers.sh benchmark  speed figures (JSON) of all three models
#
# Call it again until it prints "all trained". Order: classifier (it judges the text-to-image
# teacher), text-to-image, multiview. Every chunk resumes the run in $RUNS/<model> exactly
# (checkpoint + render pool on local disk), saves before $MINUTES minutes, and copies the EMA
# weights into distill3d/weights/<name>/ so that the shipped folder always holds the latest.
# Multi-GPU: set LAUNCH="accelerate launch --num_processes N" (the batch size is per process).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-runs/world-teachers}
MINUTES=${MINUTES:-8.5}          # leaves ~30 s of the 9 minutes for start-up
PYTHON=${PYTHON:-python}
LAUNCH=${LAUNCH:-$PYTHON}
EXTRA=${EXTRA:-}                 # e.g. EXTRA="--steps 20000" to change the length of a run
export PYTHONUNBUFFERED=1

finished() {  # finished <model>: true when the run's summary says so
    [ -f "$RUNS/$1/summary.json" ] && $PYTHON -c "import json,sys; sys.exit(0 if json.load(open('$RUNS/$1/summary.json'))['finished'] else 1)"
}

weights_name() {
    case "$1" in
        classifier) echo world-classifier ;;
        text-to-image) echo world-text-to-image ;;
        multiview) echo world-multiview ;;
    esac
}

case "${1:-train}" in
    train)
        for model in classifier text-to-image multiview; do
            if finished "$model"; then
                echo "$model: finished"
                continue
            fi
            mkdir -p "$RUNS"
            # shellcheck disable=SC2086
            $LAUNCH -m distill3d teacher train "$model" --out "$RUNS/$model" --resume --max-minutes "$MINUTES" \
                --export-to "distill3d/weights/$(weights_name "$model")" $EXTRA
            exit 0
        done
        echo "all trained"
        ;;
    eval)
        mkdir -p "$RUNS/eval"
        $PYTHON -m distill3d teacher eval classifier --out "$RUNS/eval/classifier.json"
        $PYTHON -m distill3d teacher eval text-to-image --out "$RUNS/eval/text-to-image.json" \
            --samples "$RUNS/eval/text-to-image.png"
        $PYTHON -m distill3d teacher eval multiview --out "$RUNS/eval/multiview.json" \
            --samples "$RUNS/eval/multiview.png"
        ;;
    benchmark)
        mkdir -p "$RUNS"
        $PYTHON -m distill3d teacher benchmark --out "$RUNS/benchmark.json"
        ;;
    *)
        echo "usage: $0 [train|eval|benchmark]" >&2
        exit 2
        ;;
esac
