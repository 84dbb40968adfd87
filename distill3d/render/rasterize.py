"""Differentiable triangle rasterisation in pure torch: ``rasterize`` then ``interpolate``.

The split is nvdiffrast's (Laine et al. 2020, "Modular Primitives for High-Performance
Differentiable Rendering", Sec. 3): ``rasterize`` finds the triangle each pixel sees and its
barycentrics, ``interpolate`` turns vertex attributes into images, and ``antialias``
(``distill3d.render.antialias``) gives the silhouettes their gradient. Visibility is discrete and
carries no gradient; the barycentrics and depth of the visible triangle are smooth functions of
its vertices and carry all of it.

Pixel rays are those of ``Cameras.rays``: pixel (u, v) looks along the camera-frame direction
``d = ((u + 0.5 - cx) / fx, (v + 0.5 - cy) / fy, 1)`` (OpenCV: x right, y down, z forward), so
mesh renders line up with the volume renderer and the world's reference renderer.

Ray-triangle barycentrics (Cramer's rule on ``t d = sum_i b_i p_i``, ``sum_i b_i = 1``): with
the vertices p0, p1, p2 in the camera frame,

    w_0 = d . (p1 x p2),  w_1 = d . (p2 x p0),  w_2 = d . (p0 x p1),
    b_i = w_i / sum_j w_j,  z = det(p0, p1, p2) / sum_j w_j      (z-depth, as d_z = 1),

the perspective-correct barycentrics. A pixel centre is covered when the three w_i share the
sign of their sum (both windings are drawn: no culling). Two faces sharing an edge compute its
w_i from the same cross product with opposite signs, so shared edges leave no cracks.

Visibility: every pixel centre in the screen bounding box of a (camera, triangle) is a
candidate; candidates are enumerated ``chunk`` at a time (memory is bounded whatever the
resolution and mesh) and reduced into a z-buffer with ``scatter_reduce('amin')`` on a 64-bit key
``float32 depth bits << 32 | face``: positive floats order like their bit patterns, so the
nearest face wins and ties go to the lower face index, deterministically.

Not handled: a face with a vertex nearer than ``near`` to the camera plane is dropped whole (no
clipping), which is fine for cameras outside the object's bounding sphere.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.cameras import Cameras

__all__ = [
    "Rasterization",
    "camera_space",
    "edge_terms",
    "interpolate",
    "pixel_candidates",
    "pixel_directions",
    "rasterize",
]

_CHUNK_CPU = 1 << 20    # candidate (pixel, face) pairs tested at once on the CPU
_CHUNK_CUDA = 1 << 23   # ... and on a GPU (about 1 GB of temporaries)
_FACE_BITS = 32


@dataclass
class Rasterization:
    """Which face each pixel of B cameras sees, and where on it.

    face_id:   [B, H, W] long index into ``faces``, -1 on the background.
    bary:      [B, H, W, 3] perspective-correct barycentrics (0 on the background), differentiable
               w.r.t. the vertex positions.
    depth:     [B, H, W] z-depth in the OpenCV camera frame (0 on the background), differentiable.
    verts_cam: [B, V, 3] vertices in each camera's frame (the graph ``antialias`` differentiates).
    faces:     [F, 3] long.
    cameras:   the B cameras.
    """

    face_id: Tensor
    bary: Tensor
    depth: Tensor
    verts_cam: Tensor
    faces: Tensor
    cameras: Cameras

    @property
    def mask(self) -> Tensor:
        """[B, H, W] bool: the pixel sees a face."""
        return self.face_id >= 0


def camera_space(verts: Tensor, cameras: Cameras) -> Tensor:
    """World points [V, 3] -> [B, V, 3] in each camera's OpenCV frame."""
    w2c = cameras.viewmats.to(verts)
    return torch.einsum("bij,vj->bvi", w2c[:, :3, :3], verts) + w2c[:, None, :3, 3]


