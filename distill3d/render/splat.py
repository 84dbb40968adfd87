"""Render 3D Gaussians: gsplat on CUDA, the pure-torch rasteriser everywhere else.

Both backends get the same tensors and give the same images (gsplat "classic" mode,
``render_mode="RGB+ED"``, unpacked): colour premultiplied by coverage, coverage, and the
expected z-depth. Colours (SH evaluated per camera) and background compositing are done here,
in torch, once for both.

``render_gaussians`` renders one scene (``Gaussians``) into B cameras; ``render_gaussian_batch``
renders S scenes (``GaussianBatch``, activated values) into V cameras each, in one call.
"""

from __future__ import annotations

import functools
import re

import torch

from distill3d.cameras import Cameras
from distill3d.errors import UserError
from distill3d.render.splat_torch import rasterization_torch
from distill3d.render_output import RenderOutput
from distill3d.scene.gaussian_batch import GaussianBatch
from distill3d.scene.gaussians import Gaussians

__all__ = ["render_gaussians", "render_gaussian_batch", "gsplat_available", "resolve_backend", "BACKENDS"]

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


@functools.lru_cache(maxsize=1)
def _gsplat_takes_batch_dims() -> bool:
    """True when the installed gsplat's ``rasterization`` accepts leading batch dimensions (>= 1.5.3)."""
    try:
        import gsplat

        found = re.match(r"(\d+)\.(\d+)\.(\d+)", gsplat.__version__)
    except (ImportError, AttributeError):
        return False
    return found is not None and tuple(int(x) for x in found.groups()) >= (1, 5, 3)


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
    if info is not None:
        means2d = meta["means2d"]
        if means2d.requires_grad:
            means2d.retain_grad()
        info.update(means2d=means2d, radii=meta["radii"], width=cams.width, height=cams.height,
                    n_cameras=len(cams), backend=which)
    return _composite(out, alpha, _background(background, len(cams), out))


def _composite(out: torch.Tensor, alpha: torch.Tensor, bg: torch.Tensor) -> RenderOutput:
    """RGB+ED renders out [B, H, W, 4] (colour premultiplied), alpha [B, H, W, 1] and a background
    [B, 3] -> RenderOutput (rgb over the background, alpha, depth, normal None)."""
    rgb = out[..., :3] + (1.0 - alpha) * bg[:, None, None, :]
    return RenderOutput(rgb=rgb, alpha=alpha, depth=out[..., 3:4], normal=None)


# ---------------------------------------------------------------------- many scenes at once
def _merge_scene_views(t: torch.Tensor) -> torch.Tensor:
    """[S, V, ...] -> [S * V, ...], scene-major (the views of scene 0 first), as the cameras are ordered."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _rasterize_scene_by_scene(rasterize, tensors: list[torch.Tensor], width: int, height: int,
                              **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Call ``rasterize`` (gsplat's signature, one scene) for each scene; stack to [S, V, H, W, X], [S, V, H, W, 1].

    ``tensors``: means [S, N, 3], quats [S, N, 4], scales [S, N, 3], opacities [S, N],
    colours [S, N, D], viewmats [S, V, 4, 4], Ks [S, V, 3, 3].
    """
    outs, alphas = [], []
    for i in range(tensors[0].shape[0]):
        out, alpha, _ = rasterize(*(t[i] for t in tensors), width, height, **kwargs)
        outs.append(out)
        alphas.append(alpha)
    return torch.stack(outs), torch.stack(alphas)


def _background_batch(background, n_scenes: int, n_views: int, like: torch.Tensor) -> torch.Tensor:
    """A number, [3], [S, 3] (one per scene) or [S * V, 3] (one per image) -> [S * V, 3]."""
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.ndim == 2 and bg.shape == (n_scenes, 3) and n_views > 1:
        bg = bg.repeat_interleave(n_views, dim=0)
    try:
        return _background(bg, n_scenes * n_views, like)
    except ValueError:
        raise ValueError(f"background must be a number, [3], [S, 3] or [S * V, 3] "
                         f"(S={n_scenes}, V={n_views}), got {list(bg.shape)}") from None


