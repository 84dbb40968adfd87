"""Data sets written from the world: multi-view sequences, text-image pairs, multi-view groups.

Objects come from one split only (``train_objects()`` or ``heldout_objects()``), so a training
set never holds a held-out object. Item ``i`` of ``count`` shows object
``(i * n_objects) // count`` of the split (``shards.source_index``), and its cameras come
from a generator seeded by ``(seed, i)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from distill3d.cameras import Cameras
from distill3d.data.kinds import KINDS, dataset_kind
from distill3d.data.shards import DEFAULT_SHARD_SIZE, write_dataset
from distill3d.errors import UserError
from distill3d.render_output import RenderOutput
from distill3d.world import WorldObject, heldout_objects, render_reference, train_objects, view_prompt

__all__ = ["KINDS", "SPLITS", "WorldSource", "write_world_dataset"]

SPLITS = ("train", "heldout")


class WorldSource:
    """The world's objects of one split, rendered by the exact reference renderer."""

    def __init__(self, split: str = "train", *, supersample: int = 2, device: str | torch.device = "cpu",
                 objects: Sequence[WorldObject] | None = None):
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        self.split = split
        self.supersample = int(supersample)
        self.device = torch.device(device)
        available = train_objects() if split == "train" else heldout_objects()
        if objects:  # a chosen subset of the split, e.g. from --prompt
            outside = [obj.prompt for obj in objects if obj not in available]
            if outside:
                raise UserError(f"not in the {split} split: {', '.join(outside)} "
                                "('distill3d world list' shows the held-out objects)")
            available = list(dict.fromkeys(objects))
        self.items: Sequence[WorldObject] = available
        self.names = [obj.prompt for obj in self.items]

    def describe(self) -> dict:
        return {"type": "world", "split": self.split, "objects": len(self.items), "supersample": self.supersample}

    def prompt(self, item: WorldObject) -> str:
        return item.prompt

    def view_prompt(self, item: WorldObject, azimuth_deg: float, elevation_deg: float) -> str:
        return view_prompt(item, float(azimuth_deg), float(elevation_deg))

    def record(self, item: WorldObject) -> dict:
        return {"colour": item.colour, "pattern": item.pattern, "shape": item.shape}

    def render(self, item: WorldObject, cameras: Cameras) -> RenderOutput:
        return render_reference(item, cameras.to(self.device), supersample=self.supersample, background=0.0)


def write_world_dataset(kind: str, out_dir: Path, count: int, *, split: str = "train", resolution: int = 64,
                        seed: int = 0, resume: bool = False, views: int = 32, targets: int = 4,
                        shard_size: int = DEFAULT_SHARD_SIZE, progress: bool = True,
                        device: str | torch.device = "cpu", objects: Sequence[WorldObject] | None = None) -> Path:
    """Write ``count`` items of ``kind`` ("multiview", "text-image", "multiview-groups") from
    the world's ``split`` ("train" or "heldout") into ``out_dir``; returns ``out_dir``.

    ``objects`` restricts the items to some objects of the split (default: all of it).
    ``views``: frames per multiview item; ``targets``: target views per group. ``resume``
    continues an interrupted run (byte-identical to an uninterrupted one on the same ``device``,
    where the reference renderer runs).
    """
    writer = dataset_kind(kind, views=views, targets=targets)
    return write_dataset(writer, WorldSource(split, device=device, objects=objects), Path(out_dir), count, resolution=resolution,
                         seed=seed, shard_size=shard_size, resume=resume, progress=progress)
