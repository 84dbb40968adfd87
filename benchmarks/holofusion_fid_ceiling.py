"""The ceiling of HoloFusion's FID cut on the world: how far exact renders get, at the coarse model's resolution
and at the super-resolved one, against the reference of ``holofusion_table.py``.

    python benchmarks/holofusion_fid_ceiling.py --model holofusion-world --count 8 --views 32 --out runs/ceiling.json

HoloFusion's claim is that super-resolving the coarse model's renders lowers FID (Tab. 1: 122.5 -> 83.3).
A perfect coarse model renders exact objects, but with the detail of its S-pixel training renders; a
perfect HoloFusion adds the detail of the S x scale renders. Against the reference of the table
(``--count`` x ``--views`` exact renders of held-out objects at S x scale, the table's cameras, seed + 1):
- ``exact at S, upsampled``: the same objects at the same cameras rendered at S px and upsampled
  bilinearly to S x scale, a perfect coarse model without super-resolution. Only the resolution differs
  from the reference, so its FID is what the resolution alone costs: the most that super-resolution can
  take off a perfect coarse model (``resolution_cost``);
- ``exact, second draw``: other cameras (seed + 2) at S x scale, the table's floor: what a perfect model
  scores through the sampling noise of sets of this size.
Images are rounded to 8 bits, as the table's PNGs are.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from distill3d.atomic_files import write_json_atomic
from distill3d.cameras import Cameras
from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.eval.feature_networks import feature_network
from distill3d.eval.fid import feature_fid_kid
from distill3d.methods.holofusion.sample import load_holofusion
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects


def to_8_bit(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] rounded to the 256 levels of an 8-bit PNG, as the table writes them."""
    return (images.clamp(0, 1) * 255 + 0.5).floor() / 255


def exact_renders(cameras: Cameras, device: torch.device, batch: int = 64) -> torch.Tensor:
    """Held-out objects round robin (image k: object k mod 28) at ``cameras`` [N] -> rgb [N, H, W, 3], 8-bit."""
    objects = heldout_objects()
    rgb = [render_reference([objects[k % len(objects)] for k in range(s, min(s + batch, len(cameras)))],
                            cameras[s:s + batch].to(device)).rgb for s in range(0, len(cameras), batch)]
    return to_8_bit(torch.cat(rgb))


def upsampled(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images [N, h, w, 3] -> [N, size, size, 3], bilinear (half-pixel centres), rounded to 8 bits."""
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return to_8_bit(x.permute(0, 2, 3, 1))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="holofusion-world", help="the HoloFusion model whose cameras and sizes to use")
    p.add_argument("--count", type=int, default=8, help="as the table's --count")
    p.add_argument("--views", type=int, default=32, help="as the table's --views")
    p.add_argument("--features", default="classifier", help="FID network, as the table's --features")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="JSON file")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    model = load_holofusion(args.model)
    S, scale = model.config.grid.resolution, model.config.super_resolution.scale
    N = args.count * args.views
    reference_cams = model.config.views.draw(N, S * scale, args.seed + 1)      # the table's reference cameras
    reference = exact_renders(reference_cams, device)
    candidates = {
        "exact at S, upsampled": upsampled(exact_renders(reference_cams.resized(S, S), device), S * scale),
        "exact, second draw": exact_renders(model.config.views.draw(N, S * scale, args.seed + 2), device),
    }
    network = feature_network(args.features, device)

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([network.features(network.resize(images[s:s + 64].to(device))) for s in range(0, N, 64)])

    ref_features = features(reference)
    rows = {}
    for name, images in candidates.items():
        rows[name] = feature_fid_kid(features(images), ref_features, args.kid_subsets, args.seed)  # as the table's
        print(f"holofusion_fid_ceiling: {name}: FID {rows[name]['fid']:.2f}, KID {rows[name]['kid_mean']:.4f}",
              flush=True)
    result = {"model": str(args.model), "count": N, "resolution": S * scale, "coarse_resolution": S,
              "features": network.name, "seed": args.seed, "rows": rows,
              "resolution_cost": rows["exact at S, upsampled"]["fid"]}
    write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    try:
        main()
    except UserError as error:
        print(f"holofusion_fid_ceiling: {error}", file=sys.stderr)
        sys.exit(2)
