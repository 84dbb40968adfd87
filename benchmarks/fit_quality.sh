#!/usr/bin/env bash
# Multi-view reconstruction quality on held-out world objects: 32 training views, 8 unseen
# views, 64x64, each representation. Usage: benchmarks/fit_quality.sh OUT_DIR [COUNT] [STEPS]
# REPS="gaussians voxels nerf" picks the representations; FIT_ARGS adds options to every fit.
# Prints one JSON line per run (held-out PSNR/SSIM/IoU, seconds) and writes OUT_DIR/fit_quality.json;
# each run's progress goes to OUT_DIR/<rep>-<i>.log.
set -euo pipefail
OUT=${1:?output folder}
COUNT=${2:-3}
STEPS=${3:-3000}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
$PYTHON -m distill3d world dataset multiview --split heldout --count "$COUNT" --views 40 --resolution 64 \
    --seed 0 --out "$OUT/data"
for rep in ${REPS:-gaussians voxels nerf}; do
    for ((i = 0; i < COUNT; i++)); do
        $PYTHON -m distill3d fit "$OUT/data" --item "$i" --representation "$rep" --steps "$STEPS" \
            --turntable-frames 0 ${FIT_ARGS:-} --out "$OUT/$rep-$i" > "$OUT/$rep-$i.log" 2>&1
    done
done
$PYTHON - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [json.loads(p.read_text()) for p in sorted(out.glob("*-*/summary.json"))]
table = [{"run": r["representation"], "object": r["label"], **{k: round(v, 4) for k, v in r["heldout"].items()},
          "seconds": r["seconds"], "steps": r["steps"]} for r in rows]
for row in table:
    print(json.dumps(row))
(out / "fit_quality.json").write_text(json.dumps(table, indent=2))
PY
