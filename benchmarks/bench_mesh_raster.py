"""The pure-torch mesh rasteriser against the world's exact renderer, and its speed.

Meshes: marching cubes (resolution 96) of the world's sphere and torus SDFs. Cameras: 12 orbit views
at distance 2.0, fovy 40, elevations -10..60. Reported per shape: mask IoU of the antialiased alpha
against the reference's 4x4-supersampled coverage (min over views), mean |alpha - coverage|, the
share of pixels whose pixel-centre coverage differs from the reference's own pixel-centre rays,
depth error where both hit (median, mean, 99th percentile) and the median cosine of the normals;
then the time of ``render_mesh`` (forward, and forward + backward) at 64x64 and the device's size.

    python benchmarks/bench_mesh_raster.py --out benchmarks/results/mesh_raster_cpu.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distill3d.cameras import orbit_cameras
from distill3d.metrics import mask_iou
from distill3d.render.mesh import render_mesh
from distill3d.scene.mesh_extraction import extract_mesh
from distill3d.world import shapes
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference


def world_mesh(shape: str, resolution: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    mesh = extract_mesh(getattr(shapes, shape), resolution=resolution)
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


def ring(n: int, resolution: int):
    elevations = torch.tensor([20.0, 40.0, -10.0, 60.0]).repeat(n)[:n]
    return orbit_cameras(elevations, torch.linspace(0.0, 330.0, n), 2.0, 40.0, resolution, resolution)


def agreement(shape: str, resolution: int) -> dict:
    verts, faces = world_mesh(shape)
    cameras = ring(12, resolution)
    obj = WorldObject("red", "plain", shape)
    grey = torch.full_like(verts, 0.5)
    with torch.no_grad():
        out = render_mesh(verts, faces, cameras, vertex_colors=grey)
        hard = render_mesh(verts, faces, cameras, vertex_colors=grey, antialias=False)
        coverage = render_reference(obj, cameras, supersample=4)
        centres = render_reference(obj, cameras, supersample=1)
    both = (hard.alpha[..., 0] > 0) & (centres.alpha[..., 0] > 0)
    error = (hard.depth - centres.depth)[..., 0][both].abs()
    return {"faces": int(faces.shape[0]), "resolution": resolution,
            "mask_iou_min": float(mask_iou(out.alpha, coverage.alpha).min()),
            "alpha_abs_error_mean": float((out.alpha - coverage.alpha).abs().mean()),
            "pixel_centre_coverage_differs": float(((hard.alpha > 0) != (centres.alpha > 0)).float().mean()),
            "depth_error_median": float(error.median()), "depth_error_mean": float(error.mean()),
            "depth_error_p99": float(torch.quantile(error, 0.99)),
            "normal_cos_median": float((hard.normal * centres.normal).sum(-1)[both].median())}


def speed(shape: str, resolution: int, device: torch.device, repeats: int = 5) -> dict:
    verts, faces = world_mesh(shape)
    verts, faces = verts.to(device), faces.to(device)
    cameras = ring(12, resolution).to(device)
    colours = torch.full_like(verts, 0.5)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {"forward": [], "forward_backward": []}
    for _ in range(repeats + 1):
        v = verts.clone().requires_grad_(True)
        sync()
        start = time.perf_counter()
        out = render_mesh(v, faces, cameras, vertex_colors=colours)
        sync()
        mid = time.perf_counter()
        out.rgb.mean().backward()
        sync()
        end = time.perf_counter()
        times["forward"].append(mid - start)
        times["forward_backward"].append(end - start)
    return {"faces": int(faces.shape[0]), "cameras": 12, "resolution": resolution,
            **{k + "_s": sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolutions", default="64", help="comma-separated render sizes for the speed runs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = torch.device(args.device)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "agreement": {s: agreement(s, 64) for s in ("sphere", "torus")},
              "speed": [speed("torus", int(r), device) for r in args.resolutions.split(",")]}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
