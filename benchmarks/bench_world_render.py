"""Reference renders per second (world sphere tracer) at 64x64 and 256x256.

    python benchmarks/bench_world_render.py --device cpu --out cpu.json
    python benchmarks/bench_world_render.py --device cuda --out gpu.json

Each measurement renders a batch of cameras around a cycle of world objects (supersample 2,
the default) after one warm-up call, and reports images per second.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_report import report

from distill3d.cameras import sample_orbit_cameras
from distill3d.world import train_objects, render_reference


def renders_per_second(resolution: int, batch: int, repeats: int, device: str) -> float:
    objects = train_objects()
    cams, _ = sample_orbit_cameras(batch, resolution, resolution, distance_range=(2.7, 2.7), fovy_range=(40, 40),
                                   generator=torch.Generator().manual_seed(0))
    cams = cams.to(device)
    objs = [objects[(i * 7) % len(objects)] for i in range(batch)]
    render_reference(objs, cams)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        render_reference(objs, cams)
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    plan = [(64, 256 if gpu else 8, 5 if gpu else 2), (256, 64 if gpu else 2, 5 if gpu else 1)]
    result = {"device": torch.cuda.get_device_name() if gpu else f"cpu ({torch.get_num_threads()} threads)",
              "supersample": 2}
    for resolution, batch, repeats in plan:
        result[f"renders_per_s_{resolution}"] = round(renders_per_second(resolution, batch, repeats, args.device), 2)
        result[f"batch_{resolution}"] = batch
    report(result, args.out)


if __name__ == "__main__":
    main()
