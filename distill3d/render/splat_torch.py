"""Gaussian splatting in pure torch: the same inputs, outputs and numbers as gsplat's "classic" mode.

``rasterization_torch`` takes the arguments of ``gsplat.rasterization`` that distill3d uses and
returns ``(render_colors [C, H, W, D(+1)], render_alphas [C, H, W, 1], meta)``. It runs anywhere
torch runs, is differentiable with respect to every Gaussian input, and follows gsplat's
CUDA kernels step by step:

Projection (EWA splatting, Zwicker et al. 2002, as in 3DGS Eq. 5)
  mean_c = R mean + t, cov_c = R cov R^T; pixel mean = K mean_c / z;
  cov2d = J cov_c J^T + eps2d I with J the Jacobian of the pinhole projection, where x/z and
  y/z are clamped to 1.3x the field of view inside J (gsplat's guard against huge off-screen
  splats); eps2d = 0.3 px^2 is the low-pass dilation. Gaussians with z outside
  (near_plane, far_plane), det(cov2d) <= 0 or opacity < 1/255 are culled.
Extent
  Per axis, radius = ceil(k sqrt(cov2d_ii)) with k = min(3.33, sqrt(2 ln(255 o))): the
  opacity-aware box of recent gsplat releases, which holds exactly the pixels where
  alpha >= 1/255, so tiling changes nothing in the output. (Older releases used 3 sigma of
  the largest axis for both; that cuts fringes with alpha < 0.011, where they can differ.)
Compositing (3DGS Eq. 2-3)
  pixel centres at (u + 0.5, v + 0.5); alpha = min(0.999, o exp(-0.5 d^T cov2d^-1 d)),
  skipped when alpha < 1/255; front to back in order of camera z of the centres;
  a pixel stops before the Gaussian that would take its transmittance to <= 1e-4
  (that one is not blended). render_alphas = 1 - final transmittance.
"RGB+ED" appends the expected z-depth sum(w z) / max(alpha, 1e-10) as the last channel.

How it is organised for CPUs: per camera, each Gaussian is listed in every tile (8x8 pixels by
default; gsplat uses 16, the output does not depend on it) that its box touches; each list is
sorted by depth; tiles are processed in chunks padded to the longest list in the chunk (tiles
grouped by list length so padding stays small). Within a chunk the Mahalanobis terms
[tiles, pixels, M] are one matmul (a quadratic in tile-centred pixel coordinates),
transmittance is a cumulative product, and the blending has an analytic backward
(``_Composite``) so only a few [tiles, pixels, M] tensors are kept for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from distill3d.scene.gaussians import quat_to_rotmat

__all__ = ["Projection", "project_gaussians", "rasterize_tiles", "rasterization_torch"]

ALPHA_MIN = 1.0 / 255.0  # gsplat ALPHA_THRESHOLD
ALPHA_MAX = 0.999  # gsplat clamps alpha at 0.999 (the 3DGS reference code uses 0.99)
TRANSMITTANCE_MIN = 1e-4
EXTENT_SIGMAS = 3.33  # gsplat GAUSSIAN_EXTEND, ~ sqrt(2 ln 255)


@dataclass
class Projection:
    """Gaussians projected into C cameras.

    means2d [C, N, 2] pixels; conics [C, N, 3] upper triangle (a, b, c) of cov2d^-1;
    depths [C, N] camera z; radii [C, N, 2] integer half-extent of the box in pixels
    (0 = culled); opacities [C, N] (times the antialiasing compensation when used).
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    opacities: torch.Tensor


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                      viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, *,
                      near_plane: float = 0.01, far_plane: float = 1e10, eps2d: float = 0.3,
                      radius_clip: float = 0.0, antialiased: bool = False) -> Projection:
    """Project N Gaussians (means [N, 3], quats [N, 4] wxyz, scales [N, 3], opacities [N]) into
    C pinhole cameras (viewmats [C, 4, 4] world-to-camera, Ks [C, 3, 3])."""
    rot = quat_to_rotmat(quats)  # [N, 3, 3]
    m = rot * scales[:, None, :]
    cov = m @ m.transpose(-1, -2)  # [N, 3, 3]
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    cov_c = torch.einsum("cij,njk,clk->cnil", R, cov, R)  # [C, N, 3, 3]

    z = p[..., 2]
    in_depth = (z > near_plane) & (z < far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # keep culled entries finite (NaN-free grads)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    u = p[..., 0] / z
    v = p[..., 1] / z
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)

    # Jacobian with x/z, y/z clamped to 1.3x the frustum.
    lim_xp = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_xn = cx / fx + 0.3 * (0.5 * width / fx)
    lim_yp = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_yn = cy / fy + 0.3 * (0.5 * height / fy)
    uc = torch.minimum(torch.maximum(u, -lim_xn), lim_xp)
    vc = torch.minimum(torch.maximum(v, -lim_yn), lim_yp)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * uc / z, zero, fy / z, -fy * vc / z], dim=-1).reshape(*z.shape, 2, 3)
    cov2d = J @ cov_c @ J.transpose(-1, -2)  # [C, N, 2, 2]

    a = cov2d[..., 0, 0] + eps2d
    b = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    c = cov2d[..., 1, 1] + eps2d
    det = a * c - b * b
    ok = in_depth & (det > 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)

    opac = opacities[None].expand_as(z)
    if antialiased:  # Mip-Splatting compensation sqrt(det(cov2d) / det(cov2d + eps I))
        det_orig = cov2d[..., 0, 0] * cov2d[..., 1, 1] - cov2d[..., 0, 1] * cov2d[..., 1, 0]
        opac = opac * (det_orig / det_safe).clamp_min(0.0).sqrt()

    with torch.no_grad():
        o = opac.detach()
        ok = ok & (o >= ALPHA_MIN)
        k = torch.sqrt(2.0 * torch.log((o * 255.0).clamp_min(1.0))).clamp_max(EXTENT_SIGMAS)
        rx = torch.ceil(k * a.detach().clamp_min(0.0).sqrt())
        ry = torch.ceil(k * c.detach().clamp_min(0.0).sqrt())
        ok &= ~((rx <= radius_clip) & (ry <= radius_clip))
        mx, my = means2d[..., 0].detach(), means2d[..., 1].detach()
        ok &= (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        radii = torch.stack([rx, ry], dim=-1).where(ok[..., None], torch.zeros_like(rx)[..., None])
        radii = radii.to(torch.int32)
    depths = torch.where(in_depth, p[..., 2], torch.zeros_like(z))
    return Projection(means2d, conics, depths, radii, opac)


def _segments(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For consecutive segments of the given lengths [S]: each element's segment and its
    position inside it, both [sum(counts)] (``repeat_interleave`` without its thread overhead)."""
    ends = counts.cumsum(0)
    flat = torch.arange(int(ends[-1]) if counts.numel() else 0, device=counts.device)
    seg = torch.searchsorted(ends, flat, right=True)
    return seg, flat - (ends - counts)[seg]


@torch.no_grad()
def _tile_lists(means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, tile_size: int,
                tiles_x: int, tiles_y: int):
    """Depth-sorted (tile, Gaussian) pairs for all cameras.

    Returns flat Gaussian ids (c * N + n) sorted by (tile, depth), the number of pairs per tile
    [C * tiles_y * tiles_x] and each tile's first pair.
    """
    C, N = depths.shape
    n_tiles = C * tiles_x * tiles_y
    cam, gid = (radii > 0).all(-1).nonzero(as_tuple=True)
    flat = cam * N + gid
    mean = means2d.detach()[cam, gid] / tile_size
    rad = radii[cam, gid].to(mean.dtype) / tile_size
    x0 = torch.floor(mean[:, 0] - rad[:, 0]).clamp(0, tiles_x).long()
    x1 = torch.ceil(mean[:, 0] + rad[:, 0]).clamp(0, tiles_x).long()
    y0 = torch.floor(mean[:, 1] - rad[:, 1]).clamp(0, tiles_y).long()
    y1 = torch.ceil(mean[:, 1] + rad[:, 1]).clamp(0, tiles_y).long()
    w = x1 - x0
    per = w * (y1 - y0)  # tiles touched by each visible Gaussian
    src, local = _segments(per)
    tx = x0[src] + local % w[src]
    ty = y0[src] + local // w[src]
    tile = cam[src] * (tiles_x * tiles_y) + ty * tiles_x + tx
    depth_rank = torch.empty_like(flat)
    depth_rank[torch.argsort(depths.detach()[cam, gid])] = torch.arange(flat.shape[0], device=flat.device)
    order = torch.argsort(tile * max(flat.shape[0], 1) + depth_rank[src])
    counts = torch.bincount(tile, minlength=n_tiles)
    starts = counts.cumsum(0) - counts
    return flat[src[order]], counts, starts


def _chunks(counts: torch.Tensor, pixels_per_tile: int, budget: int, ratio: float = 0.6) -> list[torch.Tensor]:
    """Group non-empty tiles, longest lists first, into chunks padded to their longest list.

    A chunk ends when tiles * pixels * longest would exceed ``budget`` or when a list is
    shorter than ``ratio`` times the chunk's longest (bounding the padding waste).
    """
    nonempty = (counts > 0).nonzero(as_tuple=True)[0]
    order = nonempty[torch.argsort(counts[nonempty], descending=True)]
    sizes = counts[order].tolist()
    out, begin = [], 0
    while begin < len(sizes):
        longest = sizes[begin]
        limit = max(1, budget // max(pixels_per_tile * longest, 1))
        end = begin + 1
        while end < len(sizes) and end - begin < limit and sizes[end] >= ratio * longest:
            end += 1
        out.append(order[begin:end])
        begin = end
    return out


class _Composite(torch.autograd.Function):
    """Front-to-back blending of depth-sorted lists, with an analytic backward.

    forward(neg_sigma [T, P, M], opacity [T, M], features [T, M, D]) -> [T, P, D + 1], the last
    channel being coverage. With alpha_i = min(0.999, o_i exp(-sigma_i)) (0 below 1/255),
    T_i = prod_{j<i} (1 - alpha_j) and w_i = alpha_i T_i while prod_{j<=i} (1 - alpha_j) > 1e-4:
        dL/dalpha_k = T_k q_k - (sum_{i>k} w_i q_i) / (1 - alpha_k),   q_i = dL/dw_i.
    """

    @staticmethod
    def forward(ctx, neg_sigma, opacity, features):
        e = torch.exp(neg_sigma)
        g = opacity[:, None, :] * e
        keep = g >= ALPHA_MIN
        alpha = torch.where(keep, g.clamp_max(ALPHA_MAX), 0.0)
        one_minus = 1.0 - alpha
        after = torch.cumprod(one_minus, dim=-1)
        before = after / one_minus
        live = after > TRANSMITTANCE_MIN
        weight = torch.where(live, alpha * before, 0.0)
        feats = torch.cat([features, torch.ones_like(features[..., :1])], dim=-1)
        ctx.save_for_backward(e, opacity, feats, one_minus, before, weight, keep & (g < ALPHA_MAX) & live)
        return weight @ feats

    @staticmethod
    def backward(ctx, grad_out):
        e, opacity, feats, one_minus, before, weight, passes = ctx.saved_tensors
        q = grad_out @ feats.transpose(-1, -2)  # [T, P, M] dL/dw
        qw = q * weight
        later = qw.sum(-1, keepdim=True) - qw.cumsum(-1)  # sum over i > k of w_i q_i
        grad_alpha = q * before - later / one_minus
        grad_g = torch.where(passes, grad_alpha, 0.0)
        grad_opacity = (grad_g * e).sum(1)
        grad_neg_sigma = grad_g * e * opacity[:, None, :]
        grad_features = (weight.transpose(-1, -2) @ grad_out)[..., :-1]
        return grad_neg_sigma, grad_opacity, grad_features


def _neg_sigma_coefficients(mu: torch.Tensor, con: torch.Tensor) -> torch.Tensor:
    """Per Gaussian [T, M, 6] coefficients of -sigma as a quadratic in pixel offsets (x, y).

    -sigma = -(0.5 a dx^2 + b dx dy + 0.5 c dy^2), dx = mx - x, dy = my - y, written as
    k . (1, x, y, x^2, x y, y^2) so one matmul evaluates it for every pixel of a tile.
    """
    mx, my = mu.unbind(-1)
    a, b, c = con.unbind(-1)
    k0 = 0.5 * a * mx * mx + b * mx * my + 0.5 * c * my * my
    k = torch.stack([k0, -(a * mx + b * my), -(b * mx + c * my), 0.5 * a, b, 0.5 * c], dim=-1)
    return -k


def rasterize_tiles(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, features: torch.Tensor,
                    radii: torch.Tensor, depths: torch.Tensor, width: int, height: int, *, tile_size: int = 8,
                    backgrounds: torch.Tensor | None = None,
                    chunk_elements: int = 1 << 23) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite projected Gaussians front to back.

    means2d [C, N, 2], conics [C, N, 3], opacities [C, N], features [C, N, D], radii [C, N, 2],
    depths [C, N] -> (features [C, H, W, D], alphas [C, H, W, 1]); ``backgrounds`` [C, D] is
    added times the final transmittance. ``chunk_elements`` bounds tiles * pixels * list length
    evaluated at once.
    """
    C, N = depths.shape
    D = features.shape[-1]
    dev, dt = means2d.device, means2d.dtype
    ts = int(tile_size)
    tiles_x, tiles_y = math.ceil(width / ts), math.ceil(height / ts)
    tiles_per_cam = tiles_x * tiles_y
    ids, counts, starts = _tile_lists(means2d, radii, depths, ts, tiles_x, tiles_y)

    # One padding row (opacity 0) at index C * N for the short lists of a chunk.
    pad = C * N
    mu_all = torch.cat([means2d.reshape(C * N, 2), means2d.new_zeros(1, 2)])
    con_all = torch.cat([conics.reshape(C * N, 3), conics.new_zeros(1, 3)])
    op_all = torch.cat([opacities.reshape(C * N), opacities.new_zeros(1)])
    feat_all = torch.cat([features.reshape(C * N, D), features.new_zeros(1, D)])

    # Pixel centres relative to the tile centre (small numbers keep the quadratic accurate).
    offs = torch.arange(ts, device=dev, dtype=dt) + 0.5 - 0.5 * ts
    py, px = torch.meshgrid(offs, offs, indexing="ij")
    px, py = px.reshape(-1), py.reshape(-1)
    monomials = torch.stack([torch.ones_like(px), px, py, px * px, px * py, py * py], dim=-1)  # [P, 6]
    P = ts * ts

    done_tiles, done_out = [], []
    for tiles in _chunks(counts, P, chunk_elements):
        cnt = counts[tiles]
        M = int(cnt.max())
        rows, cols = _segments(cnt)
        idx = torch.full((tiles.shape[0], M), pad, dtype=torch.long, device=dev)
        idx[rows, cols] = ids[starts[tiles][rows] + cols]

        local = tiles % tiles_per_cam
        centre = torch.stack([(local % tiles_x) * ts, (local // tiles_x) * ts], dim=-1).to(dt) + 0.5 * ts
        coeffs = _neg_sigma_coefficients(mu_all[idx] - centre[:, None, :], con_all[idx])  # [T, M, 6]
        neg_sigma = monomials @ coeffs.transpose(-1, -2)  # [T, P, M]
        done_out.append(_Composite.apply(neg_sigma, op_all[idx], feat_all[idx]))
        done_tiles.append(tiles)

    tiled = features.new_zeros(C * tiles_per_cam, P, D + 1)
    if done_tiles:
        tiled = tiled.index_put((torch.cat(done_tiles),), torch.cat(done_out))
    tiled = tiled.reshape(C, tiles_y, tiles_x, ts, ts, D + 1).permute(0, 1, 3, 2, 4, 5)
    image = tiled.reshape(C, tiles_y * ts, tiles_x * ts, D + 1)[:, :height, :width]
    out, alphas = image[..., :D], image[..., D:]
    if backgrounds is not None:
        out = out + (1.0 - alphas) * backgrounds[:, None, None, :]
    return out, alphas


def rasterization_torch(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                        colors: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int, *,
                        near_plane: float = 0.01, far_plane: float = 1e10, radius_clip: float = 0.0,
                        eps2d: float = 0.3, tile_size: int = 8, backgrounds: torch.Tensor | None = None,
                        render_mode: str = "RGB", rasterize_mode: str = "classic"
                        ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """gsplat's ``rasterization`` (post-activation colours, unpacked) in torch.

    means [N, 3], quats [N, 4] (wxyz), scales [N, 3], opacities [N], colors [N, D] or [C, N, D],
    viewmats [C, 4, 4], Ks [C, 3, 3]. render_mode "RGB", "D", "ED", "RGB+D" or "RGB+ED";
    rasterize_mode "classic" or "antialiased". Returns render_colors [C, H, W, X],
    render_alphas [C, H, W, 1] and meta (means2d, conics, depths, radii, opacities, width,
    height, n_cameras, tile_size).
    """
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    C, N = viewmats.shape[0], means.shape[0]
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height,
                             near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, radius_clip=radius_clip,
                             antialiased=rasterize_mode == "antialiased")
    feats = colors if colors.dim() == 3 else colors[None].expand(C, N, colors.shape[-1])
    depth = proj.depths[..., None]
    if render_mode in ("RGB+D", "RGB+ED"):
        feats = torch.cat([feats, depth], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        feats = depth
        backgrounds = None if backgrounds is None else backgrounds.new_zeros(C, 1)
    out, alphas = rasterize_tiles(proj.means2d, proj.conics, proj.opacities, feats, proj.radii, proj.depths,
                                  width, height, tile_size=tile_size, backgrounds=backgrounds)
    if render_mode in ("ED", "RGB+ED"):
        out = torch.cat([out[..., :-1], out[..., -1:] / alphas.clamp_min(1e-10)], dim=-1)
    meta = {"means2d": proj.means2d, "conics": proj.conics, "depths": proj.depths, "radii": proj.radii,
            "opacities": proj.opacities, "width": width, "height": height, "n_cameras": C,
            "tile_size": tile_size}
    return out, alphas, meta
