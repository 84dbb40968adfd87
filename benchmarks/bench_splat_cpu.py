"""Forward + backward time of the pure-torch rasteriser for one 64x64 view on the CPU.

    python benchmarks/bench_splat_cpu.py

Gaussians drawn by ``Gaussians.random_ball(n, radius=0.8)``; mean of 5 after a warm-up.
"""

from __future__ import annotations

import time

import torch

from distill3d.cameras import orbit_cameras
from distill3d.render.splat import render_gaussians
from distill3d.scene.gaussians import Gaussians


def main() -> None:
    camera = orbit_cameras(20.0, 30.0, 2.7, 40.0, 64, 64)
    for n in (3000, 10000):
        g = Gaussians.random_ball(n, radius=0.8, generator=torch.Generator().manual_seed(0)).trainable()
        render_gaussians(g, camera, backend="torch").rgb.mean().backward()
        start = time.perf_counter()
        for _ in range(5):
            render_gaussians(g, camera, backend="torch").rgb.mean().backward()
        print(f"{n} Gaussians, 64x64, one view: forward+backward {(time.perf_counter() - start) / 5 * 1000:.1f} ms")


if __name__ == "__main__":
    main()
