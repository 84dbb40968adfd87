"""Multi-view sequences (CO3D-like): N frames of one object with their cameras.

On disk, per item ``DIR/shard-XXXXX/<id>/``::

    frames/000.png ...   RGBA frames, straight alpha
    cameras.json         one camera per frame (layout.cameras_to_json)
    item.json            index, name, prompt, source record, view prompt of every frame

``MultiviewDataset`` reads them back as dicts of tensors for a DataLoader.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from distill3d.cameras import Cameras, orbit_cameras, sample_orbit_cameras
from distill3d.data.layout import (CAMERAS_FILE, ITEM_FILE, ItemFolderDataset, camera_tensors, dumps_json,
                                   encode_rgba_png, read_image, read_json, write_cameras)
from distill3d.data.shards import ItemPlan, atomic_path

FOVY_DEG = 40.0
"""Vertical field of view of data set cameras."""

FRAMING_DISTANCE = 2.7
"""Camera distance at which a bounding sphere of radius 0.9 (the world's objects, normalised
meshes) fits a 40-degree view: 0.9 / sin(20 deg) = 2.63."""


@dataclass(frozen=True)
class SphereViews:
    """Random cameras looking at the origin, directions uniform on the sphere band of elevations."""

    elevation_range: tuple[float, float] = (-30.0, 80.0)
    distance_range: tuple[float, float] = (FRAMING_DISTANCE, FRAMING_DISTANCE)
    fovy_deg: float = FOVY_DEG

    def sample(self, n: int, resolution: int, generator: torch.Generator) -> tuple[Cameras, dict]:
        return sample_orbit_cameras(n, resolution, resolution, elevation_range=self.elevation_range,
                                    distance_range=self.distance_range, fovy_range=(self.fovy_deg, self.fovy_deg),
                                    generator=generator, uniform_sphere=True)


@dataclass(frozen=True)
class OrbitViews:
    """n cameras on one circle, evenly spaced in azimuth from a random start."""

    elevation_deg: float = 20.0
    distance: float = FRAMING_DISTANCE
    fovy_deg: float = FOVY_DEG

    def sample(self, n: int, resolution: int, generator: torch.Generator) -> tuple[Cameras, dict]:
        start = 360.0 * torch.rand(1, generator=generator) - 180.0
        azimuth = torch.remainder(start + torch.arange(n) * (360.0 / n) + 180.0, 360.0) - 180.0
        params = {"elevation": torch.full((n,), float(self.elevation_deg)), "azimuth": azimuth,
                  "distance": torch.full((n,), float(self.distance)), "fovy": torch.full((n,), float(self.fovy_deg))}
        cams = orbit_cameras(params["elevation"], azimuth, params["distance"], params["fovy"], resolution, resolution)
        return cams, params


def views_options(views: SphereViews | OrbitViews) -> dict:
    """JSON-ready description of a camera sampler."""
    return {"type": "sphere" if isinstance(views, SphereViews) else "orbit", **asdict(views)}


def frame_name(view: int) -> str:
    return f"{view:03d}.png"


@dataclass(frozen=True)
class MultiviewKind:
    """Writes multi-view sequences of ``views`` frames."""

    views: int = 32
    cameras: SphereViews | OrbitViews = field(default_factory=SphereViews)
    kind: ClassVar[str] = "multiview"

    @property
    def views_per_item(self) -> int:
        return self.views

    def options(self) -> dict:
        return {"views": self.views, "cameras": views_options(self.cameras)}

    def plan(self, index: int, generator: torch.Generator, resolution: int) -> ItemPlan:
        return ItemPlan(*self.cameras.sample(self.views, resolution, generator))

    def is_written(self, shard: Path, item: str) -> bool:
        return (shard / item).is_dir()

    def write(self, shard: Path, item: str, rgba: torch.Tensor, plan: ItemPlan, record: dict) -> None:
        with atomic_path(shard / item) as tmp:
            (tmp / "frames").mkdir(parents=True)
            for v, frame in enumerate(rgba):
                encode_rgba_png(frame, tmp / "frames" / frame_name(v))
            write_cameras(tmp / CAMERAS_FILE, plan.cameras, plan.params)
            (tmp / ITEM_FILE).write_text(dumps_json(record))

    def finish_shard(self, shard: Path, items) -> None:
        pass


class MultiviewDataset(ItemFolderDataset):
    """Reads a multi-view data set. Each sample is a dict:

    images [V, H, W, 4] (colour over ``background``, or straight colour when None; alpha),
    c2w [V, 4, 4] (OpenCV), K [V, 3, 3], elevation / azimuth / distance / fovy [V],
    prompt (str), name (str), index (int). ``layout.sample_cameras(sample)`` gives ``Cameras``.
    """

    kind = MultiviewKind.kind

    def __getitem__(self, index: int) -> dict:
        folder = self.item_folder(index)
        record = read_json(folder / ITEM_FILE)
        cams = read_json(folder / CAMERAS_FILE)
        images = torch.stack([read_image(folder / "frames" / frame_name(v), self.background)
                              for v in range(len(cams))])
        return {"images": images, **camera_tensors(cams), "prompt": record["prompt"], "name": record["name"],
                "index": index}
