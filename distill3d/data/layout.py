"""The on-disk layout shared by every distill3d data set (see docs/data-layout.md).

A data set is a folder::

    DIR/meta.json                 kind, layout version, count, shard size, resolution, source, options
    DIR/shard-00000/...           items 0 .. shard_size-1
    DIR/shard-00001/...           the next shard_size items, and so on

Item ``i`` lives in shard ``i // shard_size`` under the id ``f"{i:07d}"``, so a reader finds
any item from ``meta.json`` alone. Images are 8-bit RGBA PNGs with **straight** (not
premultiplied) alpha, as the PNG standard defines it. Cameras are JSON lists of
``Cameras.to_dicts()`` entries (OpenCV camera-to-world, pixel intrinsics, image size), each
with the orbit parameters ``elevation`` / ``azimuth`` / ``distance`` / ``fovy`` (degrees,
world units) it was sampled from.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset
from PIL import Image

from distill3d.cameras import Cameras
from distill3d.errors import UserError
from distill3d.render_output import RenderOutput

LAYOUT_VERSION = 1
"""Bumped whenever a reader of the old layout could misread the new one."""

META_FILE = "meta.json"
REPORT_FILE = "report.json"
CAMERAS_FILE = "cameras.json"
ITEM_FILE = "item.json"
TEMP_PREFIX = ".tmp-"
"""Names of half-written files and folders start with this; readers ignore them, resume deletes them."""

CAMERA_PARAMS = ("elevation", "azimuth", "distance", "fovy")
"""Orbit parameters stored beside each camera (degrees, world units); NaN when unknown."""


# ---------------------------------------------------------------------- item addresses
def shard_name(shard: int) -> str:
    """Folder name of shard ``shard``: ``shard-00000``."""
    return f"shard-{shard:05d}"


def item_id(index: int) -> str:
    """Id of item ``index``: ``0000042``."""
    return f"{index:07d}"


def item_location(root: Path, index: int, shard_size: int) -> tuple[Path, str]:
    """(shard folder, item id) of item ``index``."""
    return Path(root) / shard_name(index // shard_size), item_id(index)


class ItemFolderDataset(Dataset):
    """Base of the readers whose items are folders (``shard-XXXXX/<id>/``) of a complete data set."""

    kind: str = ""

    def __init__(self, root: Path, *, background: float | None = 1.0):
        self.root = Path(root)
        self.meta = read_meta(self.root, self.kind)
        self.background = background

    def __len__(self) -> int:
        return self.meta["count"]

    def item_folder(self, index: int) -> Path:
        """The folder of item ``index`` (IndexError outside the data set)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard, item = item_location(self.root, index, self.meta["shard_size"])
        return shard / item


# ---------------------------------------------------------------------- JSON
def dumps_json(data: Any) -> str:
    """Canonical JSON text (sorted keys, exact float round trip), newline-terminated."""
    return json.dumps(data, indent=1, sort_keys=True, allow_nan=True) + "\n"


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------- cameras
def cameras_to_json(cameras: Cameras, params: Mapping[str, torch.Tensor] | None = None) -> list[dict]:
    """One dict per camera: ``Cameras.to_dicts()`` plus the known ``CAMERA_PARAMS`` ([B] each)."""
    entries = cameras.to_dicts()
    for key, values in (params or {}).items():
        if key not in CAMERA_PARAMS:
            raise ValueError(f"unknown camera parameter {key!r}; known: {', '.join(CAMERA_PARAMS)}")
        for entry, value in zip(entries, torch.as_tensor(values).double().reshape(-1).tolist()):
            entry[key] = value
    return entries


def cameras_from_json(entries: list[dict]) -> tuple[Cameras, dict[str, torch.Tensor]]:
    """Inverse of ``cameras_to_json``: cameras and the orbit parameters ([B] each, NaN when unknown)."""
    params = {key: torch.tensor([float(e.get(key, math.nan)) for e in entries]) for key in CAMERA_PARAMS}
    return Cameras.from_dicts(entries), params


def write_cameras(path: Path, cameras: Cameras, params: Mapping[str, torch.Tensor] | None = None) -> None:
    """Write ``cameras_to_json`` to ``path``."""
    Path(path).write_text(dumps_json(cameras_to_json(cameras, params)))


def read_cameras(path: Path) -> tuple[Cameras, dict[str, torch.Tensor]]:
    """Inverse of ``write_cameras``."""
    return cameras_from_json(read_json(path))


