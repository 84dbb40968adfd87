"""Emission-absorption rendering of many voxel grids in one call (HoloFusion's R_eta, Sec. 3.2).

``render_volume`` renders one field; a 3D diffusion model renders a batch of B grids V [B, d, S, S, S]
that share one decoder M_eta, each from its own V cameras. Here all B * V * H * W rays are marched
together: the grids are sampled with one 5D ``grid_sample`` (trilinear, ``align_corners=True`` over
[-b, b]^3, the convention of ``distill3d.scene.voxel_grid.trilinear_sample``), decoded by one call of
the MLP and composited as ``render_volume`` does:

    each ray is clipped to the cube, the segment [t_near, t_far] (t_near >= 0) is cut into
    ``num_samples`` equal bins of length delta, one sample per bin (a uniform random point of the
    bin with ``stratified``, its centre otherwise), alpha_i = 1 - exp(-sigma_i delta),
    w_i = alpha_i prod_{j<i} (1 - alpha_j), colour = sum_i w_i c_i + (1 - sum_i w_i) background.

With the same samples (``stratified=False``) the result equals ``render_volume`` of
``VoxelRadianceField.from_features(V[b], decoder)`` at grid b's cameras (tests compare them). A ray
that misses the cube has an empty segment: alpha 0, the background. Depth is the expected z-depth
normalised by alpha (0 where alpha <= ``ALPHA_EPS``); no normals are computed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.render.backgrounds import background_image
from distill3d.render.volume import ALPHA_EPS, ray_aabb_intersect
from distill3d.render_output import RenderOutput
from distill3d.scene.field import cube_aabb
from distill3d.scene.voxel_grid import VoxelDecoder

__all__ = ["render_voxel_batch"]

_POINTS_PER_CHUNK = 2 ** 22  # samples decoded at once (all grids together); bounds inference memory


def _march(features: Tensor, decoder: VoxelDecoder, origins: Tensor, dirs: Tensor, near: Tensor, span: Tensor,
           jitter: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Rays of B grids: origins, dirs [B, M, 3], near, span [B, M], jitter [B, M, n] ->
    premultiplied rgb [B, M, 3], alpha [B, M, 1], weighted distance sum_i w_i t_i [B, M, 1]."""
    B, M, n = jitter.shape
    bins = torch.arange(n, device=origins.device, dtype=origins.dtype)
    t = near[..., None] + span[..., None] * (bins + jitter) / n                    # [B, M, n]
    delta = span[..., None] / n                                                   # [B, M, 1]
    pts = origins[:, :, None, :] + t[..., None] * dirs[:, :, None, :]             # [B, M, n, 3]
    # grid_sample's last axis is (W, H, D) = (z, y, x) for a [B, d, D=x, H=y, W=z] volume
    grid = (pts / bound).flip(-1).reshape(B, M * n, 1, 1, 3).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", padding_mode="border", align_corners=True)
    density, rgb = decoder(sampled.reshape(B, -1, M * n).transpose(1, 2).reshape(B * M * n, -1))
    inside = (pts.abs() <= bound).all(dim=-1).reshape(-1)                         # as VoxelRadianceField.query
    density = torch.where(inside, density, torch.zeros_like(density)).reshape(B, M, n).to(t.dtype)
    optical = density * delta
    alpha = 1.0 - torch.exp(-optical)
    transmittance = torch.exp(-(torch.cumsum(optical, dim=-1) - optical))
    weights = alpha * transmittance                                               # [B, M, n]
    colour = (weights[..., None] * rgb.reshape(B, M, n, 3).to(t.dtype)).sum(dim=2)
    return colour, weights.sum(dim=-1, keepdim=True), (weights * t).sum(dim=-1, keepdim=True)


def render_voxel_batch(features: Tensor, decoder: VoxelDecoder, cameras: Cameras, *, bound: float = 1.0,
                       num_samples: int = 64, background: float | Tensor = 1.0, stratified: bool = True,
                       generator: torch.Generator | None = None, chunk_points: int | None = None) -> RenderOutput:
    """Render grids features [B, d, S, S, S] (one shared ``decoder``) at cameras [B * V] -> RenderOutput
    with rgb [B * V, H, W, 3], alpha [B * V, H, W, 1], depth [B * V, H, W, 1], normal None.

    Cameras b * V .. b * V + V - 1 look at grid b. bound: the grids cover [-bound, bound]^3.
    num_samples: samples per ray inside the cube. background: a float, [3], [B * V, 3] or an image.
    stratified: a random point in each bin (training), else bin centres; generator draws the jitter.
    chunk_points: samples decoded at once (default 2^22; under autograd every chunk is kept anyway).
    """
    if features.ndim != 5 or len(set(features.shape[2:])) != 1:
        raise ValueError(f"features must be [B, d, S, S, S], got {tuple(features.shape)}")
    B, n = features.shape[0], int(num_samples)
    if n < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if len(cameras) % B:
        raise ValueError(f"{len(cameras)} cameras do not split evenly over {B} grids")
    V, H, W = len(cameras) // B, cameras.height, cameras.width
    cameras = cameras.to(features.device)
    origins, dirs = cameras.rays()                                                # [B * V, H, W, 3]
    o, d = origins.reshape(B, V * H * W, 3), dirs.reshape(B, V * H * W, 3)
    M, dev, dt = o.shape[1], o.device, o.dtype
    near, far = ray_aabb_intersect(o.reshape(-1, 3), d.reshape(-1, 3), cube_aabb(bound, device=dev, dtype=dt))
    near = near.clamp_min(0.0)
    span = (far - near).clamp_min(0.0)                                            # 0 on rays that miss
    near, span = near.reshape(B, M), span.reshape(B, M)
    if stratified:
        gen_dev = generator.device if generator is not None else dev
        jitter = torch.rand(B, M, n, generator=generator, device=gen_dev, dtype=dt).to(dev)
    else:
        jitter = torch.full((B, M, n), 0.5, device=dev, dtype=dt)

    chunk = max(1, (chunk_points or _POINTS_PER_CHUNK) // (B * n))
    pieces = [_march(features, decoder, o[:, s:s + chunk], d[:, s:s + chunk], near[:, s:s + chunk],
                     span[:, s:s + chunk], jitter[:, s:s + chunk], bound) for s in range(0, M, chunk)]
    colour, alpha, t_sum = (torch.cat(parts, dim=1).reshape(B * V, H, W, -1) for parts in zip(*pieces))
    cos = (dirs * cameras.forward.to(dt)[:, None, None, :]).sum(-1, keepdim=True)   # [B * V, H, W, 1]
    has = alpha > ALPHA_EPS
    depth = torch.where(has, t_sum * cos / alpha.clamp_min(ALPHA_EPS), torch.zeros_like(t_sum))
    rgb = colour + (1.0 - alpha) * background_image(background, B * V, colour)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, normal=None)
