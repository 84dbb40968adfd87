"""CO3Dv2's cameras in distill3d's conventions, and the per-sequence move into the world frame
(``distill3d.data.co3d`` reads and writes the folders).

Camera conventions (PyTorch3D's ``PerspectiveCameras`` in NDC, what ``viewpoint`` stores)
------------------------------------------------------------------------------------------
- Row vectors: ``X_view = X_world @ R + T``. The view frame has +X left, +Y up, +Z into the
  screen (the viewing direction). So the camera centre is ``-T @ R.T`` (column form ``-R T``).
- Projection: ``x_ndc = f_x X_view.x / Z + p_x``, ``y_ndc = f_y X_view.y / Z + p_y``; NDC has +X
  left and +Y up, like the view frame.
- ``intrinsics_format = "ndc_isotropic"`` (CO3Dv2, PyTorch3D >= 0.5): the shorter image side
  spans [-1, 1] from edge to edge and the longer one [-s, s], s = aspect ratio >= 1; one scale
  ``min(H, W) / 2`` pixels per NDC unit on both axes. ``"ndc_norm_image_bounds"`` (CO3Dv1, the
  format's default when the field is absent): both sides span [-1, 1], so the scale is ``W / 2``
  along x and ``H / 2`` along y.
- NDC to pixels (continuous, edges of the image at 0 and W, as in ``distill3d.cameras``):
  ``u = W / 2 - scale_x * x_ndc``, ``v = H / 2 - scale_y * y_ndc``. Hence OpenCV pixel intrinsics
  ``fx = scale_x f_x``, ``cx = W / 2 - scale_x p_x`` (and likewise y), and the OpenCV camera
  (x right, y down, z forward) is the view frame with x and y negated:
  ``c2w[:3, :3] = R diag(-1, -1, 1)``, ``c2w[:3, 3] = -R T``. PyTorch3D's own
  ``_opencv_from_cameras_projection`` does the same.
- The image size that the NDC refers to is the annotation's ``image.size`` ([H, W]); an image
  file of another size is an error, as in PyTorch3D's loader.

World-frame normalisation (``Co3dNormalization``)
-------------------------------------------------
CO3D poses come from structure-from-motion on each video: arbitrary origin, orientation and scale
per sequence. HoloDiffusion's public configuration places a fixed grid (``volume_extent`` 8)
about the origin of the stored frame; distill3d makes the frame explicit instead, with one
similarity per sequence computed from all its posed frames (never from the images):

1. centre: the point nearest, in least squares, to every optical axis. A CO3D video circles an
   object kept in view, so the axes pass near it;
2. up: the smallest rotation taking the mean image-up vector (-y of the OpenCV cameras) to +Z
   (the photographer holds the phone upright); azimuth 0 stays arbitrary, since CO3D objects have
   no annotated front;
3. scale: the mean distance of the cameras to the centre becomes ``distance`` (2.7, that of the
   world's multi-view data sets, so that a world data set written as CO3D and read back keeps its
   frame: for an orbit, the similarity is the identity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.data.multiview import FRAMING_DISTANCE
from distill3d.errors import UserError

__all__ = ["INTRINSICS_FORMATS", "LEGACY_FORMAT", "Co3dNormalization", "apply_similarity", "normalization_transform",
           "opencv_from_pytorch3d", "pytorch3d_from_opencv"]

INTRINSICS_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")
LEGACY_FORMAT = "ndc_norm_image_bounds"
"""CO3D's ``ViewpointAnnotation.intrinsics_format`` default, used when the field is absent."""

_FLIP_XY = (-1.0, -1.0, 1.0)  # PyTorch3D view frame (x left, y up) <-> OpenCV (x right, y down)


# ---------------------------------------------------------------------- camera conventions
def _ndc_scales(image_size_hw: Tensor, intrinsics_format: str | Sequence[str]) -> Tensor:
    """[B, 2] pixels per NDC unit along x and y of images [B, 2] (H, W) in the given format(s)."""
    h, w = image_size_hw[:, 0], image_size_hw[:, 1]
    formats = [intrinsics_format] * len(h) if isinstance(intrinsics_format, str) else list(intrinsics_format)
    unknown = sorted(set(formats) - set(INTRINSICS_FORMATS))
    if unknown:
        raise UserError(f"unknown CO3D intrinsics format {unknown[0]!r}; known: {', '.join(INTRINSICS_FORMATS)}")
    legacy = torch.tensor([f == LEGACY_FORMAT for f in formats])
    iso = torch.minimum(h, w) / 2.0
    return torch.stack([torch.where(legacy, w / 2.0, iso), torch.where(legacy, h / 2.0, iso)], dim=-1)


