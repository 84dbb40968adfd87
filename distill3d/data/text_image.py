"""Text-image pairs: one random view of an object with its view-dependent prompt.

On disk, per shard ``DIR/shard-XXXXX/``::

    <id>.png             RGBA image, straight alpha
    metadata.jsonl       one JSON line per image, in id order: file_name, index, prompt (with the
                         view suffix), base_prompt, name, camera, source

(``file_name`` + ``metadata.jsonl`` is also what Hugging Face ``imagefolder`` reads.) While a
shard is being written its lines wait as ``_pending/<id>.json``, written after the image; the
shard's ``metadata.jsonl`` replaces them once the shard is complete.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import Dataset

from distill3d.data.layout import (camera_tensors, cameras_to_json, dumps_json, encode_rgba_png, read_image,
                                   read_json, read_meta, shard_name)
from distill3d.data.multiview import SphereViews, views_options
from distill3d.data.shards import ItemPlan, atomic_path, write_text_atomic

METADATA_FILE = "metadata.jsonl"
PENDING_DIR = "_pending"


@dataclass(frozen=True)
class TextImageKind:
    """Writes one image per item from a random camera, with its view prompt."""

    cameras: SphereViews = field(default_factory=SphereViews)
    kind: ClassVar[str] = "text-image"

    @property
    def views_per_item(self) -> int:
        return 1

    def options(self) -> dict:
        return {"cameras": views_options(self.cameras)}

    def plan(self, index: int, generator: torch.Generator, resolution: int) -> ItemPlan:
        return ItemPlan(*self.cameras.sample(1, resolution, generator))

    def is_written(self, shard: Path, item: str) -> bool:
        return (shard / METADATA_FILE).is_file() or (shard / PENDING_DIR / f"{item}.json").is_file()

    def write(self, shard: Path, item: str, rgba: torch.Tensor, plan: ItemPlan, record: dict) -> None:
        with atomic_path(shard / f"{item}.png") as tmp:
            encode_rgba_png(rgba[0], tmp)
        line = {"file_name": f"{item}.png", "index": record["index"], "prompt": record["view_prompts"][0],
                "base_prompt": record["prompt"], "name": record["name"], "source": record["source"],
                "camera": cameras_to_json(plan.cameras, plan.params)[0]}
        (shard / PENDING_DIR).mkdir(exist_ok=True)
        write_text_atomic(shard / PENDING_DIR / f"{item}.json", dumps_json(line))

    def finish_shard(self, shard: Path, items) -> None:
        pending = shard / PENDING_DIR
        if (shard / METADATA_FILE).is_file() and not pending.exists():
            return
        lines = (json.dumps(read_json(pending / f"{item}.json"), sort_keys=True) + "\n" for item in items)
        write_text_atomic(shard / METADATA_FILE, "".join(lines))
        shutil.rmtree(pending)


class TextImageDataset(Dataset):
    """Reads a text-image data set. Each sample is a dict:

    image [H, W, 4] (colour over ``background``, or straight colour when None; alpha),
    prompt (with view suffix), base_prompt, name (str), c2w [4, 4], K [3, 3],
    elevation / azimuth / distance / fovy (0-dim), index (int).
    """

    def __init__(self, root: Path, *, background: float | None = 1.0):
        self.root = Path(root)
        self.meta = read_meta(self.root, TextImageKind.kind)
        self.background = background
        self.records: list[dict] = []
        for first in range(0, self.meta["count"], self.meta["shard_size"]):
            shard = shard_name(first // self.meta["shard_size"])
            with open(self.root / shard / METADATA_FILE) as f:
                self.records += [dict(json.loads(line), shard=shard) for line in f if line.strip()]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = read_image(self.root / record["shard"] / record["file_name"], self.background)
        cams = camera_tensors([record["camera"]])
        return {"image": image, **{k: v[0] for k, v in cams.items()}, "prompt": record["prompt"],
                "base_prompt": record["base_prompt"], "name": record["name"], "index": record["index"]}
