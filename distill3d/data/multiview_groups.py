"""Multi-view groups: an input view plus K target views of the same object (DD3G's teacher data).

On disk, per item ``DIR/shard-XXXXX/<id>/``::

    input.png, target_00.png ... target_{K-1}.png     RGBA, straight alpha
    cameras.json                                       1 + K cameras, the input camera first
    item.json                                          index, name, prompt, source, view prompts

Cameras (``GroupViews``): the input camera is random (elevation uniform in
``input_elevation_range``, azimuth uniform); the K targets sit at ``target_elevation_deg``
with azimuths ``input azimuth + offset + k * 360 / K``, ``offset`` uniform in
``[-azimuth_jitter_deg, azimuth_jitter_deg]`` (0 by default: target 0 is the input's azimuth,
as ImageDream lays out its four views). All views share one distance and fovy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.data.layout import (CAMERAS_FILE, ITEM_FILE, ItemFolderDataset, camera_tensors, dumps_json,
                                   encode_rgba_png, read_image, read_json, write_cameras)
from distill3d.data.multiview import FOVY_DEG, FRAMING_DISTANCE
from distill3d.data.shards import ItemPlan, atomic_path

INPUT_FILE = "input.png"


def target_name(k: int) -> str:
    return f"target_{k:02d}.png"


@dataclass(frozen=True)
class GroupViews:
    """Cameras of one group: a random input view and K targets on a circle (see module doc)."""

    targets: int = 4  # ImageDream / DD3G: four output views
    input_elevation_range: tuple[float, float] = (-5.0, 30.0)
    target_elevation_deg: float = 0.0  # ImageDream renders its four views at elevation 0
    azimuth_jitter_deg: float = 0.0
    distance: float = FRAMING_DISTANCE
    fovy_deg: float = FOVY_DEG

    def sample(self, resolution: int, generator: torch.Generator) -> tuple[Cameras, dict]:
        lo, hi = self.input_elevation_range
        u = torch.rand(3, generator=generator)
        input_el = lo + (hi - lo) * u[0]
        input_az = 360.0 * u[1] - 180.0
        offset = self.azimuth_jitter_deg * (2.0 * u[2] - 1.0)
        k = torch.arange(self.targets, dtype=torch.float32)
        target_az = input_az + offset + k * (360.0 / self.targets)
        azimuth = torch.remainder(torch.cat([input_az[None], target_az]) + 180.0, 360.0) - 180.0
        elevation = torch.cat([input_el[None], torch.full((self.targets,), float(self.target_elevation_deg))])
        n = 1 + self.targets
        params = {"elevation": elevation, "azimuth": azimuth, "distance": torch.full((n,), float(self.distance)),
                  "fovy": torch.full((n,), float(self.fovy_deg))}
        cams = orbit_cameras(elevation, azimuth, params["distance"], params["fovy"], resolution, resolution)
        return cams, params


@dataclass(frozen=True)
class MultiviewGroupsKind:
    """Writes groups of one input view and ``cameras.targets`` target views."""

    cameras: GroupViews = field(default_factory=GroupViews)
    kind: ClassVar[str] = "multiview-groups"

    @property
    def views_per_item(self) -> int:
        return 1 + self.cameras.targets

    def options(self) -> dict:
        return {"cameras": asdict(self.cameras)}

    def plan(self, index: int, generator: torch.Generator, resolution: int) -> ItemPlan:
        return ItemPlan(*self.cameras.sample(resolution, generator))

    def is_written(self, shard: Path, item: str) -> bool:
        return (shard / item).is_dir()

    def write(self, shard: Path, item: str, rgba: torch.Tensor, plan: ItemPlan, record: dict) -> None:
        with atomic_path(shard / item) as tmp:
            tmp.mkdir()
            encode_rgba_png(rgba[0], tmp / INPUT_FILE)
            for k, image in enumerate(rgba[1:]):
                encode_rgba_png(image, tmp / target_name(k))
            write_cameras(tmp / CAMERAS_FILE, plan.cameras, plan.params)
            (tmp / ITEM_FILE).write_text(dumps_json(record))

    def finish_shard(self, shard: Path, items) -> None:
        pass


class MultiviewGroupsDataset(ItemFolderDataset):
    """Reads a multi-view groups data set. Each sample is a dict:

    input [H, W, 4], targets [K, H, W, 4] (colour over ``background``, or straight colour when
    None; alpha), c2w [1+K, 4, 4] and K [1+K, 3, 3] with the input camera first,
    elevation / azimuth / distance / fovy [1+K], prompt, name (str), index (int).
    """

    kind = MultiviewGroupsKind.kind

    def __init__(self, root: Path, *, background: float | None = 1.0):
        super().__init__(root, background=background)
        self.targets = self.meta["options"]["cameras"]["targets"]

    def __getitem__(self, index: int) -> dict:
        folder = self.item_folder(index)
        record = read_json(folder / ITEM_FILE)
        return {"input": read_image(folder / INPUT_FILE, self.background),
                "targets": torch.stack([read_image(folder / target_name(k), self.background)
                                        for k in range(self.targets)]),
                **camera_tensors(read_json(folder / CAMERAS_FILE)),
                "prompt": record["prompt"], "name": record["name"], "index": index}
