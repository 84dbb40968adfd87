"""Views in which an attribute cannot be read: hidden two-tone halves and bucket cuts.

- Two-tone paints z < 0 in the secondary colour, so from above the lower half may be hidden
  and "a red two-tone sphere" looks exactly like "a red plain sphere". ``pattern_hidden``
  renders each plain or two-tone object's counterpart (plain <-> two-tone) at the same camera
  and calls the view hidden when almost no pixel differs.
- The view bucket is a hard cut of a continuous camera angle (front within 45 degrees of +X,
  back within 45 of -X, overhead above 60 degrees elevation), so views a few degrees from a cut
  look almost alike on either side of it: ``degrees_to_bucket_cut``.

The classifier evaluation reports its accuracy on all views and on the views left after
removing these (benchmarks/RESULTS.md, "Pattern visibility").
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference
from distill3d.world.views import FRONT_HALF_ANGLE_DEG, OVERHEAD_ELEVATION_DEG, degrees_off_front
from distill3d.world.vocabulary import PLAIN

TWO_TONE = "two-tone"
PIXEL_TOLERANCE = 0.1  # a pixel differs when a channel differs by more than this (images in [0, 1])
MAX_PIXEL_SHARE = 0.001  # a view is hidden when fewer than this share of its pixels differ
BUCKET_MARGIN_DEG = 3.0  # views closer than this to a bucket cut are left out of the "clear" bucket figure


def counterpart(obj: WorldObject) -> WorldObject:
    """The same shape and colour with plain and two-tone swapped (other patterns: itself)."""
    if obj.pattern not in (PLAIN, TWO_TONE):
        return obj
    return WorldObject(obj.colour, TWO_TONE if obj.pattern == PLAIN else PLAIN, obj.shape)


def indistinguishable(a: Tensor, b: Tensor, pixel_tolerance: float = PIXEL_TOLERANCE,
                      max_pixel_share: float = MAX_PIXEL_SHARE) -> Tensor:
    """[N] bool: images a, b [N, H, W, 3] differ (> tolerance in any channel) on too few pixels to tell apart."""
    differing = ((a - b).abs() > pixel_tolerance).any(dim=-1).flatten(1).float().mean(dim=1)
    return differing < max_pixel_share


def pattern_hidden(objects: list[WorldObject], cameras: Cameras, images: Tensor,
                   pixel_tolerance: float = PIXEL_TOLERANCE, max_pixel_share: float = MAX_PIXEL_SHARE,
                   batch_size: int = 256) -> Tensor:
    """[N] bool: the view of a plain or two-tone object (images [N, H, W, 3], its reference
    renders at ``cameras``) looks like its counterpart's; False for the other patterns."""
    idx = [i for i, o in enumerate(objects) if o.pattern in (PLAIN, TWO_TONE)]
    hidden = torch.zeros(len(objects), dtype=torch.bool)
    chunk = 1 << 20 if cameras.device.type == "cuda" else 1 << 17
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        twins = render_reference([counterpart(objects[i]) for i in part], cameras[torch.tensor(part)],
                                 chunk_rays=chunk).rgb
        hidden[part] = indistinguishable(images[part].to(twins.device), twins, pixel_tolerance,
                                         max_pixel_share).cpu()
    return hidden


def degrees_to_bucket_cut(azimuth: Tensor, elevation: Tensor) -> Tensor:
    """[N] degrees from a view to the nearest cut between view buckets (azimuth or elevation)."""
    off_front = degrees_off_front(azimuth)
    to_cut = torch.minimum((off_front - FRONT_HALF_ANGLE_DEG).abs(),
                           (off_front - (180.0 - FRONT_HALF_ANGLE_DEG)).abs())
    overhead = elevation > OVERHEAD_ELEVATION_DEG
    # above the cut all azimuths are "overhead": only the elevation cut counts there
    return torch.where(overhead, elevation - OVERHEAD_ELEVATION_DEG,
                       torch.minimum(to_cut, OVERHEAD_ELEVATION_DEG - elevation))
