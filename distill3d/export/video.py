"""Turntable videos (MP4 through imageio-ffmpeg, GIF): orbit cameras, frames, files."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import imageio.v3 as iio
import numpy as np
import torch

from distill3d.atomic_files import output_with_temporary
from distill3d.cameras import Cameras, orbit_cameras
from distill3d.render_output import RenderOutput

VIDEO_FORMATS = ("mp4", "gif")


def turntable_cameras(num_frames: int = 60, *, resolution: int = 128, elevation: float = 15.0,
                      distance: float = 2.0, fovy: float = 40.0, start_azimuth: float = 0.0) -> Cameras:
    """``num_frames`` cameras at uniform azimuth on one orbit (one full turn)."""
    az = start_azimuth + torch.arange(num_frames, dtype=torch.float32) * (360.0 / num_frames)
    return orbit_cameras(elevation, az, distance, fovy, resolution, resolution)


@torch.no_grad()
def render_frames(render: Callable[[Cameras], RenderOutput], cameras: Cameras,
                  batch_size: int = 8) -> np.ndarray:
    """Render cameras in batches with ``render`` and return uint8 frames [N, H, W, 3]."""
    frames = []
    for start in range(0, len(cameras), batch_size):
        out = render(cameras[start:start + batch_size])
        frames.append((out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy())
    return np.concatenate(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 30) -> Path:
    """Write uint8 frames [N, H, W, 3] as .mp4 (H.264 through imageio-ffmpeg) or .gif."""
    path, fmt, tmp = output_with_temporary(path, VIDEO_FORMATS, "video")
    if fmt == "gif":
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        # H.264 in yuv420p (what players accept) needs even sizes: pad by repeating the last row/column.
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        iio.imwrite(tmp, frames, extension=".mp4", fps=fps, codec="libx264", macro_block_size=1)
    tmp.replace(path)
    return path
