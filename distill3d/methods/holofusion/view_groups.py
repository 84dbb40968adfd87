"""HoloFusion's training data: groups of posed views of one object, V_s source + V_t target views.

HoloFusion Sec. 3.3.1: "in each training batch, we pick a random training scene s and sample 15
different source images ... Then Vbar is rendered into 4 random target views" (disjoint from the
sources). A group here is V = V_s + V_t views of one object in random order; the first V_s are the
sources, the last V_t the targets. Two ``BatchSource``s of the shared network trainer give them:

- ``WorldViewGroups`` (the default): reference renders of the world's TRAINING objects, made on the
  training device by a ``world_models.render_pool.RenderPool`` (one entry = one group; blocks
  re-rendered round robin, so no data set on disk is needed). Cameras look at the origin from
  directions uniform on a band of the sphere (``data.multiview.SphereViews``: elevation -30 to 80
  degrees, distance 2.7, fovy 40, the world's multi-view data sets), i.e. CO3D-like orbits. Held-out
  objects never appear (``world.split``).
- ``DatasetViewGroups``: a multi-view data set folder (``distill3d world dataset multiview`` /
  ``distill3d data ...``, or a CO3D folder through ``distill3d.data.co3d`` when it exists), read into
  memory once; each group is a random subset of one sequence's frames.

Images come at the super-resolution target size R = S * scale (the world's renders supersampled 2x);
``ViewGroupBatch.low_res`` averages them down to the render size S for the photometric loss (Eq. 5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from distill3d.cameras import Cameras
from distill3d.data.co3d import open_multiview_dataset
from distill3d.data.multiview import FOVY_DEG, FRAMING_DISTANCE, SphereViews
from distill3d.errors import UserError
from distill3d.training.network_trainer import StaticBatchSource
from distill3d.world_models.render_pool import RenderPool, RenderPoolConfig

__all__ = ["DatasetViewGroups", "ViewGroupBatch", "ViewsConfig", "WorldDataConfig", "WorldViewGroups"]


@dataclass
class ViewsConfig:
    """Views per group and the cameras of the world's groups."""

    source_views: int = 15                  # unprojected into Vbar (HoloFusion Sec. 3.3.1)
    target_views: int = 4                   # rendered for the losses (HoloFusion Sec. 3.3.1)
    elevation_range: tuple[float, float] = (-30.0, 80.0)  # world cameras: directions uniform on this band
    distance: float = FRAMING_DISTANCE      # world cameras' distance to the origin
    fovy: float = FOVY_DEG                  # world cameras' vertical field of view (degrees)

    def __post_init__(self) -> None:
        if self.source_views < 0 or self.target_views < 1:
            raise ValueError("source_views must be >= 0 and target_views >= 1")

    @property
    def group_size(self) -> int:
        return self.source_views + self.target_views

    def sphere(self) -> SphereViews:
        """The camera sampler of the world's groups."""
        return SphereViews(elevation_range=tuple(self.elevation_range), distance_range=(self.distance,) * 2,
                           fovy_deg=self.fovy)

    def draw(self, count: int, resolution: int, seed: int) -> Cameras:
        """``count`` cameras of the world's groups at ``resolution`` px, from ``seed`` (evaluations)."""
        return self.sphere().sample(count, resolution, torch.Generator().manual_seed(seed))[0]


@dataclass
class WorldDataConfig:
    """The render pool of world groups (``world_models.render_pool``; one entry = one group)."""

    size: int = 1024                 # groups kept on the training device (19 x 3 x 64 x 64 bytes each)
    objects_per_block: int = 64      # groups re-rendered together (one object each)
    refresh_every: int = 50          # training steps between two block refreshes (0: never; ~20% of H200 time at 50)
    supersample: int = 2             # antialiasing of the reference renders
    chunk_rays: int = 1 << 21        # rays traced at once per shape

    def pool(self, resolution: int) -> RenderPoolConfig:
        return RenderPoolConfig(size=self.size, entries_per_object=1, objects_per_block=min(self.objects_per_block,
                                self.size), refresh_every=self.refresh_every, resolution=resolution,
                                supersample=self.supersample, chunk_rays=self.chunk_rays)


