"""DD3G's quadruple collection (Sec. III-A): for each item draw the initial noise N and the cameras C,
take the input image II (a world training object rendered exactly, or an image of ``--images``), and run
the teacher's deterministic 50-step DDIM from N to the output views OI. Written as shards by
``distill3d.data.quadruples``.

- Item ``i`` depends on ``(seed, i)`` alone: its source is source ``i mod len(sources)`` (the world's
  training objects: held-out objects are never collected; or the images of ``--images``, see
  ``input_images``), its cameras come from ``item_generator(seed, i)`` laid out as the multi-view
  teacher's groups (``sample_multiview_groups``; for an image, with the input camera's elevation and
  framing of ``InputImages.input_cameras``), its noise from ``noise_seed(seed, i)``.
- Shards are the unit of work: shard ``s`` goes to process ``s mod world_size`` (``RANK`` and
  ``WORLD_SIZE`` as set by torchrun or ``accelerate launch``), a finished shard is skipped on resume,
  and a shard is renamed into place only once written.
- ``verify_quadruples`` recomputes items from (N, C, II) and compares them with the stored OI.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from distill3d.configs import config_from_dict, config_to_dict
from distill3d.data.layout import META_FILE, dumps_json, read_json
from distill3d.data.quadruples import (
    KIND,
    noise_seed,
    params_to_cameras,
    quadruple_noise,
    read_shard,
    shard_file,
    shard_ranges,
    to_uint8,
    write_shard,
)
from distill3d.data.shards import item_generator, open_dataset_dir, write_text_atomic
from distill3d.devices import pick_device
from distill3d.diffusion.multiview_diffusers import (
    DiffusersMultiViewTeacher,
    is_multiview_diffusers_folder,
)
from distill3d.errors import UserError
from distill3d.methods.dd3g.input_images import InputImages, assume_input_camera
from distill3d.world_models.multiview_cameras import (
    MultiViewGroupCameras,
    sample_multiview_groups,
    split_groups,
)
from distill3d.world_models.teachers import DEFAULT_MULTIVIEW, WorldMultiViewTeacher


@dataclass
class CollectConfig:
    """Settings of ``distill3d dd3g collect``."""

    count: int = 1000                  # quadruples to collect (the paper: 2.8 M from 120 k images)
    seed: int = 0                      # with the item index, fixes everything an item is made of
    teacher: str = DEFAULT_MULTIVIEW   # the world's multi-view teacher (ImageDream's part) or its model folder
    ddim_steps: int = 50               # DD3G Sec. III-A: 50 deterministic DDIM steps
    guidance_scale: float | None = None  # CFG on the input image; none: the teacher's default
    shard_size: int = 256              # items per shard file
    batch_size: int = 64               # groups per teacher call
    device: str = "auto"               # auto: cuda when available, else cpu
    images: str = ""                   # input images: a folder of them or a multi-view data set; empty: world objects
    cameras: MultiViewGroupCameras = field(default_factory=MultiViewGroupCameras)  # the teacher's own layout

    def __post_init__(self) -> None:
        for name in ("count", "ddim_steps", "shard_size", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.seed < 0:
            raise UserError("--seed must be >= 0")


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's / accelerate's environment; (0, 1) when run alone."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if not 0 <= rank < world:
        raise UserError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world


def load_multiview_teacher(name: str, device: torch.device) -> WorldMultiViewTeacher | DiffusersMultiViewTeacher:
    """The world's multi-view teacher by shipped name or model folder, or an ImageDream / MVDream diffusers
    folder (``multiview_diffusers``), with a clear error otherwise."""
    if name != DEFAULT_MULTIVIEW and not Path(name).is_dir():
        raise UserError(f"teacher {name!r} is neither {DEFAULT_MULTIVIEW!r} nor a model folder")
    if name != DEFAULT_MULTIVIEW and is_multiview_diffusers_folder(name):
        return DiffusersMultiViewTeacher.from_pretrained(name, device=device)
    return WorldMultiViewTeacher.from_pretrained(name, device=device)


def plan_items(indices: range, config: CollectConfig, sources: InputImages) -> dict[str, Tensor]:
    """Sources [n], camera parameters [n, 1 + K, 4] and noise seeds [n] of the items ``indices``."""
    params, seeds = [], []
    for i in indices:
        _, p = sample_multiview_groups(1, sources.resolution, config.cameras, item_generator(config.seed, i))
        params.append(torch.stack([p[k][0] for k in ("elevation", "azimuth", "distance", "fovy")], dim=-1))
        seeds.append(noise_seed(config.seed, i))
    camera_params = torch.stack(params).float()
    objects = torch.tensor([i % len(sources.names) for i in indices], dtype=torch.int64)
    if sources.assumes_cameras:
        camera_params = assume_input_camera(camera_params, *sources.input_cameras(objects))
    return {"index": torch.tensor(list(indices), dtype=torch.int64), "object": objects,
            "camera_params": camera_params, "noise_seed": torch.tensor(seeds, dtype=torch.int64)}


@torch.no_grad()
def teacher_views(teacher: WorldMultiViewTeacher, plan: dict[str, Tensor], config: CollectConfig,
                  sources: InputImages) -> tuple[Tensor, Tensor]:
    """II [n, R, R, 3] and OI [n, K, R, R, 3], in [0, 1], of the planned items."""
    R, K = teacher.native_image_size, config.cameras.num_views
    n = plan["index"].shape[0]
    cameras = params_to_cameras(plan["camera_params"].reshape(-1, 4), R)
    inputs, targets = split_groups(cameras, K)
    # quantised as stored, so that the stored II is what the teacher saw
    input_image = to_uint8(sources.images(plan["object"], inputs.to(teacher.device))).float() / 255.0
    h = teacher.latent_size(R)  # R for the world's pixel-space teacher, R / 8 for a latent one
    noise = torch.cat([quadruple_noise(int(s), K, teacher.latent_channels, h) for s in plan["noise_seed"]])
    cond = teacher.encode_condition(input_image.to(teacher.device), inputs, targets)
    outputs = teacher.sample(cond, num_steps=config.ddim_steps, guidance_scale=config.guidance_scale,
                             noise=noise.to(teacher.device))
    return input_image.reshape(n, R, R, 3), outputs


def collection_meta(config: CollectConfig, teacher: WorldMultiViewTeacher, sources: InputImages) -> dict:
    R = int(teacher.native_image_size)
    latent = {} if teacher.latent_size(R) == R else {"noise_size": int(teacher.latent_size(R))}  # N's h = w
    return {**latent, "kind": KIND, "count": config.count, "seed": config.seed, "teacher": config.teacher,
            "ddim_steps": config.ddim_steps, "guidance_scale": config.guidance_scale,
            "shard_size": config.shard_size, "resolution": R,
            "noise_channels": int(teacher.latent_channels), "views": config.cameras.num_views,
            "cameras": config_to_dict(config.cameras), "images": str(sources.folder.resolve()) if sources.folder else "",
            "objects": sources.names}


def join_dataset_dir(root: Path, meta: dict, *, resume: bool, rank: int, timeout: float = 600.0) -> None:
    """Rank 0 opens the folder (refusing a non-empty one without ``resume``); the other ranks wait for its
    ``meta.json`` and then join it, so no rank sees another's files as a reason to refuse."""
    if rank == 0:
        open_dataset_dir(root, meta, resume=resume)
        return
    deadline = time.monotonic() + timeout
    while not (root / META_FILE).is_file():
        if time.monotonic() > deadline:
            raise UserError(f"rank {rank}: rank 0 did not open {root} within {timeout:.0f} s")
        time.sleep(0.5)
    open_dataset_dir(root, meta, resume=True)