def sample_cameras(sample: Mapping[str, torch.Tensor]) -> Cameras:
    """The ``Cameras`` of a reader sample or a DataLoader batch.

    Uses ``sample["c2w"]`` [..., 4, 4], ``sample["K"]`` [..., 3, 3] (leading dims, e.g. batch
    and view, are flattened into the camera batch) and the image size of ``sample["images"]``
    [..., H, W, 4] (or ``"image"`` / ``"input"``).
    """
    images = next(sample[k] for k in ("images", "image", "input") if k in sample)
    height, width = images.shape[-3], images.shape[-2]
    return Cameras(sample["c2w"].reshape(-1, 4, 4), sample["K"].reshape(-1, 3, 3), int(width), int(height))


# ---------------------------------------------------------------------- RGBA images
def straight_rgba(output: RenderOutput) -> torch.Tensor:
    """[B, H, W, 4] straight-alpha RGBA from a render composited over **black**.

    Over black the colour is premultiplied, so dividing by alpha recovers the surface colour;
    pixels with no coverage get colour 0.
    """
    alpha = output.alpha.clamp(0.0, 1.0)
    colour = torch.where(alpha > 0, output.rgb / alpha.clamp_min(1e-8), torch.zeros_like(output.rgb))
    return torch.cat([colour.clamp(0.0, 1.0), alpha], dim=-1)


def composite(rgba: torch.Tensor, background: float | torch.Tensor) -> torch.Tensor:
    """[..., 4] straight RGBA -> [..., 3] colour over ``background`` (a grey level or [..., 3])."""
    alpha = rgba[..., 3:4]
    return rgba[..., :3] * alpha + torch.as_tensor(background, dtype=rgba.dtype) * (1.0 - alpha)


def rgba_to_uint8(rgba: torch.Tensor) -> np.ndarray:
    """[H, W, 4] float in [0, 1] -> [H, W, 4] uint8 (round to nearest)."""
    return (rgba.detach().cpu().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy()


def encode_rgba_png(rgba: torch.Tensor, path: Path) -> None:
    """Write [H, W, 4] straight RGBA in [0, 1] as an 8-bit RGBA PNG (deterministic bytes)."""
    if rgba.ndim != 3 or rgba.shape[-1] != 4:
        raise ValueError(f"expected [H, W, 4] RGBA, got {tuple(rgba.shape)}")
    Image.fromarray(rgba_to_uint8(rgba)).save(path, format="PNG")


def read_rgba_png(path: Path) -> torch.Tensor:
    """[H, W, 4] float32 straight RGBA in [0, 1] from any PNG (grey / RGB files get alpha 1)."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGBA"))
    return torch.from_numpy(array.copy()).float() / 255.0


def camera_tensors(entries: list[dict]) -> dict[str, torch.Tensor]:
    """Reader fields of stored cameras: c2w [V, 4, 4], K [V, 3, 3] and the orbit parameters [V]."""
    cameras, params = cameras_from_json(entries)
    return {"c2w": cameras.c2w, "K": cameras.K, **params}


# ---------------------------------------------------------------------- reading a data set
def read_meta(root: Path, kind: str) -> dict:
    """``meta.json`` of a complete data set of ``kind``; ``UserError`` naming the problem otherwise."""
    path = Path(root) / META_FILE
    if not path.is_file():
        raise UserError(f"{root} has no {META_FILE}; it is not a distill3d data set")
    meta = read_json(path)
    if meta.get("kind") != kind:
        raise UserError(f"{root} holds a {meta.get('kind')!r} data set, not {kind!r}")
    if meta.get("layout_version", 0) > LAYOUT_VERSION:
        raise UserError(f"{root} was written by a newer distill3d (layout {meta['layout_version']}); upgrade")
    if not meta.get("complete", False):
        raise UserError(f"{root} is incomplete; finish it by writing it again with --resume")
    return meta


def read_image(path: Path, background: float | None) -> torch.Tensor:
    """[H, W, 4] from a stored PNG: colour over ``background`` (a grey level) plus alpha.

    With ``background=None`` the colour is the straight (un-composited) surface colour.
    """
    rgba = read_rgba_png(path)
    if background is None:
        return rgba
    return torch.cat([composite(rgba, float(background)), rgba[..., 3:]], dim=-1)
