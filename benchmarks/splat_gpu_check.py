"""Check the two splatting backends against each other and time them.

On a CUDA machine with gsplat installed:

    python benchmarks/splat_gpu_check.py --out splat_check.json

1. Parity: a fixed scene of ~5000 Gaussians seen by 8 cameras is rendered with gsplat and
   with the pure-torch rasteriser; the mean / max absolute differences of rgb, alpha and
   depth, and of the gradients of a fixed loss, are printed and saved.
2. Timing: forward and forward+backward of each backend for 10k and 200k Gaussians at
   64x64 and 256x256 (8 cameras per batch). The torch path skips 200k at 256x256 unless
   ``--torch-all`` is given (it needs tens of GB and minutes); the JSON says so.

``--device cpu --small`` runs a tiny version of everything on the torch backend (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from distill3d.cameras import orbit_cameras
from distill3d.render.splat import _gsplat_rasterization, render_gaussians
from distill3d.scene.gaussians import Gaussians


def make_scene(n: int, seed: int, device: str) -> Gaussians:
    """n Gaussians in a ball of radius 0.6 with anisotropic scales and varied opacities."""
    gen = torch.Generator().manual_seed(seed)
    g = Gaussians.random_ball(n, 0.6, sh_degree=0, opacity=0.5, generator=gen)
    g.log_scales = g.log_scales + 0.5 * torch.randn(n, 3, generator=gen)
    g.opacity_logits = 1.5 * torch.randn(n, generator=gen)
    return g.to(device)


def make_cameras(n: int, size: int, device: str):
    az = torch.linspace(0.0, 360.0, n + 1)[:-1]
    el = torch.linspace(-10.0, 40.0, n)
    return orbit_cameras(el, az, 2.0, 40.0, width=size, height=size).to(device)


def loss_of(out) -> torch.Tensor:
    """A fixed scalar of all outputs (weights vary by channel so every path matters)."""
    w = torch.tensor([0.3, 0.5, 0.2], device=out.rgb.device)
    return (out.rgb * w).mean() + out.alpha.mean() + 0.1 * out.depth.mean()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def parity(backends: list[str], n: int, n_cams: int, size: int, seed: int, device: str) -> dict:
    """Differences between the first backend and each other one on one scene."""
    cams = make_cameras(n_cams, size, device)
    results = {}
    for backend in backends:
        g = make_scene(n, seed, device).trainable()
        out = render_gaussians(g, cams, backend=backend, background=1.0)
        loss_of(out).backward()
        results[backend] = (out, {name: t.grad.detach() for name, t in g.tensors().items() if t.grad is not None})
    report = {"gaussians": n, "cameras": n_cams, "size": size, "backends": backends}
    if len(backends) < 2:
        return report
    (ref_out, ref_grads), (out, grads) = results[backends[0]], results[backends[1]]
    for name in ("rgb", "alpha", "depth"):
        diff = (getattr(ref_out, name) - getattr(out, name)).abs()
        report[f"{name}_mean_abs_diff"] = diff.mean().item()
        report[f"{name}_max_abs_diff"] = diff.max().item()
    for name, ref in ref_grads.items():
        other = grads.get(name)
        if other is not None:
            report[f"grad_{name}_rel_diff"] = ((ref - other).norm() / ref.norm().clamp_min(1e-30)).item()
    return report


def time_backend(backend: str, n: int, size: int, n_cams: int, seed: int, device: str,
                 warmup: int, reps: int) -> dict:
    """Median forward and forward+backward times (ms) of one batch."""
    row = {"backend": backend, "gaussians": n, "size": size, "cameras": n_cams}
    try:
        g = make_scene(n, seed, device).trainable()
        cams = make_cameras(n_cams, size, device)
        fwd, both = [], []
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for i in range(warmup + reps):
            sync(device)
            t0 = time.perf_counter()
            out = render_gaussians(g, cams, backend=backend)
            sync(device)
            t1 = time.perf_counter()
            loss_of(out).backward()
            sync(device)
            t2 = time.perf_counter()
            for t in g.parameters():
                t.grad = None
            if i >= warmup:
                fwd.append(1e3 * (t1 - t0))
                both.append(1e3 * (t2 - t0))
        row.update(forward_ms=statistics.median(fwd), forward_backward_ms=statistics.median(both), status="ok")
        if device.startswith("cuda"):
            row["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    except torch.cuda.OutOfMemoryError as exc:
        row.update(status="out of memory", error=str(exc).splitlines()[0])
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("splat_gpu_check.json"), help="where to write the JSON")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--small", action="store_true", help="tiny sizes (a quick smoke test)")
    parser.add_argument("--torch-all", action="store_true", help="also time torch at 200k Gaussians, 256x256")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu (torch backend only).", file=sys.stderr)
        return 2
    found = _gsplat_rasterization()
    gsplat_error = str(found) if isinstance(found, Exception) else None
    backends = ["torch"]
    if gsplat_error is not None:
        print(f"gsplat is NOT available ({gsplat_error}); install it with `pip install gsplat` on a CUDA "
              f"machine. Only the torch backend is measured.")
    elif not args.device.startswith("cuda"):
        print("gsplat runs on CUDA only; on this device only the torch backend is measured.")
    else:
        backends = ["gsplat", "torch"]

    if args.small:
        parity_cfg = dict(n=500, n_cams=2, size=32)
        grid = [(500, 32), (2000, 64)]
        warmup, reps = 1, 2
    else:
        parity_cfg = dict(n=5000, n_cams=8, size=128)
        grid = [(10_000, 64), (10_000, 256), (200_000, 64), (200_000, 256)]
        warmup, reps = 2, 5

    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "gsplat": None if gsplat_error else _gsplat_version(),
        "gsplat_error": gsplat_error,
        "small": args.small,
        "seed": args.seed,
    }
    print(f"parity on {parity_cfg['n']} Gaussians, {parity_cfg['n_cams']} cameras, {parity_cfg['size']}px ...")
    report["parity"] = parity(backends, seed=args.seed, device=args.device, **parity_cfg)
    if len(backends) < 2:
        report["parity"]["skipped"] = "needs gsplat on CUDA"
    for key, value in report["parity"].items():
        if "diff" in key:
            print(f"  {key:28s} {value:.3e}")

    timings = []
    for n, size in grid:
        for backend in backends:
            if backend == "torch" and n >= 200_000 and size >= 256 and not args.torch_all:
                timings.append({"backend": backend, "gaussians": n, "size": size, "cameras": 8,
                                "status": "skipped: the torch path at 200k Gaussians and 256x256 needs tens of "
                                          "GB and minutes per step; pass --torch-all to run it"})
            else:
                timings.append(time_backend(backend, n, size, 8 if not args.small else 2, args.seed, args.device,
                                            warmup, reps))
            row = timings[-1]
            shown = (f"fwd {row['forward_ms']:9.2f} ms  fwd+bwd {row['forward_backward_ms']:9.2f} ms"
                     if row.get("status") == "ok" else row["status"])
            print(f"  {backend:6s} N={n:>7d} {size:>4d}px  {shown}")
    report["timings"] = timings

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


def _gsplat_version() -> str:
    import gsplat

    return getattr(gsplat, "__version__", "unknown")


if __name__ == "__main__":
    sys.exit(main())
