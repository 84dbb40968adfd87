"""Do the CPU and CUDA paths of the world's reference renderer agree?

    python benchmarks/check_reference_cuda.py --out reference_cuda.json

Renders every shape (in a cycle of world objects) from seeded random cameras at 64x64 on both
devices and reports the largest and mean absolute differences of rgb, alpha and depth.
"""

from __future__ import annotations

import argparse

import torch
from bench_report import report

from distill3d.cameras import sample_orbit_cameras
from distill3d.world import all_objects, render_reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    parser.add_argument("--count", type=int, default=64)
    args = parser.parse_args()
    objects = all_objects()
    objs = [objects[(i * 37) % len(objects)] for i in range(args.count)]
    cams, _ = sample_orbit_cameras(args.count, 64, 64, distance_range=(1.5, 3.0),
                                   generator=torch.Generator().manual_seed(0))
    cpu = render_reference(objs, cams)
    gpu = render_reference(objs, cams.to("cuda")).to("cpu")
    result = {"device": torch.cuda.get_device_name(), "images": args.count, "resolution": 64}
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(cpu, name) - getattr(gpu, name)).abs()
        result[f"{name}_max_abs_diff"] = diff.max().item()
        result[f"{name}_mean_abs_diff"] = diff.mean().item()
    report(result, args.out)


if __name__ == "__main__":
    main()
