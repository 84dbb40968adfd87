"""View buckets and view-dependent prompts ("a red striped torus, front view").

The rule (the same for every shape, and the same when training teachers and distilling):

- **overhead** when the elevation is above 60 degrees;
- otherwise by azimuth wrapped to (-180, 180]: **front** when |azimuth| <= 45 (the object's
  front faces +X, azimuth 0), **back** when |azimuth| >= 135, **side** in between.

Only shapes with a front (``SHAPES_WITH_FRONT``) make the bucket visible in the image, but
teachers are trained with the suffix for every shape, as text-to-3D tools do.
"""

from __future__ import annotations

from typing import Sequence

import torch

from distill3d.world.prompts import WorldObject
from distill3d.world.vocabulary import VIEW_BUCKETS

OVERHEAD_ELEVATION_DEG = 60.0
"""Views with elevation strictly above this are "overhead"."""

FRONT_HALF_ANGLE_DEG = 45.0
"""Azimuths within this of 0 are "front", within this of 180 are "back"."""


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).detach().cpu()


def degrees_off_front(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """|azimuth| after wrapping to [-180, 180): 0 straight in front (+X), 180 straight behind."""
    return (torch.remainder(azimuth_deg + 180.0, 360.0) - 180.0).abs()


def view_bucket_index(azimuth_deg, elevation_deg) -> torch.Tensor:
    """Bucket indices into ``VIEW_BUCKETS`` for broadcastable azimuths / elevations (degrees)."""
    az, el = torch.broadcast_tensors(_as_tensor(azimuth_deg), _as_tensor(elevation_deg))
    off_front = degrees_off_front(az)
    index = torch.full(az.shape, VIEW_BUCKETS.index("side"), dtype=torch.long)
    index[off_front <= FRONT_HALF_ANGLE_DEG] = VIEW_BUCKETS.index("front")
    index[off_front >= 180.0 - FRONT_HALF_ANGLE_DEG] = VIEW_BUCKETS.index("back")
    index[el > OVERHEAD_ELEVATION_DEG] = VIEW_BUCKETS.index("overhead")
    return index


def view_bucket(azimuth_deg, elevation_deg, shape: str | None = None) -> str | list[str]:
    """"front" / "side" / "back" / "overhead" for a view (degrees).

    Numbers give one word; tensors, arrays or lists give a flat list of words. ``shape`` is
    accepted for symmetry with the classifier's call; the rule does not depend on it.
    """
    index = view_bucket_index(azimuth_deg, elevation_deg)
    if index.ndim == 0:
        return VIEW_BUCKETS[int(index)]
    return [VIEW_BUCKETS[int(i)] for i in index.reshape(-1)]


def view_suffix(bucket: str) -> str:
    """"front" -> ", front view"."""
    if bucket not in VIEW_BUCKETS:
        raise ValueError(f"unknown view bucket {bucket!r}; known: {', '.join(VIEW_BUCKETS)}")
    return f", {bucket} view"


def view_prompt(obj: WorldObject | Sequence[WorldObject], azimuth_deg, elevation_deg) -> str | list[str]:
    """The prompt of ``obj`` seen from a view, e.g. "a red striped torus, front view".

    With one object and scalar angles a string; with [B] angles (and one object or B objects)
    a list of B strings.
    """
    buckets = view_bucket(azimuth_deg, elevation_deg)
    if isinstance(buckets, str):
        if not isinstance(obj, WorldObject):
            raise ValueError("a sequence of objects needs one azimuth / elevation per object")
        return obj.prompt + view_suffix(buckets)
    objects = [obj] * len(buckets) if isinstance(obj, WorldObject) else list(obj)
    if len(objects) != len(buckets):
        raise ValueError(f"{len(objects)} objects but {len(buckets)} views")
    return [o.prompt + view_suffix(b) for o, b in zip(objects, buckets)]
