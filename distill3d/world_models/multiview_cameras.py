"""Cameras of the multi-view teacher: pose-relative Pluecker rays and the group layout.

Poses are expressed relative to the input camera, so the teacher never sees the object's
azimuth in the world: the world is turned into a frame of the input camera and scaled so that
the input camera sits at distance 1 from the object centre (the origin, which every orbit
camera looks at). A single image fixes neither the object's size nor its distance, only their
ratio; this normalisation is what makes a teacher usable on images whose distance is unknown.

Two frames (``CAMERA_FRAMES``, chosen by ``MultiViewNetConfig.camera_frame``):
- ``"input"``: the input camera's own frame (OpenCV axes). The input camera always has the
  identity rotation and centre (0, 0, -1), so its elevation, and with it the world's up
  direction, is left to the network to guess from the image.
- ``"level"``: the frame of the level camera at the input's azimuth: the input camera's frame
  turned about its x axis until its view direction is horizontal. Up is then -y in every group,
  and the input camera sits at (0, -sin e, -cos e) for an elevation e. The world's up axis (+Z)
  is thus made known, as Zero-1-to-3's relative spherical cameras (elevation and azimuth
  offsets) also take it to be; an input elevation of 0 gives the same frame as ``"input"``.
  Fine-tuned into this frame, the world teacher gained 2 dB in one chunk (benchmarks/RESULTS.md,
  "World multi-view teacher"). Cameras must then be given in the world's convention (+Z up, ``distill3d.cameras``).

Group layout (what the teacher is trained on, and what ``sample_multiview_groups`` draws):
an input camera (elevation, azimuth, distance, fovy uniform in their ranges) and K target
cameras at one shared elevation, with azimuths ``input azimuth + offset + k * 360 / K``,
``offset`` uniform in [0, 360) (as ImageDream lays out its four orthogonal views, here at every
rotation relative to the input). By default the targets keep the input camera's distance and
fovy (``targets_share_input_framing``), as ImageDream renders its views at one fixed distance
and field of view: the object then has the same size in every view, and the teacher only has
to turn it. With independent target distances a first teacher (2101 steps) copied the input's
framing into every target (11.6 dB PSNR).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.cameras import WORLD_UP, Cameras, orbit_cameras


CAMERA_FRAMES = ("input", "level")
"""Frames of the relative cameras (module docstring)."""


def level_rotation(c2w: Tensor) -> Tensor:
    """Camera-to-world rotations [B, 3, 3] of level cameras (horizontal view direction, no roll)
    at the azimuths of the cameras ``c2w`` [B, 4, 4]; a camera looking straight up or down keeps
    its image x axis."""
    up = torch.tensor(WORLD_UP, dtype=c2w.dtype, device=c2w.device).expand(len(c2w), 3)
    x = torch.cross(c2w[:, :3, 2], up, dim=-1)
    x = torch.where(x.norm(dim=-1, keepdim=True) < 1e-6, c2w[:, :3, 0], x)
    x = x / x.norm(dim=-1, keepdim=True)
    z = torch.cross(up, x, dim=-1)  # the view direction made horizontal
    return torch.stack([x, torch.cross(z, x, dim=-1), z], dim=-1)


def relative_cameras(input_cameras: Cameras, target_cameras: Cameras,
                     frame: str = "input") -> tuple[Cameras, Cameras]:
    """Input [B] and target [B*K] cameras in the normalised ``frame`` of their input camera.

    Returns (input, targets) with the same intrinsics; the K targets of object b are rows
    b*K .. b*K+K-1. Every input camera must look at the origin.
    """
    if frame not in CAMERA_FRAMES:
        raise ValueError(f"unknown camera frame {frame!r}; expected one of {CAMERA_FRAMES}")
    B, BK = len(input_cameras), len(target_cameras)
    if BK % B:
        raise ValueError(f"{BK} target cameras for {B} input cameras")
    K = BK // B
    c2w_in = input_cameras.c2w
    scale = 1.0 / c2w_in[:, :3, 3].norm(dim=-1).clamp_min(1e-8)  # [B]
    rotation = c2w_in[:, :3, :3] if frame == "input" else level_rotation(c2w_in)
    world_to_canonical = torch.zeros_like(c2w_in)  # rotate about the origin only
    world_to_canonical[:, :3, :3] = rotation.transpose(1, 2)
    world_to_canonical[:, 3, 3] = 1.0
    w2c = world_to_canonical.repeat_interleave(K, dim=0)
    rel_t = w2c @ target_cameras.c2w
    rel_t[:, :3, 3] *= scale.repeat_interleave(K)[:, None]
    rel_in = world_to_canonical @ c2w_in
    rel_in[:, :3, 3] *= scale[:, None]
    return (Cameras(rel_in, input_cameras.K, input_cameras.width, input_cameras.height),
            Cameras(rel_t, target_cameras.K, target_cameras.width, target_cameras.height))


def plucker_maps(cameras: Cameras) -> Tensor:
    """Pluecker rays of every pixel as channels: [B, 6, H, W]."""
    return cameras.plucker().permute(0, 3, 1, 2).contiguous()


def multiview_rays(input_cameras: Cameras, target_cameras: Cameras,
                   frame: str = "input") -> tuple[Tensor, Tensor]:
    """Relative Pluecker maps of the input [B, 6, H, W] and target [B*K, 6, H, W] cameras."""
    rel_in, rel_t = relative_cameras(input_cameras, target_cameras, frame)
    return plucker_maps(rel_in), plucker_maps(rel_t)


@dataclass
class MultiViewGroupCameras:
    """Distribution of the cameras of one group (see the module docstring)."""

    num_views: int = 4  # K targets (ImageDream, DD3G)
    input_elevation_range: tuple[float, float] = (-10.0, 45.0)
    target_elevation_range: tuple[float, float] = (-10.0, 45.0)
    distance_range: tuple[float, float] = (2.2, 3.0)  # the object fits the view (radius 0.9, fovy >= 35)
    fovy_range: tuple[float, float] = (35.0, 45.0)
    targets_share_input_framing: bool = True  # targets at the input's distance and fovy (ImageDream)


def sample_multiview_groups(n: int, resolution: int, layout: MultiViewGroupCameras,
                            generator: torch.Generator | None = None) -> tuple[Cameras, dict[str, Tensor]]:
    """n groups of 1 + K cameras, [n * (1 + K)], each group's input camera first.

    Returns the cameras and their parameters (elevation, azimuth, distance, fovy), each [n, 1+K].
    """
    K = layout.num_views

    def uni(lo_hi, shape):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(shape, generator=generator)

    in_el, in_az = uni(layout.input_elevation_range, (n, 1)), uni((-180.0, 180.0), (n, 1))
    in_dist, in_fov = uni(layout.distance_range, (n, 1)), uni(layout.fovy_range, (n, 1))
    t_el, offset = uni(layout.target_elevation_range, (n, 1)), uni((0.0, 360.0), (n, 1))
    t_dist, t_fov = uni(layout.distance_range, (n, 1)), uni(layout.fovy_range, (n, 1))
    if layout.targets_share_input_framing:
        t_dist, t_fov = in_dist, in_fov
    t_az = in_az + offset + torch.arange(K, dtype=torch.float32) * (360.0 / K)
    params = {
        "elevation": torch.cat([in_el, t_el.expand(n, K)], dim=1),
        "azimuth": torch.remainder(torch.cat([in_az, t_az], dim=1) + 180.0, 360.0) - 180.0,
        "distance": torch.cat([in_dist, t_dist.expand(n, K)], dim=1),
        "fovy": torch.cat([in_fov, t_fov.expand(n, K)], dim=1),
    }
    cams = orbit_cameras(*(params[k].reshape(-1) for k in ("elevation", "azimuth", "distance", "fovy")),
                         resolution, resolution)
    return cams, params


def split_groups(cameras: Cameras, num_views: int) -> tuple[Cameras, Cameras]:
    """Cameras [n * (1 + K)] laid out by ``sample_multiview_groups`` -> (input [n], targets [n * K])."""
    V = num_views + 1
    index = torch.arange(len(cameras), device=cameras.device).reshape(-1, V)
    return cameras[index[:, 0]], cameras[index[:, 1:].reshape(-1)]
