"""Training data of the world teachers, rendered on the fly: a pool of reference renders.

The reference renderer traces all views of one shape together, so on a GPU its cost is
mostly a fixed cost per shape and call (kernel launches), nearly independent of how many
rays it traces. The pool therefore renders blocks of many entries at once (each block holds
``objects_per_block`` objects x ``entries_per_object`` entries), keeps ``size`` entries on
the training device (uint8), and re-renders one block every ``refresh_every`` steps, round
robin, so the data keeps changing while the GPU mostly trains.

An entry is one view (text-to-image, classifier) or a group of 1 + K views of one object
(multi-view teacher). Only training objects (``train_objects``) are ever drawn, in a
sequence of random permutations, so that every training object is in the pool in about
equal numbers (no attribute can be guessed from which combinations happen to be present).
``RenderPoolConfig.shape_repeats`` may list every object of a shape several times in each
permutation, to give a shape the teacher finds hard a larger share of the training (colours
and patterns stay balanced within the shape).
All randomness comes from the generator passed in, so a pool is reproducible from its seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from distill3d.cameras import Cameras, orbit_cameras, sample_orbit_cameras
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference
from distill3d.world.split import train_objects
from distill3d.world.views import view_bucket_index
from distill3d.world.vocabulary import SHAPES


@dataclass
class ViewCameras:
    """Random single views: orbit cameras looking at the object centre.

    Elevation is uniform in ``elevation_range`` except for a share ``overhead_fraction`` of
    views uniform in ``overhead_elevation_range`` (teaches the ", overhead view" suffix).
    Distances 1.5 - 2.0 and fovy 30 - 45 are Consistent3D's (appendix, "Rendering settings"); at
    1.5 and 30 degrees a world object overflows the frame, so distances extend to 3.0, where
    whole objects are seen as image data sets frame them.
    """

    elevation_range: tuple[float, float] = (-10.0, 60.0)
    overhead_fraction: float = 0.15
    overhead_elevation_range: tuple[float, float] = (60.0, 85.0)
    distance_range: tuple[float, float] = (1.5, 3.0)
    fovy_range: tuple[float, float] = (30.0, 45.0)

    def sample(self, n: int, resolution: int, generator: torch.Generator | None = None) -> tuple[Cameras, dict]:
        cams, params = sample_orbit_cameras(n, resolution, resolution, elevation_range=self.elevation_range,
                                            distance_range=self.distance_range, fovy_range=self.fovy_range,
                                            generator=generator)
        lo, hi = self.overhead_elevation_range
        overhead = torch.rand(n, generator=generator) < self.overhead_fraction
        if overhead.any():
            el = torch.where(overhead, lo + (hi - lo) * torch.rand(n, generator=generator), params["elevation"])
            params["elevation"] = el
            cams = orbit_cameras(el, params["azimuth"], params["distance"], params["fovy"], resolution, resolution)
        return cams, params


@dataclass
class RenderPoolConfig:
    """Size and refresh rate of a render pool (entries = views or multi-view groups)."""

    size: int = 16384
    entries_per_object: int = 4  # entries of one object in a block
    objects_per_block: int = 64  # a block = objects_per_block * entries_per_object entries
    refresh_every: int = 50  # training steps between two block refreshes (0: never)
    resolution: int = 64
    supersample: int = 2
    chunk_rays: int = 1 << 20  # rays traced at once per shape (GPU memory vs. kernel launches)
    shape_repeats: dict[str, int] = field(default_factory=dict)  # shape -> copies per permutation (default 1)

    def __post_init__(self) -> None:
        for shape, copies in self.shape_repeats.items():
            if shape not in SHAPES:
                raise ValueError(f"shape_repeats names {shape!r}, which is not a shape of the world {SHAPES}")
            if not isinstance(copies, int) or copies < 1:
                raise ValueError(f"shape_repeats[{shape!r}] must be a whole number >= 1, got {copies!r}")

    @property
    def block_size(self) -> int:
        return self.entries_per_object * self.objects_per_block

    @property
    def num_blocks(self) -> int:
        return max(1, self.size // self.block_size)


def repeat_shapes(objects: list[WorldObject], repeats: dict[str, int]) -> list[WorldObject]:
    """``objects`` with every object of shape s listed ``repeats[s]`` times (others once)."""
    return [o for o in objects for _ in range(repeats.get(o.shape, 1))]


EntryCameraSampler = Callable[[int, int, torch.Generator], tuple[Cameras, dict]]
"""(entries, resolution, generator) -> cameras [entries * views_per_entry] and their parameters."""


class RenderPool:
    """Reference renders of training objects kept on the training device.

    images: [N, V, 3, R, R] uint8; c2w [N, V, 4, 4], K [N, V, 3, 3], azimuth and elevation
    [N, V] (degrees), bucket [N, V] (index into ``VIEW_BUCKETS``); object_index [N]
    (``WorldObject.index``). N = num_blocks * block_size.
    """

    def __init__(self, config: RenderPoolConfig, views_per_entry: int, sample_cameras: EntryCameraSampler,
                 device: torch.device | str = "cpu", objects: list[WorldObject] | None = None):
        self.config = config
        self.views = views_per_entry
        self.sample_cameras = sample_cameras
        self.device = torch.device(device)
        self.objects = objects if objects is not None else repeat_shapes(train_objects(), config.shape_repeats)
        N, V, R = config.num_blocks * config.block_size, views_per_entry, config.resolution
        self.images = torch.zeros(N, V, 3, R, R, dtype=torch.uint8, device=self.device)
        self.c2w = torch.zeros(N, V, 4, 4, device=self.device)
        self.K = torch.zeros(N, V, 3, 3, device=self.device)
        self.azimuth = torch.zeros(N, V, device=self.device)
        self.elevation = torch.zeros(N, V, device=self.device)
        self.bucket = torch.zeros(N, V, dtype=torch.long, device=self.device)
        self.object_index = torch.zeros(N, dtype=torch.long, device=self.device)
        self.next_block = 0
        self.draws = 0  # objects drawn so far (position in the sequence of permutations)
        self.object_seed: int | None = None
        self.render_seconds = 0.0

    def __len__(self) -> int:
        return self.images.shape[0]

    @torch.no_grad()
    def render_block(self, block: int, generator: torch.Generator) -> None:
        """Re-render block ``block`` with new objects and cameras drawn from ``generator``."""
        start = time.perf_counter()
        cfg, V = self.config, self.views
        n = cfg.block_size
        objects = [o for o in self.next_objects(cfg.objects_per_block, generator) for _ in range(cfg.entries_per_object)]
        cams, params = self.sample_cameras(n, cfg.resolution, generator)
        out = render_reference([o for o in objects for _ in range(V)], cams.to(self.device),
                               supersample=cfg.supersample, chunk_rays=cfg.chunk_rays)
        rows = slice(block * n, (block + 1) * n)
        rgb = out.rgb.reshape(n, V, cfg.resolution, cfg.resolution, 3).permute(0, 1, 4, 2, 3)
        self.images[rows] = (rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
        self.c2w[rows] = cams.c2w.reshape(n, V, 4, 4).to(self.device)
        self.K[rows] = cams.K.reshape(n, V, 3, 3).to(self.device)
        self.azimuth[rows] = params["azimuth"].reshape(n, V).to(self.device)
        self.elevation[rows] = params["elevation"].reshape(n, V).to(self.device)
        self.bucket[rows] = view_bucket_index(params["azimuth"], params["elevation"]).reshape(n, V).to(self.device)
        self.object_index[rows] = torch.tensor([o.index for o in objects], device=self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.render_seconds += time.perf_counter() - start

    def next_objects(self, count: int, generator: torch.Generator) -> list[WorldObject]:
        """The next ``count`` objects of the sequence of random permutations of ``self.objects``."""
        if self.object_seed is None:
            self.object_seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        out = []
        for _ in range(count):
            permutation, position = divmod(self.draws, len(self.objects))
            order = torch.randperm(len(self.objects), generator=torch.Generator().manual_seed(self.object_seed + permutation))
            out.append(self.objects[int(order[position])])
            self.draws += 1
        return out

    def fill(self, generator: torch.Generator, progress: bool = True) -> None:
        """Render every block."""
        for block in tqdm(range(self.config.num_blocks), desc="rendering training pool", disable=not progress,
                          leave=False):
            self.render_block(block, generator)
        self.next_block = 0

    def maybe_refresh(self, step: int, generator: torch.Generator) -> bool:
        """Re-render the next block when ``step`` is a refresh step; True if it did."""
        every = self.config.refresh_every
        if every <= 0 or step == 0 or step % every:
            return False
        self.render_block(self.next_block, generator)
        self.next_block = (self.next_block + 1) % self.config.num_blocks
        return True

    def sample_indices(self, batch: int, generator: torch.Generator) -> Tensor:
        """Entry indices [batch] drawn uniformly (on the pool's device)."""
        return torch.randint(len(self), (batch,), generator=generator).to(self.device)

    def images_float(self, index: Tensor) -> Tensor:
        """Entries' images [b, V, 3, R, R] in [-1, 1] (float32)."""
        return self.images[index].float() * (2.0 / 255.0) - 1.0

    def cameras(self, index: Tensor, view: int | slice) -> Cameras:
        """Cameras of ``view`` (an int or a slice of views) of the entries ``index``, flattened."""
        c2w, K = self.c2w[index][:, view], self.K[index][:, view]
        R = self.config.resolution
        return Cameras(c2w.reshape(-1, 4, 4), K.reshape(-1, 3, 3), R, R)

    # ------------------------------------------------------------------ state
    def state_tensors(self) -> dict[str, Tensor]:
        return {"images": self.images, "c2w": self.c2w, "K": self.K, "azimuth": self.azimuth,
                "elevation": self.elevation, "bucket": self.bucket, "object_index": self.object_index,
                "next_block": torch.tensor(self.next_block), "draws": torch.tensor(self.draws),
                "object_seed": torch.tensor(-1 if self.object_seed is None else self.object_seed)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for name, value in tensors.items():
            if name in ("next_block", "draws"):
                setattr(self, name, int(value))
            elif name == "object_seed":
                self.object_seed = None if int(value) < 0 else int(value)
            else:
                current = getattr(self, name)
                if current.shape != value.shape:
                    raise ValueError(f"stored pool {name} has shape {tuple(value.shape)}, expected {tuple(current.shape)}")
                current.copy_(value)
