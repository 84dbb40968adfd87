"""Whether HoloFusion's 3D model samples different objects, and whether it reconstructs from views.

    python benchmarks/holofusion_diversity.py --model runs/a --model runs/b --out runs/diversity.json

For each ``--model`` (a run or model folder):
1. Unconditional diversity: ``--count`` samples (``sample_grids``, no views), each rendered by R_eta at the
   same ``--views`` cameras (the world training views' distribution, one seed): the per-pixel standard
   deviation across samples, averaged over pixels, views and channels. The same statistic over exact
   renders of as many held-out objects (round robin) at those cameras is the data's diversity; the
   ratio is 0 when every sample is the same object and about 1 when samples vary as much as objects do.
   A sheet of the samples' first view is written beside the JSON (``--out``'s stem + ``_<i>.png``).
2. Conditioned reconstruction: for ``--conditioned`` held-out objects, the model's source-view count of
   exact renders (at the training views' size) condition one sample, rendered at 4 other views and
   compared with their exact renders (PSNR at S x S, the size the photometric loss trains). The same
   targets against the model's unconditional samples give the floor of no information.

Prints one line per model and writes everything to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
from PIL import Image

from distill3d.atomic_files import write_json_atomic
from distill3d.cameras import Cameras
from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.methods.holofusion.sample import load_holofusion, sample_grids
from distill3d.methods.holofusion.train import HoloFusionModel
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="a run or model folder (repeatable)")
    p.add_argument("--out", required=True, type=Path, help="the JSON written")
    p.add_argument("--count", type=int, default=16, help="unconditional samples")
    p.add_argument("--views", type=int, default=8, help="cameras every unconditional sample is rendered at")
    p.add_argument("--conditioned", type=int, default=8, help="held-out objects reconstructed from views")
    p.add_argument("--sample-steps", type=int, default=100, help="denoising steps")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.count < 2 or args.views < 1 or args.conditioned < 0 or args.sample_steps < 1:
        raise UserError("--count must be >= 2, --views >= 1, --conditioned >= 0, --sample-steps >= 1")
    return args


def spread(images: torch.Tensor) -> float:
    """Mean over views, pixels and channels of the standard deviation across things: images [N, V, H, W, 3]."""
    return images.std(dim=0).mean().item()


def render_grids(model: HoloFusionModel, grids: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """R_eta of grids [N, d, S, S, S] at the same cameras [V] -> [N, V, H, W, 3]."""
    N, V = len(grids), len(cameras)
    cams = Cameras.cat([cameras] * N)
    return model.render(grids, cams).rgb.clamp(0, 1).reshape(N, V, cams.height, cams.width, 3)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10.0 * math.log10(max((a - b).square().mean().item(), 1e-12))


def write_sheet(images: torch.Tensor, path: Path) -> None:
    """images [N, H, W, 3] side by side."""
    row = torch.cat(list(images), dim=1)
    Image.fromarray((row.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()).save(path)


@torch.no_grad()
def measure(model: HoloFusionModel, args: argparse.Namespace, device: torch.device, sheet: Path) -> dict:
    cfg = model.config
    S, R = cfg.grid.resolution, cfg.target_resolution
    gen = torch.Generator(device=device).manual_seed(args.seed)
    cams = cfg.views.draw(args.views, S, args.seed)
    grids = sample_grids(model, args.count, steps=args.sample_steps, generator=gen)
    samples = render_grids(model, grids, cams.to(device))
    held = heldout_objects()
    which = [held[k % len(held)] for k in range(args.count)]
    reference = torch.stack([render_reference(o, cams.to(device)).rgb.clamp(0, 1) for o in which])
    write_sheet(samples[:, 0], sheet)
    result = {"unconditional_spread": spread(samples), "reference_spread": spread(reference)}
    result["spread_ratio"] = result["unconditional_spread"] / result["reference_spread"]

    n_src = cfg.views.source_views
    rows = []
    for k in range(args.conditioned):
        obj = held[k % len(held)]
        cams_k = cfg.views.draw(n_src + 4, R, args.seed + 1000 + k)
        source = render_reference(obj, cams_k[:n_src].to(device)).rgb.clamp(0, 1)
        targets = cams_k[n_src:].resized(S, S).to(device)
        truth = render_reference(obj, targets).rgb.clamp(0, 1)
        grid = sample_grids(model, 1, steps=args.sample_steps, condition=(source, cams_k[:n_src].to(device)),
                            generator=torch.Generator(device=device).manual_seed(args.seed + k))
        recon = render_grids(model, grid, targets)[0]
        rows.append({"object": obj.prompt, "psnr": psnr(recon, truth),
                     "psnr_unconditional": sum(psnr(s, truth) for s in render_grids(model, grids[:4], targets)) / 4})
    if rows:
        result["conditioned_psnr"] = sum(r["psnr"] for r in rows) / len(rows)
        result["unconditional_psnr_same_targets"] = sum(r["psnr_unconditional"] for r in rows) / len(rows)
    result["conditioned"] = rows
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = pick_device(args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "models": {}}
    for i, name in enumerate(args.model):
        model = load_holofusion(name, device)
        r = measure(model, args, device, args.out.with_name(f"{args.out.stem}_{i}.png"))
        out["models"][name] = {"objective": model.config.objective.first_pass_views, **r}
        line = (f"{name}: spread ratio {r['spread_ratio']:.3f} ({r['unconditional_spread']:.4f} / "
                f"{r['reference_spread']:.4f})")
        if "conditioned_psnr" in r:
            line += (f", conditioned PSNR {r['conditioned_psnr']:.2f} dB (unconditional on the same targets "
                     f"{r['unconditional_psnr_same_targets']:.2f})")
        print(line, flush=True)
        write_json_atomic(args.out, out)
    return out


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"holofusion_diversity: {error}", file=sys.stderr)
        sys.exit(2)
