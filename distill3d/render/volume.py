"""Emission-absorption volume rendering of a density field (NeRF quadrature).

Each pixel ray is clipped to the field's box; the clipped segment [t_near, t_far] is cut
into ``num_samples`` equal bins of length delta and the field is sampled once per bin (at a
random point of the bin with ``stratified``, at its middle otherwise). Then

    alpha_i = 1 - exp(-sigma_i delta),   T_i = prod_{j<i} (1 - alpha_j),   w_i = T_i alpha_i,

colour = sum_i w_i c_i + (1 - sum_i w_i) * background, alpha = sum_i w_i. Rays that miss the
box get alpha 0 and the background. Because the bins tile the segment exactly, a medium of
constant density sigma over a length L gives alpha = 1 - exp(-sigma L) exactly.

Depth is the expected z-depth in the OpenCV camera frame, ``sum_i w_i t_i (d . forward)``,
divided by alpha where alpha > 1e-6 and 0 elsewhere. Normals are the weighted average of the
per-sample unit normals ``-grad sigma / |grad sigma|`` (autograd w.r.t. the sample points),
normalised, 0 where alpha <= 1e-6. When gradients are being recorded the normals are built
with ``create_graph`` so that losses on them (orientation, smoothness) reach the field.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from distill3d.cameras import Cameras
from distill3d.render.backgrounds import background_image
from distill3d.render_output import RenderOutput
from distill3d.scene.field import DensityField

__all__ = ["render_volume", "render_volume_with_extras", "VolumeRenderExtras",
           "ray_aabb_intersect", "ALPHA_EPS"]

ALPHA_EPS = 1e-6  # below this accumulated opacity a pixel has no depth and no normal
_POINTS_PER_CHUNK = 2 ** 18


@dataclass
class VolumeRenderExtras:
    """Per-sample quantities of a volume render, for losses (zero on rays that miss the box).

    weights: [B, H, W, S] compositing weights w_i = T_i alpha_i.
    t:       [B, H, W, S] sample distances along the unit ray directions.
    density: [B, H, W, S] sigma at the samples.
    normals: [B, H, W, S, 3] per-sample unit normals -grad sigma / |grad sigma|, or None.
    dirs:    [B, H, W, 3] unit ray directions (world).
    """

    weights: torch.Tensor
    t: torch.Tensor
    density: torch.Tensor
    normals: torch.Tensor | None
    dirs: torch.Tensor


def ray_aabb_intersect(origins: torch.Tensor, dirs: torch.Tensor,
                       aabb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test. origins, dirs [R, 3], aabb [2, 3] -> t_near [R], t_far [R] (t_far <= t_near: miss).

    The interval is not clipped to t >= 0.
    """
    tiny = torch.full_like(dirs, 1e-12)
    safe = torch.where(dirs.abs() < 1e-12, torch.where(dirs < 0, -tiny, tiny), dirs)
    t0 = (aabb[0] - origins) / safe
    t1 = (aabb[1] - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1)
    far = torch.maximum(t0, t1).amin(dim=-1)
    return near, far


def _march(field: DensityField, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
           far: torch.Tensor, jitter: torch.Tensor, compute_normals: bool,
           create_graph: bool) -> dict[str, torch.Tensor]:
    """Render n rays (origins, dirs [n, 3], near, far [n], jitter [n, S] in [0, 1))."""
    n, S = jitter.shape
    span = (far - near)[:, None]
    bins = torch.arange(S, device=origins.device, dtype=origins.dtype)
    t = near[:, None] + span * (bins + jitter) / S                       # [n, S]
    delta = span / S                                                     # [n, 1]
    pts = origins[:, None, :] + t[..., None] * dirs[:, None, :]          # [n, S, 3]

    normals = None
    if compute_normals:
        with torch.enable_grad():
            if not pts.requires_grad:
                pts = pts.detach().requires_grad_(True)
            density, rgb = field.query(pts.reshape(-1, 3))
            if density.requires_grad:
                grad, = torch.autograd.grad(density.sum(), pts, create_graph=create_graph,
                                            allow_unused=True)
            else:
                grad = None
        if grad is None:
            grad = torch.zeros_like(pts)
        normals = -F.normalize(grad, dim=-1, eps=1e-10)                  # [n, S, 3]
        if not create_graph:
            density, rgb, normals = density.detach(), rgb.detach(), normals.detach()
    else:
        density, rgb = field.query(pts.reshape(-1, 3))

    density = density.reshape(n, S)
    rgb = rgb.reshape(n, S, 3)
    optical = density * delta                                            # sigma_i delta_i
    alpha = 1.0 - torch.exp(-optical)
    transmittance = torch.exp(-(torch.cumsum(optical, dim=-1) - optical))  # exclusive product
    weights = alpha * transmittance                                      # [n, S]
    out = {
        "rgb": (weights[..., None] * rgb).sum(dim=1),
        "alpha": weights.sum(dim=1, keepdim=True),
        "t": (weights * t).sum(dim=1, keepdim=True),
        "weights": weights, "t_samples": t, "density": density,
    }
    if normals is not None:
        out["normal"] = (weights[..., None] * normals).sum(dim=1)
        out["normals"] = normals
    return out


