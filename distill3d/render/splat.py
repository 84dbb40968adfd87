"""Render 3D Gaussians: gsplat on CUDA, the pure-torch rasteriser everywhere else.

Both backends get the same tensors and give the same images (gsplat "classic" mode,
``render_mode="RGB+ED"``, unpacked): colour premultiplied by coverage, coverage, and the
expected z-depth. Colours (SH evaluated per camera) and background compositing are done here,
in torch, once for both.
"""

from __future__ import annotations

import functools

import torch

from distill3d.cameras import Cameras
from distill3d.errors import UserError
from distill3d.render.splat_torch import rasterization_torch
from distill3d.render_output import RenderOutput
from distill3d.scene.gaussians import Gaussians

__all__ = ["render_gaussians", "gsplat_available", "resolve_backend", "BACKENDS"]

BACKENDS = ("auto", "gsplat", "torch")


@functools.lru_cache(maxsize=1)
def _gsplat_rasterization():
    """gsplat's ``rasterization`` function, or the ImportError that stopped it."""
    try:
        from gsplat import rasterization
    except Exception as exc:  # ImportError, or a failed CUDA extension build
        return exc
    return rasterization


def gsplat_available() -> bool:
    """True when gsplat imports."""
    return not isinstance(_gsplat_rasterization(), Exception)


def resolve_backend(backend: str, device: torch.device) -> str:
    """'auto' -> 'gsplat' when gsplat imports and ``device`` is CUDA, else 'torch'."""
    if backend not in BACKENDS:
        raise UserError(f"unknown splatting backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat":
        found = _gsplat_rasterization()
        if isinstance(found, Exception):
            raise UserError(f"the gsplat backend needs the gsplat package (pip install gsplat) and CUDA; "
                            f"importing it failed: {found}. Use backend='torch' or 'auto'.")
        if device.type != "cuda":
            raise UserError(f"the gsplat backend runs on CUDA tensors only, got {device}; use backend='torch'")
    return backend


def _background(background, n_cameras: int, like: torch.Tensor) -> torch.Tensor:
    """A float, [3] or [C, 3] background -> [C, 3]."""
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.ndim == 0:
        bg = bg.expand(3)
    if bg.ndim == 1:
        bg = bg[None].expand(n_cameras, 3)
    if bg.shape != (n_cameras, 3):
        raise ValueError(f"background must be a number, [3] or [C, 3], got {list(bg.shape)}")
    return bg


def render_gaussians(gaussians: Gaussians, cameras: Cameras, *, background=1.0, backend: str = "auto",
                     sh_degree: int | None = None, near: float = 0.01, far: float = 100.0,
                     rasterize_mode: str = "classic", info: dict | None = None) -> RenderOutput:
    """Splat ``gaussians`` into ``cameras`` (B cameras of H x W).

    Returns rgb [B, H, W, 3] composited over ``background`` (a number, [3] or [B, 3]; colours
    are clamped below at 0 only, as gsplat does, so SH colours may exceed 1), alpha
    [B, H, W, 1], depth [B, H, W, 1] (expected z-depth, 0 where alpha is 0) and normal None. ``sh_degree`` limits the SH bands used (default: all stored). Pass a dict as
    ``info`` to receive means2d [B, N, 2] (its ``.grad`` is kept after backward), radii,
    width, height and n_cameras, as ``Densifier.accumulate`` reads them.
    """
    cams = cameras.to(gaussians.device, gaussians.dtype)
    which = resolve_backend(backend, gaussians.device)
    colors = gaussians.colors(cams.centers, sh_degree)  # [N, 3] or [B, N, 3]
    args = (gaussians.means, gaussians.rotations, gaussians.scales, gaussians.opacities, colors,
            cams.viewmats, cams.K, cams.width, cams.height)
    kwargs = dict(near_plane=near, far_plane=far, eps2d=0.3, render_mode="RGB+ED", rasterize_mode=rasterize_mode)
    if which == "gsplat":
        rasterization = _gsplat_rasterization()
        out, alpha, meta = rasterization(*(a.contiguous() if torch.is_tensor(a) else a for a in args),
                                         packed=False, **kwargs)
    else:
        out, alpha, meta = rasterization_torch(*args, **kwargs)
    bg = _background(background, len(cams), out)
    rgb = out[..., :3] + (1.0 - alpha) * bg[:, None, None, :]
    if info is not None:
        means2d = meta["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        info.update(means2d=means2d, radii=meta["radii"], width=cams.width, height=cams.height,
                    n_cameras=len(cams), backend=which)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=out[..., 3:4], normal=None)
