"""Cameras: poses, intrinsics, rays and Pluecker embeddings for batches of pinhole cameras.

The world frame (used by every part of distill3d)
-------------------------------------------------
- Right-handed, **+Z is up**, units are world units (objects fit in a sphere of radius ~1
  centred at the origin).
- Objects face **+X**: azimuth 0 looks at an object's front. Azimuth is measured in degrees
  counter-clockwise about +Z starting from +X (azimuth 90 is the +Y side, the object's left
  when you face it); elevation is degrees above the XY plane (90 = looking straight down).
- The fixed world light (``distill3d.world``) is also given in this frame.

Camera convention
-----------------
``Cameras.c2w`` is a camera-to-world 4x4 in the **OpenCV** convention: camera +X right,
+Y down, +Z forward (the viewing direction). ``Cameras.K`` holds pixel intrinsics
``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; pixel ``(u, v)`` has its centre at
``(u + 0.5, v + 0.5)``, u along the width. ``opencv_to_opengl`` / ``opengl_to_opencv`` convert
poses to and from the OpenGL/NeRF/Blender convention (+Y up, looking along -Z), and
``Cameras.viewmats`` is the world-to-camera matrix that gsplat's ``rasterization`` takes.

Depth, wherever distill3d returns it, is the **z-depth** in the OpenCV camera frame (distance
along the optical axis), not the distance along the ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

__all__ = [
    "Cameras",
    "look_at",
    "orbit_cameras",
    "sample_orbit_cameras",
    "intrinsics_from_fovy",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "plucker_embedding",
    "spherical_to_position",
    "position_to_spherical",
    "WORLD_UP",
]

WORLD_UP = (0.0, 0.0, 1.0)
_CV_GL_FLIP = (1.0, -1.0, -1.0, 1.0)


@dataclass
class Cameras:
    """A batch of B pinhole cameras that share one image size.

    c2w: [B, 4, 4] camera-to-world, OpenCV convention (x right, y down, z forward).
    K:   [B, 3, 3] intrinsics in pixels.
    width, height: image size in pixels.
    """

    c2w: torch.Tensor
    K: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.ndim != 3 or self.c2w.shape[-2:] != (4, 4):
            raise ValueError(f"c2w must be [B, 4, 4], got {tuple(self.c2w.shape)}")
        if self.K.ndim != 3 or self.K.shape[-2:] != (3, 3) or self.K.shape[0] != self.c2w.shape[0]:
            raise ValueError(f"K must be [B, 3, 3] matching c2w, got {tuple(self.K.shape)}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Cameras(self.c2w[index], self.K[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Cameras":
        return Cameras(self.c2w.to(device=device, dtype=dtype), self.K.to(device=device, dtype=dtype),
                       self.width, self.height)

    @staticmethod
    def cat(cameras: Sequence["Cameras"]) -> "Cameras":
        first = cameras[0]
        if any((c.width, c.height) != (first.width, first.height) for c in cameras):
            raise ValueError("cannot concatenate cameras of different image sizes")
        return Cameras(torch.cat([c.c2w for c in cameras]), torch.cat([c.K for c in cameras]),
                       first.width, first.height)

    @property
    def centers(self) -> torch.Tensor:
        """[B, 3] camera centres in the world."""
        return self.c2w[:, :3, 3]

    @property
    def forward(self) -> torch.Tensor:
        """[B, 3] unit viewing directions (camera +z) in the world."""
        return self.c2w[:, :3, 2]

    @property
    def viewmats(self) -> torch.Tensor:
        """[B, 4, 4] world-to-camera (OpenCV), the ``viewmats`` argument of gsplat."""
        return rigid_inverse(self.c2w)

    @property
    def fovy_deg(self) -> torch.Tensor:
        """[B] vertical field of view in degrees."""
        return torch.rad2deg(2.0 * torch.atan(0.5 * self.height / self.K[:, 1, 1]))

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras rendering an image of another size (intrinsics scaled)."""
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return Cameras(self.c2w, K, width, height)

    # ------------------------------------------------------------------ rays
    def rays(self, supersample: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """World-space rays through pixel centres.

        With ``supersample = s`` each pixel is split into s x s sub-pixels on a regular grid.
        Returns origins and unit directions, each [B, H*s, W*s, 3].
        """
        s = int(supersample)
        H, W = self.height * s, self.width * s
        dev, dt = self.c2w.device, self.c2w.dtype
        u = (torch.arange(W, device=dev, dtype=dt) + 0.5) / s
        v = (torch.arange(H, device=dev, dtype=dt) + 0.5) / s
        vv, uu = torch.meshgrid(v, u, indexing="ij")  # [H, W]
        fx, fy = self.K[:, 0, 0, None, None], self.K[:, 1, 1, None, None]
        cx, cy = self.K[:, 0, 2, None, None], self.K[:, 1, 2, None, None]
        x = (uu[None] - cx) / fx
        y = (vv[None] - cy) / fy
        d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # [B, H, W, 3]
        R = self.c2w[:, :3, :3]
        dirs = torch.einsum("bij,bhwj->bhwi", R, d_cam)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = self.centers[:, None, None, :].expand_as(dirs)
        return origins, dirs

    def plucker(self, supersample: int = 1) -> torch.Tensor:
        """[B, H, W, 6] Pluecker embedding (d, o x d) of every pixel ray."""
        origins, dirs = self.rays(supersample)
        return plucker_embedding(origins, dirs)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points [B, N, 3] to pixels.

        Returns uv [B, N, 2] in continuous pixel coordinates (pixel (i, j) spans
        [i, i+1) x [j, j+1)) and z-depth [B, N] (negative behind the camera).
        """
        w2c = self.viewmats
        p = torch.einsum("bij,bnj->bni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
        z = p[..., 2]
        uvw = torch.einsum("bij,bnj->bni", self.K, p)
        uv = uvw[..., :2] / uvw[..., 2:3]
        return uv, z

    # ------------------------------------------------------------------ serialisation
    def to_dicts(self) -> list[dict]:
        """One JSON-ready dict per camera (OpenCV c2w, intrinsics, size)."""
        out = []
        for c2w, K in zip(self.c2w.detach().cpu().double(), self.K.detach().cpu().double()):
            out.append({
                "c2w_opencv": c2w.tolist(),
                "fx": K[0, 0].item(), "fy": K[1, 1].item(), "cx": K[0, 2].item(), "cy": K[1, 2].item(),
                "width": self.width, "height": self.height,
            })
        return out

    @staticmethod
    def from_dicts(items: Sequence[dict], dtype: torch.dtype = torch.float32) -> "Cameras":
        """Inverse of ``to_dicts``."""
        if not items:
            raise ValueError("no cameras given")
        c2w = torch.tensor([it["c2w_opencv"] for it in items], dtype=dtype)
        K = torch.zeros(len(items), 3, 3, dtype=dtype)
        for i, it in enumerate(items):
            K[i] = torch.tensor([[it["fx"], 0, it["cx"]], [0, it["fy"], it["cy"]], [0, 0, 1]], dtype=dtype)
        sizes = {(it["width"], it["height"]) for it in items}
        if len(sizes) != 1:
            raise ValueError(f"cameras have different image sizes: {sorted(sizes)}")
        (w, h), = sizes
        return Cameras(c2w, K, int(w), int(h))


# ---------------------------------------------------------------------- construction
def rigid_inverse(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms [..., 4, 4]."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    out = torch.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3:] = -Rt @ t
    out[..., 3, 3] = 1.0
    return out


def look_at(eye: torch.Tensor, target: torch.Tensor, up: Sequence[float] = WORLD_UP) -> torch.Tensor:
    """OpenCV camera-to-world [B, 4, 4] for cameras at ``eye`` [B, 3] looking at ``target`` [B, 3].

    Image "up" (-y of the camera) is aligned with ``up`` as far as possible; a camera looking
    straight along ``up`` falls back to +X as its image-up reference.
    """
    eye, target = torch.broadcast_tensors(eye, target)
    up_t = torch.tensor(up, dtype=eye.dtype, device=eye.device).expand_as(eye)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x = torch.cross(z, up_t, dim=-1)
    degenerate = x.norm(dim=-1, keepdim=True) < 1e-6
    alt = torch.tensor((1.0, 0.0, 0.0), dtype=eye.dtype, device=eye.device).expand_as(eye)
    x = torch.where(degenerate, torch.cross(z, alt, dim=-1), x)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.cross(z, x, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0], c2w[..., :3, 1], c2w[..., :3, 2], c2w[..., :3, 3] = x, y, z, eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_position(elevation_deg: torch.Tensor, azimuth_deg: torch.Tensor,
                          distance: torch.Tensor) -> torch.Tensor:
    """[B] elevation, azimuth (degrees), distance -> [B, 3] positions in the world frame."""
    el, az = torch.deg2rad(elevation_deg), torch.deg2rad(azimuth_deg)
    return torch.stack([distance * torch.cos(el) * torch.cos(az),
                        distance * torch.cos(el) * torch.sin(az),
                        distance * torch.sin(el)], dim=-1)


def position_to_spherical(position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, 3] positions -> elevation (deg), azimuth (deg, in (-180, 180]), distance, each [B]."""
    distance = position.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((position[..., 2] / distance.clamp_min(1e-12)).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(position[..., 1], position[..., 0]))
    return elevation, azimuth, distance


def intrinsics_from_fovy(fovy_deg: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[B] vertical fov in degrees -> [B, 3, 3] intrinsics with square pixels, centred principal point."""
    fovy_deg = torch.as_tensor(fovy_deg, dtype=torch.float32).reshape(-1)
    fy = 0.5 * height / torch.tan(0.5 * torch.deg2rad(fovy_deg))
    K = torch.zeros(fovy_deg.shape[0], 3, 3, dtype=fovy_deg.dtype, device=fovy_deg.device)
    K[:, 0, 0], K[:, 1, 1] = fy, fy
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = 0.5 * width, 0.5 * height, 1.0
    return K


def _as_batch(x, n: int) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    return t.expand(n).clone() if t.numel() == 1 else t


def orbit_cameras(elevation_deg, azimuth_deg, distance, fovy_deg, width: int, height: int,
                  target: Sequence[float] = (0.0, 0.0, 0.0)) -> Cameras:
    """Cameras on spheres around ``target`` looking at it.

    Each of elevation_deg, azimuth_deg, distance, fovy_deg is a number or a [B] tensor/list.
    """
    sizes = [torch.as_tensor(v).numel() for v in (elevation_deg, azimuth_deg, distance, fovy_deg)]
    n = max(sizes)
    if any(s not in (1, n) for s in sizes):
        raise ValueError(f"orbit parameters have incompatible lengths {sizes}")
    el, az, dist, fov = (_as_batch(v, n) for v in (elevation_deg, azimuth_deg, distance, fovy_deg))
    tgt = torch.tensor(target, dtype=torch.float32).expand(n, 3)
    eye = spherical_to_position(el, az, dist) + tgt
    return Cameras(look_at(eye, tgt), intrinsics_from_fovy(fov, width, height), width, height)


def turned_about_up(camera: Cameras, degrees: torch.Tensor) -> Cameras:
    """One camera [1] turned about the world's up axis (+Z through the origin) by each angle [T] -> [T].

    For an orbit camera this adds the angle to its azimuth (``orbit_cameras``).
    """
    if len(camera) != 1:
        raise ValueError(f"turned_about_up takes one camera, got {len(camera)}")
    a = torch.as_tensor(degrees).to(camera.c2w).reshape(-1) * (math.pi / 180.0)
    turn = torch.eye(4, dtype=camera.c2w.dtype, device=camera.c2w.device).repeat(len(a), 1, 1)
    turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return Cameras(turn @ camera.c2w, camera.K.expand(len(a), 3, 3), camera.width, camera.height)


def sample_orbit_cameras(n: int, width: int, height: int, *,
                         elevation_range: tuple[float, float] = (-10.0, 45.0),
                         azimuth_range: tuple[float, float] = (-180.0, 180.0),
                         distance_range: tuple[float, float] = (1.5, 2.0),
                         fovy_range: tuple[float, float] = (30.0, 45.0),
                         generator: torch.Generator | None = None,
                         uniform_sphere: bool = False) -> tuple[Cameras, dict[str, torch.Tensor]]:
    """n random orbit cameras with each parameter uniform in its range.

    With ``uniform_sphere`` the directions are uniform on the sphere band (elevation sampled
    by its sine) instead of uniform in elevation angle. Returns the cameras and the sampled
    parameters (keys elevation, azimuth, distance, fovy; degrees).
    """
    def uni(lo_hi):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(n, generator=generator)
    if uniform_sphere:
        s = uni(tuple(math.sin(math.radians(e)) for e in elevation_range))
        el = torch.rad2deg(torch.asin(s))
    else:
        el = uni(elevation_range)
    az, dist, fov = uni(azimuth_range), uni(distance_range), uni(fovy_range)
    cams = orbit_cameras(el, az, dist, fov, width, height)
    return cams, {"elevation": el, "azimuth": az, "distance": dist, "fovy": fov}


# ---------------------------------------------------------------------- conventions
def opencv_to_opengl(c2w: torch.Tensor) -> torch.Tensor:
    """Camera-to-world [..., 4, 4] from OpenCV (y down, z forward) to OpenGL (y up, -z forward)."""
    return c2w * torch.tensor(_CV_GL_FLIP, dtype=c2w.dtype, device=c2w.device)


def opengl_to_opencv(c2w: torch.Tensor) -> torch.Tensor:
    """Inverse of ``opencv_to_opengl`` (the flip is its own inverse)."""
    return opencv_to_opengl(c2w)


def plucker_embedding(origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Pluecker coordinates [..., 6] = (d, o x d) of rays with origins and directions [..., 3].

    Directions are normalised first, so the moment o x d is the same for any point o on
    the line and for any positive scaling of d. Computed in the wider of the two dtypes (under
    autocast, rays from a matmul come in bf16 while origins stay float32).
    """
    dtype = torch.promote_types(origins.dtype, dirs.dtype)
    origins, dirs = origins.to(dtype), dirs.to(dtype)
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.cat([d, torch.cross(origins, d, dim=-1)], dim=-1)