def opencv_from_pytorch3d(R: Tensor, T: Tensor, focal_length: Tensor, principal_point: Tensor,
                          image_size_hw: Tensor, intrinsics_format: str | Sequence[str] = "ndc_isotropic"
                          ) -> tuple[Tensor, Tensor]:
    """PyTorch3D NDC cameras -> OpenCV c2w [B, 4, 4] and pixel K [B, 3, 3] (float64).

    R [B, 3, 3] and T [B, 3] as stored (``X_view = X_world @ R + T``), focal_length and
    principal_point [B, 2] in NDC, image_size_hw [B, 2]; conventions in the module docstring.
    """
    R, T = torch.as_tensor(R, dtype=torch.float64), torch.as_tensor(T, dtype=torch.float64)
    f = torch.as_tensor(focal_length, dtype=torch.float64)
    p = torch.as_tensor(principal_point, dtype=torch.float64)
    size = torch.as_tensor(image_size_hw, dtype=torch.float64)
    scale = _ndc_scales(size, intrinsics_format)
    K = torch.zeros(R.shape[0], 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1] = f[:, 0] * scale[:, 0], f[:, 1] * scale[:, 1]
    K[:, 0, 2] = size[:, 1] / 2.0 - p[:, 0] * scale[:, 0]
    K[:, 1, 2] = size[:, 0] / 2.0 - p[:, 1] * scale[:, 1]
    K[:, 2, 2] = 1.0
    c2w = torch.zeros(R.shape[0], 4, 4, dtype=torch.float64)
    c2w[:, :3, :3] = R * torch.tensor(_FLIP_XY, dtype=torch.float64)  # columns x, y negated
    c2w[:, :3, 3] = -(R @ T[:, :, None])[..., 0]
    c2w[:, 3, 3] = 1.0
    return c2w, K


def pytorch3d_from_opencv(c2w: Tensor, K: Tensor, image_size_hw: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inverse of ``opencv_from_pytorch3d`` in the ndc_isotropic format: R [B, 3, 3], T [B, 3],
    focal_length [B, 2], principal_point [B, 2] (float64)."""
    c2w, K = c2w.to(torch.float64), K.to(torch.float64)
    size = torch.as_tensor(image_size_hw, dtype=torch.float64)
    R = c2w[:, :3, :3] * torch.tensor(_FLIP_XY, dtype=torch.float64)
    T = -(R.transpose(1, 2) @ c2w[:, :3, 3:])[..., 0]
    scale = _ndc_scales(size, "ndc_isotropic")
    focal = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1) / scale
    principal = torch.stack([size[:, 1] / 2.0 - K[:, 0, 2], size[:, 0] / 2.0 - K[:, 1, 2]], dim=-1) / scale
    return R, T, focal, principal


# ---------------------------------------------------------------------- world-frame normalisation
@dataclass(frozen=True)
class Co3dNormalization:
    """Moves a sequence into distill3d's world frame (module docstring): centre where the optical
    axes meet, mean image-up onto +Z, cameras at mean ``distance`` from the origin."""

    distance: float = FRAMING_DISTANCE  # world units; the world's multi-view data sets use 2.7
    align_up: bool = True               # rotate the mean image-up vector onto +Z


def _nearest_point_to_axes(origins: Tensor, dirs: Tensor) -> Tensor:
    """[3] least-squares point nearest to the lines ``origins + t dirs`` ([N, 3] each, dirs unit).

    Minimises ``sum_i |(I - d_i d_i^T)(x - o_i)|^2``. A ridge of 1e-9 of the system's trace pulls
    the point towards the mean camera centre when the axes are (nearly) parallel.
    """
    eye = torch.eye(3, dtype=origins.dtype)
    P = eye - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3] projections off each axis
    A, b = P.sum(0), (P @ origins[:, :, None]).sum(0)[:, 0]
    ridge = 1e-9 * A.diagonal().sum()
    return torch.linalg.solve(A + ridge * eye, b + ridge * origins.mean(0))


def _rotation_onto_z(v: Tensor) -> Tensor:
    """[3, 3] smallest rotation taking the unit vector ``v`` [3] onto +Z (Rodrigues)."""
    z = torch.tensor([0.0, 0.0, 1.0], dtype=v.dtype)
    axis, cos = torch.linalg.cross(v, z), torch.dot(v, z)
    if cos < -1.0 + 1e-12:  # pointing down: half a turn about X
        return torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=v.dtype))
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]],
                         dtype=v.dtype)
    return torch.eye(3, dtype=v.dtype) + cross + cross @ cross / (1.0 + cos)


def normalization_transform(c2w: Tensor, config: Co3dNormalization) -> Tensor:
    """[4, 4] similarity ``X' = s Q (X - centre)`` that moves the cameras c2w [N, 4, 4] (OpenCV) into
    distill3d's world frame (module docstring)."""
    c2w = c2w.to(torch.float64)
    origins, forward = c2w[:, :3, 3], c2w[:, :3, 2]
    centre = _nearest_point_to_axes(origins, forward / forward.norm(dim=-1, keepdim=True))
    Q = torch.eye(3, dtype=torch.float64)
    if config.align_up:
        up = -c2w[:, :3, 1].sum(0)
        if up.norm() > 1e-9:
            Q = _rotation_onto_z(up / up.norm())
    mean_distance = (origins - centre).norm(dim=-1).mean()
    if not mean_distance > 1e-12:
        raise UserError("a CO3D sequence's cameras all sit where their optical axes meet; it cannot be normalised")
    s = config.distance / mean_distance
    S = torch.eye(4, dtype=torch.float64)
    S[:3, :3], S[:3, 3] = s * Q, -s * (Q @ centre)
    return S


def apply_similarity(S: Tensor, c2w: Tensor) -> Tensor:
    """Cameras c2w [N, 4, 4] seen in the frame ``X' = S X`` (S [4, 4], a scaled rotation): rotations
    turned by S's rotation, centres mapped by S."""
    scale = S[:3, :3].det().abs() ** (1.0 / 3.0)
    out = c2w.clone()
    out[:, :3, :3] = (S[:3, :3] / scale) @ c2w[:, :3, :3]
    out[:, :3, 3] = c2w[:, :3, 3] @ S[:3, :3].T + S[:3, 3]
    return out
