#!/usr/bin/env bash
# HoloFusion's objective.first_pass_views on a 2-core CPU: a small model (S = 16, d = 8, 6 source + 2 target
# views, colours as Phi, no super-resolution) trained for 24 minutes per variant, both side by side on one core
# each, then the unconditional spread and conditioned PSNR of each (benchmarks/holofusion_diversity.py).
#   bash benchmarks/holofusion_first_pass_cpu.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: holofusion_first_pass_cpu.sh OUT_DIR}
mkdir -p "$OUT"
SET=(--set grid.resolution=16 --set grid.feature_dim=8 --set grid.hidden_dim=32 --set unet.channels=16,32
     --set unet.norm_groups=8 --set objective.num_samples=24 --set views.source_views=6 --set views.target_views=2
     --set world.size=256 --set world.objects_per_block=32 --set world.refresh_every=0
     --set super_resolution.enabled=false --set diffusion.num_train_timesteps=1000 --set optim.ema_decay=0.995
     --set optim.warmup_steps=100)
for v in subset all; do
  OMP_NUM_THREADS=1 python -m distill3d holofusion train --tiny --out "$OUT/$v" "${SET[@]}" \
    --set objective.first_pass_views=$v --steps 6000 --batch-size 4 --lr 5e-4 --device cpu --log-every 250 \
    --max-minutes 24 > "$OUT/$v.log" 2>&1 &
done
wait
OMP_NUM_THREADS=2 python benchmarks/holofusion_diversity.py --model "$OUT/subset" --model "$OUT/all" \
  --out "$OUT/diversity.json" --count 16 --views 8 --conditioned 8 --device cpu
