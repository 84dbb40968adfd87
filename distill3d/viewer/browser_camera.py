"""The browser's camera as ``Cameras``, and a render turned into the image the browser shows.

viser's cameras follow OpenCV, as ``Cameras`` does (+X right, +Y down, +Z forward): the client's
``wxyz`` / ``position`` is the camera-to-world rotation / centre, ``fov`` the vertical field of view.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from distill3d.cameras import Cameras
from distill3d.render_output import RenderOutput

RenderMode = Literal["rgb", "depth", "normal", "alpha"]
RENDER_MODES: tuple[str, ...] = ("rgb", "depth", "normal", "alpha")


def quaternion_to_matrix(wxyz: np.ndarray) -> torch.Tensor:
    """[4] unit quaternion (w, x, y, z) -> [3, 3] rotation."""
    w, x, y, z = (float(v) for v in np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz))
    return torch.tensor([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def browser_cameras(wxyz: np.ndarray, position: np.ndarray, fov: float, aspect: float, height: int) -> Cameras:
    """One camera [1] of ``height`` pixels (width by ``aspect`` = width / height) at the browser's pose;
    ``fov`` is vertical, in radians."""
    width = max(1, round(height * aspect))
    c2w = torch.eye(4)
    c2w[:3, :3] = quaternion_to_matrix(wxyz)
    c2w[:3, 3] = torch.as_tensor(np.asarray(position, dtype=np.float32))
    focal = 0.5 * height / math.tan(0.5 * fov)
    K = torch.tensor([[focal, 0.0, 0.5 * width], [0.0, focal, 0.5 * height], [0.0, 0.0, 1.0]])
    return Cameras(c2w[None], K[None], width, height)


def display_image(out: RenderOutput, mode: str, background: tuple[float, float, float]) -> np.ndarray:
    """[H, W, 3] uint8 of the first image of ``out`` in ``mode``: rgb as rendered (over ``background``),
    depth as near-bright grey and normal as (n + 1) / 2, both composited over ``background`` by the
    render's alpha, and alpha itself as grey (white: opaque)."""
    alpha = out.alpha[0].detach().float().cpu().clamp(0, 1)                       # [H, W, 1]
    if mode == "rgb":
        image = out.rgb[0].detach().float().cpu()
    elif mode == "alpha":
        image = alpha.expand(*alpha.shape[:-1], 3)
    else:
        if mode == "depth":
            depth = out.depth[0].detach().float().cpu()
            hit = alpha > 0.5
            near = depth[hit].min() if hit.any() else depth.min()
            far = depth[hit].max() if hit.any() else depth.max()
            value = (1.0 - (depth - near) / (far - near).clamp_min(1e-6)).clamp(0, 1) * 0.8 + 0.2
            colour = value.expand(*value.shape[:-1], 3)
        elif mode == "normal":
            if out.normal is None:
                raise ValueError("this render has no normals")
            colour = (out.normal[0].detach().float().cpu() + 1.0) * 0.5
        else:
            raise ValueError(f"unknown render mode '{mode}'; choose one of {', '.join(RENDER_MODES)}")
        image = colour * alpha + torch.tensor(background) * (1 - alpha)
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