def pixel_directions(cameras: Cameras, cam: Tensor, px: Tensor, py: Tensor,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """[n, 3] camera-frame ray directions with d_z = 1 through the centres of pixels (px, py) [n]
    of cameras ``cam`` [n] (the directions of ``Cameras.rays`` before rotation and normalisation)."""
    K = cameras.K.to(dtype)[cam]                                         # [n, 3, 3]
    x = (px.to(dtype) + 0.5 - K[:, 0, 2]) / K[:, 0, 0]
    y = (py.to(dtype) + 0.5 - K[:, 1, 2]) / K[:, 1, 1]
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def edge_terms(tri: Tensor) -> tuple[Tensor, Tensor]:
    """Triangles [..., 3, 3] (camera frame) -> edge cross products [..., 3, 3] (row i is
    p_j x p_k, the edge opposite vertex i) and det(p0, p1, p2) [...]. Then w_i = d . row i."""
    p0, p1, p2 = tri.unbind(-2)
    c = torch.stack([torch.cross(p1, p2, dim=-1), torch.cross(p2, p0, dim=-1),
                     torch.cross(p0, p1, dim=-1)], dim=-2)
    return c, (p0 * c[..., 0, :]).sum(-1)


def pixel_candidates(lo: Tensor, hi: Tensor, chunk: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """All integer pixels of N boxes, ``chunk`` at a time, never all in memory.

    lo, hi: [N, 2] long inclusive (x, y) corners (a box with hi < lo is empty).
    Yields (box index [n], x [n], y [n]).
    """
    size = (hi - lo + 1).clamp_min(0)                                    # [N, 2]
    counts = size[:, 0] * size[:, 1]
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1].item()) if len(ends) else 0
    for start in range(0, total, chunk):
        flat = torch.arange(start, min(start + chunk, total), device=lo.device)
        box = torch.searchsorted(ends, flat, right=True)
        local = flat - (ends[box] - counts[box])
        width = size[box, 0]
        yield box, lo[box, 0] + local % width, lo[box, 1] + local // width


def _screen_boxes(tri: Tensor, cameras: Cameras, near: float) -> tuple[Tensor, Tensor]:
    """Camera-frame triangles [B, F, 3, 3] -> inclusive pixel boxes lo, hi [B, F, 2] (long) of the
    pixel centres they may cover; empty (hi < lo) off screen or nearer than ``near``."""
    K = cameras.K.to(tri)
    z = tri[..., 2]
    ok = (z > near).all(dim=-1)                                          # [B, F]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)[:, None, None, :]  # [B, 1, 1, 2]
    c = torch.stack([K[:, 0, 2], K[:, 1, 2]], dim=-1)[:, None, None, :]
    uv = tri[..., :2] / torch.where(ok[..., None], z, torch.ones_like(z))[..., None] * f + c
    size = torch.tensor([cameras.width, cameras.height], device=tri.device, dtype=tri.dtype)
    lo = torch.ceil(uv.amin(dim=-2) - 0.5).clamp(min=torch.zeros_like(size), max=size)
    hi = torch.floor(uv.amax(dim=-2) - 0.5).clamp(min=-torch.ones_like(size), max=size - 1)
    hi = torch.where(ok[..., None], hi, lo - 1)
    return lo.long(), hi.long()


