"""Views in which an attribute cannot be read: hidden two-tone halves and bucket cuts.

- Two-tone paints z < 0 in the secondary colour, so from above the lower half may be hidden
  and "a red two-tone sphere" looks exactly like "a red plain sphere". ``pattern_hidden``
  renders each plain or two-tone object's counterpart (plain <-> two-tone) at the same camera
  and calls the view hidden when almost no pixel differs.
- The view bucket is a hard cut of a continuous camera angle (front within 45 degrees of +X,
  back within 45 of -X, overhead above 60 degrees elevation), so views a few degrees from a cut
  look almost alike on either side of it: ``degrees_to_bucket_cut``. ``bucket_hidden`` renders
  the nearest view of another bucket (just past the nearest cut, same distance and field of
  view) and calls the view's bucket hidden when almost no pixel differs: very near a cut, and
  also a few degrees from it for a mug seen from the side away from its handle, whose round body
  changes only in shading as it turns, by less than the test's tolerance.

The classifier evaluation reports its accuracy on all views and on the views left after
removing these (benchmarks/RESULTS.md, "Pattern visibility").
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference
from distill3d.world.views import FRONT_HALF_ANGLE_DEG, OVERHEAD_ELEVATION_DEG, degrees_off_front
from distill3d.world.vocabulary import PLAIN, SHAPES_WITH_FRONT

TWO_TONE = "two-tone"
PIXEL_TOLERANCE = 0.1  # a pixel differs when a channel differs by more than this (images in [0, 1])
MAX_PIXEL_SHARE = 0.001  # a view is hidden when fewer than this share of its pixels differ
BUCKET_MARGIN_DEG = 3.0  # views closer than this to a bucket cut are left out of the "clear" bucket figure
BUCKET_BEYOND_DEG = 0.01  # the nearest view of another bucket lies this far past the cut


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
    for s in range(0, len(idx), batch_size):
        part = idx[s:s + batch_size]
        twins = render_reference([counterpart(objects[i]) for i in part], cameras[torch.tensor(part)]).rgb
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


def across_cut(azimuth: Tensor, elevation: Tensor, beyond: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Azimuth and elevation [N] (degrees) reflected across the nearest bucket cut, or with ``beyond``
    put that many degrees past it; and [N] bool: that cut is the overhead one."""
    off = degrees_off_front(azimuth)
    side = torch.where(torch.remainder(azimuth + 180.0, 360.0) - 180.0 < 0, -1.0, 1.0)  # the half the view is in
    near_front = (off - FRONT_HALF_ANGLE_DEG).abs() < (off - (180.0 - FRONT_HALF_ANGLE_DEG)).abs()
    cut = torch.where(near_front, FRONT_HALF_ANGLE_DEG, 180.0 - FRONT_HALF_ANGLE_DEG)
    overhead = (elevation > OVERHEAD_ELEVATION_DEG) | ((elevation - OVERHEAD_ELEVATION_DEG).abs() < (off - cut).abs())
    if beyond is None:
        off2, el2 = 2 * cut - off, 2 * OVERHEAD_ELEVATION_DEG - elevation
    else:
        off2 = cut + beyond * torch.sign(cut - off)
        el2 = OVERHEAD_ELEVATION_DEG + beyond * torch.sign(OVERHEAD_ELEVATION_DEG - elevation)
    return torch.where(overhead, azimuth, side * off2), torch.where(overhead, el2, elevation), overhead


def bucket_hidden(objects: list[WorldObject], params: dict[str, Tensor], images: Tensor,
                  beyond: float | None = BUCKET_BEYOND_DEG, batch_size: int = 256) -> Tensor:
    """[N] bool: the view of a shape with a front (images [N, H, W, 3], its reference renders at the
    orbit cameras ``params``: elevation, azimuth, distance, fovy) looks like the view ``beyond``
    degrees past the nearest bucket cut (None: the view mirrored across it, ``across_cut``); False
    for shapes without a front."""
    idx = torch.tensor([i for i, o in enumerate(objects) if o.shape in SHAPES_WITH_FRONT], dtype=torch.long)
    hidden = torch.zeros(len(objects), dtype=torch.bool)
    if idx.numel() == 0:
        return hidden
    p = {k: params[k].detach().cpu()[idx] for k in ("elevation", "azimuth", "distance", "fovy")}
    az, el, _ = across_cut(p["azimuth"], p["elevation"], beyond)
    H, W = images.shape[1:3]
    cams = orbit_cameras(el, az, p["distance"], p["fovy"], W, H).to(images.device)
    for s in range(0, idx.numel(), batch_size):
        part = idx[s:s + batch_size]
        others = render_reference([objects[i] for i in part.tolist()], cams[s:s + batch_size]).rgb
        hidden[part] = indistinguishable(images[part.to(images.device)], others).cpu()
    return hidden