def _render(field: DensityField, cameras: Cameras, num_samples: int,
            near_far: tuple[float, float] | None, background: float | torch.Tensor,
            stratified: bool, generator: torch.Generator | None, compute_normals: bool,
            chunk_rays: int | None, with_extras: bool,
            ) -> tuple[RenderOutput, VolumeRenderExtras | None]:
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    B, H, W, S = len(cameras), cameras.height, cameras.width, int(num_samples)
    origins, dirs = cameras.rays()                                       # [B, H, W, 3]
    o, d = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    R, dev, dt = o.shape[0], o.device, o.dtype
    near, far = ray_aabb_intersect(o, d, field.aabb.to(device=dev, dtype=dt))
    near = near.clamp_min(0.0)
    if near_far is not None:
        near, far = near.clamp_min(float(near_far[0])), far.clamp_max(float(near_far[1]))
    hit = torch.nonzero(far > near).squeeze(1)
    n_hit = hit.numel()

    if stratified:
        gen_dev = generator.device if generator is not None else dev
        jitter = torch.rand(n_hit, S, generator=generator, device=gen_dev, dtype=dt).to(dev)
    else:
        jitter = torch.full((n_hit, S), 0.5, device=dev, dtype=dt)
    create_graph = torch.is_grad_enabled()
    chunk = int(chunk_rays) if chunk_rays else max(1, _POINTS_PER_CHUNK // S)

    pieces = []
    for start in range(0, n_hit, chunk):
        idx = hit[start:start + chunk]
        pieces.append(_march(field, o[idx], d[idx], near[idx], far[idx],
                             jitter[start:start + chunk], compute_normals, create_graph))

    def gather(key: str, shape: tuple[int, ...]) -> torch.Tensor:
        full = torch.zeros(R, *shape, device=dev, dtype=dt)
        if not pieces:
            return full
        return full.index_copy(0, hit, torch.cat([p[key] for p in pieces]))

    alpha = gather("alpha", (1,))
    rgb = gather("rgb", (3,))                                            # before background
    cos = (dirs * cameras.forward.to(dt)[:, None, None, :]).sum(-1, keepdim=True)  # [B, H, W, 1]
    alpha_img = alpha.reshape(B, H, W, 1)
    has = alpha_img > ALPHA_EPS
    z = gather("t", (1,)).reshape(B, H, W, 1) * cos
    depth = torch.where(has, z / alpha_img.clamp_min(ALPHA_EPS), torch.zeros_like(z))
    bg = background_image(background, B, o)
    rgb_img = rgb.reshape(B, H, W, 3) + (1.0 - alpha_img) * bg
    normal_img = None
    if compute_normals:
        n_sum = gather("normal", (3,)).reshape(B, H, W, 3)
        normal_img = torch.where(has, F.normalize(n_sum, dim=-1, eps=1e-10), torch.zeros_like(n_sum))

    if not with_extras:
        return RenderOutput(rgb=rgb_img, alpha=alpha_img, depth=depth, normal=normal_img), None
    extras = VolumeRenderExtras(
        weights=gather("weights", (S,)).reshape(B, H, W, S),
        t=gather("t_samples", (S,)).reshape(B, H, W, S),
        density=gather("density", (S,)).reshape(B, H, W, S),
        normals=gather("normals", (S, 3)).reshape(B, H, W, S, 3) if compute_normals else None,
        dirs=dirs,
    )
    return RenderOutput(rgb=rgb_img, alpha=alpha_img, depth=depth, normal=normal_img), extras


def render_volume(field: DensityField, cameras: Cameras, *, num_samples: int = 64,
                  near_far: tuple[float, float] | None = None,
                  background: float | torch.Tensor = 1.0, stratified: bool = True,
                  generator: torch.Generator | None = None, compute_normals: bool = True,
                  chunk_rays: int | None = None) -> RenderOutput:
    """Render a density field from B cameras -> RenderOutput with [B, H, W, *] images.

    num_samples: samples per ray inside the field's box (one per equal bin).
    near_far: optional global (near, far) limits on the ray distance, intersected with the box.
    background: colour behind the field: a float, [3], [B, 3] or [B, H, W, 3] tensor.
    stratified: a random point in each bin (training); False takes bin centres (evaluation).
    generator: torch.Generator for the stratified jitter.
    compute_normals: also return normals (one extra backward pass through the field, and a
        double backward when a loss uses them); turn off when nothing needs them.
    chunk_rays: rays per field query (default: 2^18 samples per chunk). This bounds the peak
        memory of inference; under autograd the graph of every chunk is kept for backward.
    """
    out, _ = _render(field, cameras, num_samples, near_far, background, stratified, generator,
                     compute_normals, chunk_rays, with_extras=False)
    return out


def render_volume_with_extras(field: DensityField, cameras: Cameras, *, num_samples: int = 64,
                              near_far: tuple[float, float] | None = None,
                              background: float | torch.Tensor = 1.0, stratified: bool = True,
                              generator: torch.Generator | None = None,
                              compute_normals: bool = True, chunk_rays: int | None = None,
                              ) -> tuple[RenderOutput, VolumeRenderExtras]:
    """``render_volume`` plus per-sample weights, distances, densities and normals (same args)."""
    out, extras = _render(field, cameras, num_samples, near_far, background, stratified, generator,
                          compute_normals, chunk_rays, with_extras=True)
    assert extras is not None
    return out, extras