@torch.no_grad()
def _visible_faces(verts_cam: Tensor, faces: Tensor, cameras: Cameras, near: float,
                   chunk: int) -> Tensor:
    """Z-buffer pass (no gradient): [B, H, W] long index of the nearest face at each pixel, -1 if none."""
    B, F = verts_cam.shape[0], faces.shape[0]
    H, W = cameras.height, cameras.width
    tri = verts_cam[:, faces]                                            # [B, F, 3, 3]
    lo, hi = _screen_boxes(tri, cameras, near)
    size = (hi - lo + 1).clamp_min(0)
    boxes = torch.nonzero((size[..., 0] * size[..., 1] > 0).reshape(-1)).squeeze(1)  # into B * F
    cross, det = edge_terms(tri.reshape(B * F, 3, 3)[boxes])
    keep_max = torch.iinfo(torch.int64).max
    zbuf = torch.full((B * H * W,), keep_max, dtype=torch.int64, device=verts_cam.device)
    for box, px, py in pixel_candidates(lo.reshape(-1, 2)[boxes], hi.reshape(-1, 2)[boxes], chunk):
        cam, face = boxes[box] // F, boxes[box] % F
        d = pixel_directions(cameras, cam, px, py, tri.dtype)
        w = torch.einsum("nij,nj->ni", cross[box], d)                    # [n, 3]
        s = w.sum(-1)
        inside = (((w >= 0).all(-1) & (s > 0)) | ((w <= 0).all(-1) & (s < 0)))
        depth = det[box] / torch.where(inside, s, torch.ones_like(s))
        inside &= depth > near
        key = depth.float().clamp_min(0.0).view(torch.int32).long() << _FACE_BITS | face
        pixel = (cam * H + py) * W + px
        zbuf.scatter_reduce_(0, pixel[inside], key[inside], "amin")
    face_id = torch.where(zbuf == keep_max, torch.full_like(zbuf, -1), zbuf & ((1 << _FACE_BITS) - 1))
    return face_id.reshape(B, H, W)


def rasterize(verts: Tensor, faces: Tensor, cameras: Cameras, *, near: float = 1e-3,
              chunk: int | None = None) -> Rasterization:
    """Rasterise a triangle mesh into B cameras.

    verts: [V, 3] world positions (gradients flow to them through ``bary`` and ``depth``).
    faces: [F, 3] long vertex indices (F < 2^31).
    cameras: B cameras of one image size H x W.
    near: faces with a vertex at z-depth <= near are not drawn.
    chunk: (pixel, face) candidates tested at once (default 2^20 on CPU, 2^23 on CUDA).
    """
    faces = faces.long()
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if faces.shape[0] >= 1 << 31:
        raise ValueError("at most 2^31 - 1 faces")
    cameras = cameras.to(verts.device)
    chunk = int(chunk or (_CHUNK_CUDA if verts.device.type == "cuda" else _CHUNK_CPU))
    verts_cam = camera_space(verts, cameras)                             # [B, V, 3], with grad
    B, H, W = len(cameras), cameras.height, cameras.width
    face_id = _visible_faces(verts_cam.detach(), faces, cameras, near, chunk)

    pix = torch.nonzero(face_id.reshape(-1) >= 0).squeeze(1)
    cam, rest = pix // (H * W), pix % (H * W)
    tri = verts_cam[cam[:, None], faces[face_id.reshape(-1)[pix]]]       # [n, 3, 3]
    cross, det = edge_terms(tri)
    w = torch.einsum("nij,nj->ni", cross, pixel_directions(cameras, cam, rest % W, rest // W, tri.dtype))
    s = w.sum(-1, keepdim=True)
    bary = torch.zeros(B * H * W, 3, dtype=verts.dtype, device=verts.device).index_copy(0, pix, w / s)
    depth = torch.zeros(B * H * W, dtype=verts.dtype, device=verts.device).index_copy(0, pix, det / s[:, 0])
    return Rasterization(face_id=face_id, bary=bary.reshape(B, H, W, 3), depth=depth.reshape(B, H, W),
                         verts_cam=verts_cam, faces=faces, cameras=cameras)


def interpolate(attrs: Tensor, rast: Rasterization) -> Tensor:
    """Vertex attributes [V, C] -> [B, H, W, C] images, barycentric blends of the visible face's
    three vertices (perspective-correct), 0 on the background. Differentiable w.r.t. ``attrs`` and,
    through the barycentrics, the vertex positions."""
    B, H, W = rast.face_id.shape
    fid = rast.face_id.reshape(-1)
    pix = torch.nonzero(fid >= 0).squeeze(1)
    corner = attrs[rast.faces[fid[pix]]]                                 # [n, 3, C]
    values = (rast.bary.reshape(-1, 3)[pix, :, None] * corner).sum(dim=1)
    out = torch.zeros(B * H * W, attrs.shape[-1], dtype=values.dtype, device=values.device)
    return out.index_copy(0, pix, values).reshape(B, H, W, -1)
