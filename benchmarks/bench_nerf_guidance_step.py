"""Time of one Consistent3D NeRF guidance render and its backward, without the teacher.

    python benchmarks/bench_nerf_guidance_step.py [--cameras 2] [--resolution 32] [--device cpu]

The coarse-stage render of ``methods/consistent3d.py`` (shading, per-sample normals with the
double backward of the orientation and normal-smoothness losses) on the default hash grid;
prints the median of the repeats after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from distill3d.camera_sampling import OrbitCameraConfig, sample_quadrant_cameras
from distill3d.methods.consistent3d import Consistent3DConfig, render_for_guidance
from distill3d.scene.factory import build_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config = Consistent3DConfig(cameras=OrbitCameraConfig(cameras_per_step=args.cameras, resolution=args.resolution),
                                device=args.device)
    device = torch.device(args.device)
    scene = build_scene(config.scene, device, config.seed)
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        cameras, _ = sample_quadrant_cameras(config.cameras, generator)
        rgb, terms = render_for_guidance(scene, config, cameras.to(device), generator)
        (rgb.mean() + terms["orient"] + terms["normal_smooth"]).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    print(f"render + backward: {statistics.median(times[1:]):.3f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