def render_gaussian_batch(batch: GaussianBatch, cameras: Cameras, *, background=1.0, backend: str = "auto",
                          near: float = 0.01, far: float = 100.0, rasterize_mode: str = "classic") -> RenderOutput:
    """Splat S scenes, each into its own V cameras, in one call.

    ``batch``: S scenes of N Gaussians (means [S, N, 3], quats [S, N, 4], scales [S, N, 3],
    opacities [S, N], colours [S, N, 3]); ``cameras``: S * V cameras of H x W, scene-major
    (cameras [i * V:(i + 1) * V] look at scene i). ``background``: a number, [3], [S, 3] (one
    per scene) or [S * V, 3] (one per image).

    Returns RenderOutput with rgb [S * V, H, W, 3] over the background, alpha [S * V, H, W, 1],
    depth [S * V, H, W, 1] (expected z-depth, 0 where alpha is 0), normal None, in the order of
    ``cameras``: image i * V + v is scene i seen from its camera v. Each image equals
    ``render_gaussians(batch.scene(i), cameras[i * V + v])`` (same "classic", RGB+ED rules;
    colours are used as given, not clamped). Differentiable with respect to every tensor of the batch.

    Backends: on CUDA with gsplat >= 1.5.3, one ``gsplat.rasterization`` call with leading batch
    dimensions (Gaussians [S, N, ...], cameras [S, V, ...]); an older gsplat is called once per
    scene. The torch backend (``rasterization_torch``) loops over the S scenes, each scene's V
    cameras rendered at once. Either renders with autocast off; a float16 / bf16 batch (a student
    under mixed precision) is rendered in float32.
    """
    n_scenes = len(batch)
    if n_scenes == 0 or len(cameras) % n_scenes != 0:
        raise ValueError(f"{len(cameras)} cameras cannot be split evenly among {n_scenes} scenes "
                         f"(cameras must be S * V, scene-major)")
    n_views = len(cameras) // n_scenes
    if n_views == 0:
        raise ValueError(f"no cameras given for {n_scenes} scenes")
    which = resolve_backend(backend, batch.device)
    if batch.dtype in (torch.float16, torch.bfloat16):
        batch = batch.float()  # a student under autocast: gsplat's kernels take float32 only
    with torch.autocast(batch.device.type, enabled=False):  # splatting in the batch's precision
        return _render_batch(batch, cameras, background, which, near, far, rasterize_mode)


def _render_batch(batch: GaussianBatch, cameras: Cameras, background, which: str, near: float, far: float,
                  rasterize_mode: str) -> RenderOutput:
    n_scenes = len(batch)
    n_views = len(cameras) // n_scenes
    cams = cameras.to(batch.device, batch.dtype)
    tensors = [batch.means, batch.quats, batch.scales, batch.opacities, batch.colours,
               cams.viewmats.reshape(n_scenes, n_views, 4, 4), cams.K.reshape(n_scenes, n_views, 3, 3)]
    kwargs = {"near_plane": near, "far_plane": far, "eps2d": 0.3, "render_mode": "RGB+ED",
              "rasterize_mode": rasterize_mode}
    if which == "gsplat":
        rasterization = _gsplat_rasterization()
        tensors = [t.contiguous() for t in tensors]
        if _gsplat_takes_batch_dims():  # [S, V, H, W, 4], [S, V, H, W, 1]
            out, alpha, _ = rasterization(*tensors, cams.width, cams.height, packed=False, **kwargs)
        else:
            out, alpha = _rasterize_scene_by_scene(rasterization, tensors, cams.width, cams.height,
                                                   packed=False, **kwargs)
    else:
        out, alpha = _rasterize_scene_by_scene(rasterization_torch, tensors, cams.width, cams.height, **kwargs)
    out, alpha = _merge_scene_views(out), _merge_scene_views(alpha)
    return _composite(out, alpha, _background_batch(background, n_scenes, n_views, out))
