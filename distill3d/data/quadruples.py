"""DD3G's quadruples {N, C, II, OI} on disk (DD3G Sec. III-A): initial noise, cameras, input image and
the teacher's multi-view output, in shards of ``shard_size`` items.

One shard is one safetensors file ``quadruples-XXXXX.safetensors`` holding, for its n items:

    index          int64 [n]                 item index in the data set
    object         int64 [n]                 index into the source's object list (``meta.json``)
    noise_seed     int64 [n]                 N is regenerated from it: ``quadruple_noise``
    camera_params  float32 [n, 1 + K, 4]     elevation, azimuth (deg), distance, fovy (deg) of the
                                             input camera then the K output cameras (orbit cameras)
    input_image    uint8 [n, R, R, 3]        II on white
    output_images  uint8 [n, K, R, R, 3]     OI, the teacher's 50-step deterministic DDIM from N

N is not stored: 4 x 3 x 64 x 64 float16 values are 98 KB an item against about 60 KB for everything
else, and the seed reproduces it bit for bit (a CPU generator), so (N, C, II) -> OI can be checked later.
``meta.json`` records the settings, the teacher and the objects; ``"complete": true`` once every shard
is written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import Dataset

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.data.layout import META_FILE, read_json
from distill3d.data.shards import atomic_path
from distill3d.errors import UserError

KIND = "dd3g-quadruples"
CAMERA_PARAMS = ("elevation", "azimuth", "distance", "fovy")
FIELDS = ("index", "object", "noise_seed", "camera_params", "input_image", "output_images")


def shard_file(root: Path, shard: int) -> Path:
    return Path(root) / f"quadruples-{shard:05d}.safetensors"


def quadruple_noise(seed: int, views: int, channels: int, size: int) -> Tensor:
    """N [views, channels, size, size], float32, drawn on the CPU from ``seed`` alone (any device gets the same)."""
    return torch.randn((views, channels, size, size), generator=torch.Generator().manual_seed(int(seed)))


def params_to_cameras(params: Tensor, resolution: int) -> Cameras:
    """Orbit cameras [M] from parameters [M, 4] (elevation, azimuth, distance, fovy)."""
    return orbit_cameras(params[:, 0], params[:, 1], params[:, 2], params[:, 3], resolution, resolution)


def to_uint8(images: Tensor) -> Tensor:
    """Images in [0, 1] -> uint8, rounded."""
    return (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def write_shard(path: Path, items: dict[str, Tensor]) -> None:
    """Write one shard atomically; ``items`` holds every name of ``FIELDS``, first dimensions equal."""
    missing = set(FIELDS) - set(items)
    if missing:
        raise ValueError(f"a quadruple shard needs {sorted(missing)}")
    n = {name: items[name].shape[0] for name in FIELDS}
    if len(set(n.values())) != 1:
        raise ValueError(f"fields of one shard differ in length: {n}")
    with atomic_path(Path(path)) as tmp:
        save_file({k: items[k].contiguous().cpu() for k in FIELDS}, str(tmp))
        tmp.chmod(0o644)  # safetensors creates its file readable by its owner only


def read_shard(path: Path) -> dict[str, Tensor]:
    return load_file(str(path))


def check_quadruple_folder(root: Path) -> tuple[dict, list[Path]]:
    """(meta, finished shard files) of a collected folder; a ``UserError`` saying what is wrong otherwise."""
    meta_path = Path(root) / META_FILE
    if not meta_path.is_file():
        raise UserError(f"{root} holds no quadruples (no {META_FILE}); collect them with "
                        "`distill3d dd3g collect --out DIR`")
    meta = read_json(meta_path)
    if meta.get("kind") != KIND:
        raise UserError(f"{root} holds a {meta.get('kind')!r} data set, not DD3G quadruples")
    shards = sorted(Path(root).glob("quadruples-*.safetensors"))
    if not shards:
        raise UserError(f"{root} has no finished shard yet")
    return meta, shards


class QuadrupleDataset(Dataset):
    """The quadruples of a collected folder, one item at a time (all shards held in memory as uint8).

    Item: ``input_image`` [R, R, 3] and ``output_images`` [K, R, R, 3] float in [0, 1] on white,
    ``noise`` [K, C, h, h] (h = R for a pixel-space teacher, ``meta["noise_size"]`` for a latent one),
    ``camera_params`` [1 + K, 4], ``index`` and ``object`` (ints).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.meta, shards = check_quadruple_folder(self.root)
        parts = [read_shard(p) for p in shards]
        self.data = {k: torch.cat([p[k] for p in parts]) for k in FIELDS}
        self.noise_channels = int(self.meta["noise_channels"])
        self.noise_size = int(self.meta.get("noise_size", self.meta["resolution"]))  # latent teachers: h < R

    def __len__(self) -> int:
        return int(self.data["index"].shape[0])

    def __getitem__(self, i: int) -> dict:
        d = self.data
        K = d["output_images"].shape[1]
        return {"index": int(d["index"][i]), "object": int(d["object"][i]),
                "input_image": d["input_image"][i].float() / 255.0,
                "output_images": d["output_images"][i].float() / 255.0,
                "camera_params": d["camera_params"][i],
                "noise": quadruple_noise(int(d["noise_seed"][i]), K, self.noise_channels, self.noise_size)}


def shard_ranges(count: int, shard_size: int) -> list[range]:
    """Item ranges of the shards of a data set of ``count`` items."""
    return [range(s, min(s + shard_size, count)) for s in range(0, count, shard_size)]


def noise_seed(seed: int, index: int) -> int:
    """The noise seed of item ``index`` (a 63-bit mix of the data set's seed and the index)."""
    hi, lo = np.random.SeedSequence((int(seed), int(index), 1)).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & ((1 << 63) - 1)


__all__ = [
    "CAMERA_PARAMS",
    "FIELDS",
    "KIND",
    "QuadrupleDataset",
    "check_quadruple_folder",
    "noise_seed",
    "params_to_cameras",
    "quadruple_noise",
    "read_shard",
    "shard_file",
    "shard_ranges",
    "to_uint8",
    "write_shard",
]
