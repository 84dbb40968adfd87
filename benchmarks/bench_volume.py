"""Forward + backward time of the volume renderer with a batch of 8 cameras.

    python benchmarks/bench_volume.py --device cuda --out volume.json

Times ``render_volume`` (96 stratified samples per ray, no normals) on the voxel radiance
field and the hash-grid NeRF that ``distill3d fit`` uses, at 64x64 and 256x256, after warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_report import report

from distill3d.cameras import sample_orbit_cameras
from distill3d.render.volume import render_volume
from distill3d.scene.hash_grid import HashGridConfig, HashGridNeRF
from distill3d.scene.voxel_grid import VoxelGridConfig, VoxelRadianceField


def time_fwd_bwd(field, resolution: int, device: str, repeats: int) -> float:
    cams, _ = sample_orbit_cameras(8, resolution, resolution, distance_range=(2.7, 2.7), fovy_range=(40, 40),
                                   generator=torch.Generator().manual_seed(0))
    cams = cams.to(device)

    def once():
        out = render_volume(field, cams, num_samples=96, compute_normals=False)
        out.rgb.mean().backward()

    once()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    fields = {
        "voxels_48x16": VoxelRadianceField(VoxelGridConfig(resolution=48, feature_dim=16), seed=0),
        "hashgrid_12x2^16": HashGridNeRF(HashGridConfig(num_levels=12, log2_table_size=16, max_resolution=512),
                                         seed=0),
    }
    result = {"device": torch.cuda.get_device_name() if gpu else "cpu", "cameras": 8, "samples_per_ray": 96}
    for name, field in fields.items():
        field.to(args.device)
        for resolution in (64, 256) if gpu else (64,):
            seconds = time_fwd_bwd(field, resolution, args.device, 5 if gpu else 1)
            result[f"{name}_{resolution}_ms"] = round(1000 * seconds, 2)
    report(result, args.out)


if __name__ == "__main__":
    main()