def collect_quadruples(config: CollectConfig, out_dir: str | Path, *, resume: bool = False,
                       progress: bool = True) -> dict:
    """Collect this process's shards of the data set in ``out_dir``; returns a summary."""
    root = Path(out_dir)
    rank, world = distributed_rank()
    device = pick_device(config.device)
    teacher = load_multiview_teacher(config.teacher, device)
    sources = InputImages(config.images or None, int(teacher.native_image_size), config.cameras.input_elevation_range)
    meta = collection_meta(config, teacher, sources)
    join_dataset_dir(root, meta, resume=resume, rank=rank)
    shards = [s for s, _ in enumerate(shard_ranges(config.count, config.shard_size)) if s % world == rank]
    todo = [s for s in shards if not shard_file(root, s).is_file()]
    ranges = shard_ranges(config.count, config.shard_size)
    bar = tqdm(total=sum(len(ranges[s]) for s in todo), desc=f"collect (rank {rank}/{world})", unit="item",
               disable=not progress)
    for s in todo:
        parts = []
        for start in range(ranges[s].start, ranges[s].stop, config.batch_size):
            plan = plan_items(range(start, min(start + config.batch_size, ranges[s].stop)), config, sources)
            ii, oi = teacher_views(teacher, plan, config, sources)
            parts.append({**plan, "input_image": to_uint8(ii).cpu(), "output_images": to_uint8(oi).cpu()})
            bar.update(len(plan["index"]))
        write_shard(shard_file(root, s), {k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    bar.close()
    done = all(shard_file(root, s).is_file() for s in range(len(ranges)))
    if done:
        write_text_atomic(root / META_FILE, dumps_json({**meta, "complete": True}))
    return {"out": str(root), "rank": rank, "world_size": world, "shards_written": len(todo),
            "shards_of_this_rank": len(shards), "complete": done}


VERIFY_TOLERANCE_UINT8 = 1
"""Largest output difference ``verify_quadruples`` accepts: recomputed in a batch of another size, the
floats move by rounding (on a CPU: 1 level at 1 pixel in 49152 between batches of 2 and 1)."""


@torch.no_grad()
def verify_quadruples(root: str | Path, items: int = 4, device: str = "auto") -> dict:
    """Re-plan the first ``items`` items of shard 0, render their II again and recompute OI from (N, C, II);
    report the largest differences in uint8 levels (0 when the device and precision match the collection's)."""
    root = Path(root)
    if not (root / META_FILE).is_file():
        raise UserError(f"{root} holds no quadruples (no {META_FILE})")
    meta = read_json(root / META_FILE)
    if meta.get("kind") != KIND or not shard_file(root, 0).is_file():
        raise UserError(f"{root} holds no finished quadruple shard")
    config = CollectConfig(count=meta["count"], seed=meta["seed"], teacher=meta["teacher"],
                           ddim_steps=meta["ddim_steps"], guidance_scale=meta["guidance_scale"], device=device,
                           images=meta.get("images", ""), cameras=config_from_dict(MultiViewGroupCameras, meta["cameras"]))
    sources = InputImages(config.images or None, meta["resolution"], config.cameras.input_elevation_range)
    stored = {k: v[:items] for k, v in read_shard(shard_file(root, 0)).items()}
    replanned = plan_items(range(int(stored["index"][0]), int(stored["index"][0]) + len(stored["index"])), config,
                           sources)
    same_plan = all(torch.equal(replanned[k], stored[k]) for k in replanned)
    teacher = load_multiview_teacher(config.teacher, pick_device(device))
    ii, oi = teacher_views(teacher, stored, config, sources)  # II rendered or read again
    ii_diff = (to_uint8(ii).cpu().int() - stored["input_image"].int()).abs()
    oi_diff = (to_uint8(oi).cpu().int() - stored["output_images"].int()).abs()
    return {"items": len(stored["index"]), "plan_reproduced": same_plan,
            "input_max_abs_diff_uint8": int(ii_diff.max()), "output_max_abs_diff_uint8": int(oi_diff.max()),
            "output_mean_abs_diff_uint8": float(oi_diff.float().mean()),
            "reproduced": same_plan and int(ii_diff.max()) == 0 and int(oi_diff.max()) <= VERIFY_TOLERANCE_UINT8}


__all__ = [
    "CollectConfig",
    "collect_quadruples",
    "distributed_rank",
    "plan_items",
    "teacher_views",
    "verify_quadruples",
]
