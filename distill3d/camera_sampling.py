"""Random training cameras of per-scene distillation: orbit cameras whose azimuths walk the four
quarters of the circle in turn (one camera uniform inside each quarter: Consistent3D Sec. B.1's
anti-Janus sampling), each with the view bucket that picks its view-dependent prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.errors import UserError
from distill3d.world import VIEW_BUCKETS, view_suffix
from distill3d.world.views import view_bucket_index

NUM_AZIMUTH_PARTS = 4  # Consistent3D Sec. B.1: azimuth range split into 4 parts (anti-Janus)


@dataclass
class OrbitCameraConfig:
    """The cameras of each optimisation step (Consistent3D Sec. B.1; elevation as threestudio's random camera)."""

    cameras_per_step: int | None = 12  # cameras rendered per step (Sec. B.1: 12); none: the method's default
    resolution: int = 64           # render size in pixels (Sec. 4.3: 64x64 in the coarse stage)
    fovy_min: float = 30.0         # vertical field of view in degrees, uniform in [min, max] (Sec. B.1: 30-45)
    fovy_max: float = 45.0         # upper end of the field of view
    # camera distance from the origin, uniform in [min, max]: ours 2.5-3.0, where a world object (radius 0.9)
    # fits the frame, as DreamGaussian's radius 2.5; Sec. B.1's 1.5-2.0 crops it (benchmarks/RESULTS.md)
    distance_min: float = 2.5
    distance_max: float = 3.0      # upper end of the distance
    elevation_min: float = -10.0   # elevation in degrees, uniform in [min, max] (threestudio: -10 to 45)
    elevation_max: float = 45.0    # upper end of the elevation

    def __post_init__(self) -> None:
        if (self.cameras_per_step is not None and self.cameras_per_step <= 0) or self.resolution <= 0:
            raise UserError("--cameras-per-step and --cameras.resolution must be positive")
        for name in ("fovy", "distance", "elevation"):
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low > high:
                raise UserError(f"--{name}-min ({low}) is above --{name}-max ({high})")
        if self.distance_min <= 0 or not 0 < self.fovy_min <= self.fovy_max < 180:
            raise UserError("distances must be positive and fovy in (0, 180) degrees")


def sample_quadrant_cameras(config: OrbitCameraConfig, generator: torch.Generator,
                            resolution: int | None = None) -> tuple[Cameras, dict[str, Tensor]]:
    """``cameras_per_step`` orbit cameras; camera i lies uniformly inside azimuth part i mod 4.

    The parts are the quarters centred on the front (0 deg), the two sides and the back, i.e.
    part k covers [90 k - 45, 90 k + 45), so each part is one view bucket below 60 deg elevation.
    Returns the cameras and their parameters (elevation, azimuth, distance, fovy [B], degrees;
    part [B] long; bucket [B] index into ``VIEW_BUCKETS``).
    """
    n, c = config.cameras_per_step, config
    if n is None:
        raise ValueError("cameras_per_step is unset: the method's config fills it in")
    res = resolution or c.resolution
    part = torch.arange(n) % NUM_AZIMUTH_PARTS
    width = 360.0 / NUM_AZIMUTH_PARTS

    def uni(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    azimuth = part * width - width / 2 + uni(0.0, width)
    azimuth = torch.remainder(azimuth + 180.0, 360.0) - 180.0  # (-180, 180]
    elevation = uni(c.elevation_min, c.elevation_max)
    distance = uni(c.distance_min, c.distance_max)
    fovy = uni(c.fovy_min, c.fovy_max)
    cams = orbit_cameras(elevation, azimuth, distance, fovy, res, res)
    params = {"elevation": elevation, "azimuth": azimuth, "distance": distance, "fovy": fovy,
              "part": part, "bucket": view_bucket_index(azimuth, elevation)}
    return cams, params


def view_prompts(prompt: str) -> list[str]:
    """One prompt per view bucket, in ``VIEW_BUCKETS`` order ("..., front view", ...): ``params["bucket"]``
    of ``sample_quadrant_cameras`` indexes it."""
    return [prompt + view_suffix(bucket) for bucket in VIEW_BUCKETS]