@dataclass
class ViewGroupBatch:
    """b groups of V views at R x R: images [b, V, R, R, 3] in [0, 1], c2w [b, V, 4, 4], K [b, V, 3, 3]."""

    images: Tensor
    c2w: Tensor
    K: Tensor

    @property
    def resolution(self) -> int:
        return self.images.shape[-2]

    def cameras(self, views: slice, resolution: int | None = None) -> Cameras:
        """Cameras [b * len(views)] of ``views`` of every group (at ``resolution``, default R)."""
        R = self.resolution
        cams = Cameras(self.c2w[:, views].reshape(-1, 4, 4), self.K[:, views].reshape(-1, 3, 3), R, R)
        return cams if resolution in (None, R) else cams.resized(resolution, resolution)

    def views(self, views: slice) -> Tensor:
        """Images [b, n, R, R, 3] of ``views``."""
        return self.images[:, views]

    def low_res(self, views: slice, resolution: int) -> Tensor:
        """Images [b * n, r, r, 3] of ``views`` averaged down to r (R must be a multiple of r)."""
        x = self.images[:, views].reshape(-1, *self.images.shape[2:]).permute(0, 3, 1, 2)
        if x.shape[-1] % resolution:
            raise ValueError(f"image size {x.shape[-1]} is not a multiple of the render size {resolution}")
        return F.avg_pool2d(x, x.shape[-1] // resolution).permute(0, 2, 3, 1)


class WorldViewGroups:
    """World groups from a ``RenderPool`` (module docstring); a ``BatchSource``."""

    def __init__(self, views: ViewsConfig, data: WorldDataConfig, resolution: int, device: torch.device):
        sphere = views.sphere()
        V = views.group_size

        def sample_cameras(n: int, res: int, generator: torch.Generator) -> tuple[Cameras, dict]:
            return sphere.sample(n * V, res, generator)

        self.pool = RenderPool(data.pool(resolution), V, sample_cameras, device)

    @property
    def render_seconds(self) -> float:
        return self.pool.render_seconds

    def fill(self, generator: torch.Generator, progress: bool = True) -> None:
        self.pool.fill(generator, progress)

    def maybe_refresh(self, step: int, generator: torch.Generator) -> bool:
        return self.pool.maybe_refresh(step, generator)

    def state_tensors(self) -> dict[str, Tensor]:
        return self.pool.state_tensors()

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.pool.load_state_tensors(tensors)

    def sample(self, batch: int, generator: torch.Generator) -> ViewGroupBatch:
        index = self.pool.sample_indices(batch, generator)
        images = self.pool.images[index].permute(0, 1, 3, 4, 2).float() / 255.0
        return ViewGroupBatch(images, self.pool.c2w[index], self.pool.K[index])


class DatasetViewGroups(StaticBatchSource):
    """Groups drawn from the sequences of a multi-view data set held in memory (uint8); a ``BatchSource``.

    Every sequence needs at least ``target_views + 1`` frames; when the shortest has fewer than
    ``source_views + target_views``, every group has that many views (fewer sources).
    """

    def __init__(self, root: str | Path, views: ViewsConfig, resolution: int, device: torch.device,
                 progress: bool = True):
        dataset = open_multiview_dataset(Path(root), background=1.0)  # colours over white
        if len(dataset) == 0:
            raise UserError(f"{root} holds no sequences")
        self.render_seconds, self.device, self.resolution = 0.0, device, resolution
        self.images, self.c2w, self.K = [], [], []
        for i in tqdm(range(len(dataset)), desc="reading sequences", disable=not progress, leave=False):
            item = dataset[i]
            rgb = item["images"][..., :3].permute(0, 3, 1, 2).float()
            H, W = rgb.shape[-2:]
            if H != W:
                raise UserError(f"{root}: sequence {i} has {W}x{H} frames; HoloFusion trains on square frames")
            rgb = F.interpolate(rgb, size=(resolution, resolution), mode="bilinear", antialias=True,
                                align_corners=False) if H != resolution else rgb
            cams = Cameras(item["c2w"], item["K"], W, H).resized(resolution, resolution)
            self.images.append((rgb * 255.0 + 0.5).clamp(0, 255).to(torch.uint8))
            self.c2w.append(cams.c2w.float())
            self.K.append(cams.K.float())
        shortest = min(len(x) for x in self.images)
        if shortest < views.target_views + 1:
            raise UserError(f"{root}: a sequence has {shortest} frames; HoloFusion needs at least "
                            f"{views.target_views + 1} (target views + 1 source view)")
        self.group_size = min(views.group_size, shortest)

    def sample(self, batch: int, generator: torch.Generator) -> ViewGroupBatch:
        items = torch.randint(len(self.images), (batch,), generator=generator).tolist()
        picks = [torch.randperm(len(self.images[i]), generator=generator)[:self.group_size] for i in items]
        images = torch.stack([self.images[i][p] for i, p in zip(items, picks)]).permute(0, 1, 3, 4, 2)
        c2w = torch.stack([self.c2w[i][p] for i, p in zip(items, picks)])
        K = torch.stack([self.K[i][p] for i, p in zip(items, picks)])
        return ViewGroupBatch(images.float().to(self.device) / 255.0, c2w.to(self.device), K.to(self.device))
