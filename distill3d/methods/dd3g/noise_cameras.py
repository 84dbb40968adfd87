"""NC: each view's initial noise with the Pluecker rays of its camera (DD3G Sec. III-B, Pattern Extraction).

"we first employ the Pluecker ray embedding to densely encode C ... and concatenate it with N to
form a random variable NC ... NC contains n sub-random variables, each corresponding to a
viewpoint." Here n = V views:

    noise   N   [B, V, C, h, w]        the teacher's initial noise of each output view
    cameras C   Cameras of B * V       view v of object b is row b * V + v (the teacher's layout)
    NC          [B, V, C + 6, h, w]    channels: the noise, then (d, o x d) of each pixel's ray

The rays are those of ``Cameras.plucker`` at the noise's resolution h x w (the cameras'
intrinsics rescaled to it with ``Cameras.resized``), in whatever frame the cameras are given:
the student's Gaussians come out in that same frame.
"""

from __future__ import annotations

from torch import Tensor
import torch

from distill3d.cameras import Cameras

PLUCKER_CHANNELS = 6
"""Channels of a Pluecker ray: direction d and moment o x d."""


def view_rays(cameras: Cameras, height: int, width: int) -> Tensor:
    """Pluecker maps [B*V, 6, h, w] of the cameras at resolution h x w (``Cameras.plucker``)."""
    if (cameras.width, cameras.height) != (width, height):
        cameras = cameras.resized(width, height)
    return cameras.plucker().permute(0, 3, 1, 2)


def noise_with_rays(noise: Tensor, cameras: Cameras) -> Tensor:
    """NC [B, V, C + 6, h, w] from noise [B, V, C, h, w] and the B * V cameras of its views."""
    if noise.ndim != 5:
        raise ValueError(f"noise must be [B, V, C, h, w], got {tuple(noise.shape)}")
    B, V, _, h, w = noise.shape
    if len(cameras) != B * V:
        raise ValueError(f"{len(cameras)} cameras for {B} objects of {V} views")
    rays = view_rays(cameras.to(noise.device), h, w).to(noise.dtype).reshape(B, V, PLUCKER_CHANNELS, h, w)
    return torch.cat([noise, rays], dim=2)  # DD3G Sec. III-B: NC = N (+) Pluecker(C), per view
