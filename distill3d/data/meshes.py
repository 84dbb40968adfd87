"""Real meshes: load any trimesh-readable file into the world frame and ray-trace it in torch.

Loading (``load_mesh``)
-----------------------
- ``trimesh.load(path, force="scene")``; every triangle geometry of the scene graph is taken
  with its node transform applied and all are concatenated. Point clouds, paths and empty
  scenes are refused with ``MeshError`` (its message says why).
- Up axis: glTF / GLB are +Y up with their front towards +Z (glTF 2.0 spec), and OBJ is
  +Y up by common use; those are turned into the world frame (+Z up, front towards +X) by
  ``(x, y, z) -> (z, x, y)``. PLY, STL and OFF are taken as +Z up. ``up="y"`` / ``"z"``
  overrides the guess.
- Normalisation: the bounding box centre moves to the origin and the mesh is scaled so that
  its farthest vertex is ``UNIT_RADIUS`` (0.9) from it, the size of the world's objects.
- Colour: vertex or face colours; textures (glTF ``baseColorTexture`` x ``baseColorFactor``,
  OBJ ``map_Kd``) are sampled per hit point at the barycentric UV (bilinear, repeat);
  ``DEFAULT_ALBEDO`` grey where a file has none. Alpha in colours is ignored (opaque).
- Normals: per face corner, the area-weighted vertex normal where it is within
  ``SMOOTH_ANGLE_DEG`` of the face normal (curved parts look smooth), else the face normal
  (hard edges stay hard). Surfaces are two-sided: normals are turned towards the viewer.

Rendering (``render_mesh``)
---------------------------
Pure torch, any device. Moller-Trumbore ray-triangle tests, vectorised over (pixel tile x
triangle) pairs: each triangle is only tested against the ``TILE x TILE`` tiles that its
projected bounding box covers (the bounding-box cull), in chunks of ``CHUNK_TESTS`` tests.
Shading is the world's: ``albedo * (AMBIENT + (1 - AMBIENT) * max(0, n . LIGHT_DIRECTION))``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh

from distill3d.cameras import Cameras
from distill3d.render_output import RenderOutput
from distill3d.world.reference_render import AMBIENT, LIGHT_DIRECTION

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".off")
Y_UP_SUFFIXES = (".glb", ".gltf", ".obj")
UP_AXES = ("auto", "y", "z")
UNIT_RADIUS = 0.9
"""Distance of a normalised mesh's farthest vertex from the origin (the world's object size)."""
DEFAULT_ALBEDO = 0.7
SMOOTH_ANGLE_DEG = 30.0
MAX_FACES = 300_000
"""Bigger meshes are decimated when trimesh can (``fast_simplification``), else rendered slowly."""
TILE = 8
CHUNK_TESTS = 1 << 21
_BARY_EPS = 1e-6


class MeshError(Exception):
    """A file that cannot be used as a mesh; the message says why."""


@dataclass
class Mesh:
    """Triangles with per-corner appearance, in the world frame.

    vertices:       [N, 3] float32
    faces:          [F, 3] int64 vertex indices
    corner_colors:  [F, 3, 3] albedo in [0, 1] at each face corner (multiplies the texture)
    corner_normals: [F, 3, 3] unit shading normals at each face corner
    corner_uvs:     [F, 3, 2] texture coordinates (OpenGL: v up), or None without textures
    face_texture:   [F] index into ``textures``, -1 for untextured faces
    textures:       list of [Ht, Wt, 3] uint8 images
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    corner_colors: torch.Tensor
    corner_normals: torch.Tensor
    corner_uvs: torch.Tensor | None
    face_texture: torch.Tensor
    textures: list[torch.Tensor]

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


# ---------------------------------------------------------------------- files
def find_mesh_files(root: Path) -> list[Path]:
    """Every mesh file under ``root`` (recursive, by suffix, case-insensitive), sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)


def _up_axis(path: Path, up: str) -> str:
    if up not in UP_AXES:
        raise ValueError(f"up must be one of {', '.join(UP_AXES)}, got {up!r}")
    if up != "auto":
        return up
    return "y" if path.suffix.lower() in Y_UP_SUFFIXES else "z"


# ---------------------------------------------------------------------- loading
@dataclass
class _Part:
    vertices: np.ndarray  # [N, 3]
    faces: np.ndarray  # [F, 3]
    corner_colors: np.ndarray  # [F, 3, 3]
    corner_uvs: np.ndarray | None  # [F, 3, 2]
    texture: np.ndarray | None  # [Ht, Wt, 3] uint8


def _rgb(color) -> np.ndarray:
    return np.asarray(color, dtype=np.float64).reshape(-1)[:3] / 255.0


def _material_colour_and_texture(material) -> tuple[np.ndarray, np.ndarray | None]:
    """Albedo factor [3] and texture image (uint8 [H, W, 3] or None) of a trimesh material."""
    image, factor = None, None
    if isinstance(material, trimesh.visual.material.PBRMaterial):
        image, factor = material.baseColorTexture, material.baseColorFactor
    elif isinstance(material, trimesh.visual.material.SimpleMaterial):
        image = material.image
        factor = None if image is not None else material.diffuse  # map_Kd as written, as most viewers show it
    colour = _rgb(factor) if factor is not None else np.ones(3)
    if image is not None:
        image = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return colour, image


def _part_of(geometry: trimesh.Trimesh, transform: np.ndarray) -> _Part:
    vertices = np.asarray(geometry.vertices, dtype=np.float64)
    faces = np.asarray(geometry.faces, dtype=np.int64)
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshError(f"face indices outside 0..{len(vertices) - 1}")
    vertices = vertices @ transform[:3, :3].T + transform[:3, 3]
    visual = geometry.visual
    colors = np.full((len(faces), 3, 3), DEFAULT_ALBEDO)
    uvs, texture = None, None
    if visual.kind == "vertex":
        colors = (np.asarray(visual.vertex_colors)[:, :3] / 255.0)[faces]
    elif visual.kind == "face":
        colors = np.repeat((np.asarray(visual.face_colors)[:, :3] / 255.0)[:, None], 3, axis=1)
    elif visual.kind == "texture":
        factor, texture = _material_colour_and_texture(getattr(visual, "material", None))
        colors = np.broadcast_to(factor, (len(faces), 3, 3)).copy()
        uv = getattr(visual, "uv", None)
        if texture is not None and uv is not None and len(uv) == len(vertices):
            uvs = np.asarray(uv, dtype=np.float64)[faces]
        else:
            texture = None
    return _Part(vertices, faces, colors, uvs, texture)


def _scene_parts(path: Path) -> list[_Part]:
    try:
        scene = trimesh.load(str(path), force="scene")
    except Exception as err:  # trimesh raises many types for broken files
        raise MeshError(f"cannot read: {type(err).__name__}: {err}") from err
    parts, other = [], set()
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry[name]
        if not isinstance(geometry, trimesh.Trimesh):
            other.add(type(geometry).__name__)
            continue
        if len(geometry.faces) > 0:
            parts.append(_part_of(geometry, np.asarray(transform, dtype=np.float64)))
    if not parts:
        holds = f"holds only {', '.join(sorted(other))}" if other else "empty scene"
        raise MeshError(f"no triangles ({holds})")
    return parts


def _decimate(vertices: np.ndarray, faces: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        small = trimesh.Trimesh(vertices, faces, process=False).simplify_quadric_decimation(face_count=MAX_FACES)
    except Exception:  # needs the optional fast_simplification package
        warnings.warn(f"{path}: {len(faces)} faces (> {MAX_FACES}); install fast_simplification to decimate; "
                      "rendering it as it is (slow)", stacklevel=3)
        return None
    return np.asarray(small.vertices), np.asarray(small.faces)


def corner_normals(vertices: torch.Tensor, faces: torch.Tensor,
                   smooth_angle_deg: float = SMOOTH_ANGLE_DEG) -> torch.Tensor:
    """[F, 3, 3] shading normals: vertex normals where within ``smooth_angle_deg`` of the face normal."""
    v0, v1, v2 = vertices[faces].unbind(1)
    scaled = torch.cross(v1 - v0, v2 - v0, dim=-1)  # [F, 3], length = 2 * area
    face_n = scaled / scaled.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    vertex_n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), scaled.repeat_interleave(3, dim=0))
    vertex_n = vertex_n / vertex_n.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    corner_n = vertex_n[faces]  # [F, 3, 3]
    smooth = (corner_n * face_n[:, None]).sum(-1, keepdim=True) > math.cos(math.radians(smooth_angle_deg))
    return torch.where(smooth, corner_n, face_n[:, None].expand_as(corner_n))


def load_mesh(path: Path, *, up: str = "auto") -> Mesh:
    """Load, concatenate, turn into the world frame and normalise one mesh file (see module doc).

    Raises ``MeshError`` with the reason when the file cannot be used.
    """
    path = Path(path)
    parts = _scene_parts(path)
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    colors = np.concatenate([p.corner_colors for p in parts])
    textures = [p.texture for p in parts if p.texture is not None]
    face_texture = np.concatenate([np.full(len(p.faces), -1 if p.texture is None else i)
                                   for p, i in zip(parts, np.cumsum([p.texture is not None for p in parts]) - 1)])
    uvs = None
    if textures:
        uvs = np.concatenate([p.corner_uvs if p.corner_uvs is not None else np.zeros((len(p.faces), 3, 2))
                              for p in parts])
    if not np.isfinite(vertices).all():
        raise MeshError("vertices are not finite (NaN or inf)")
    if len(faces) > MAX_FACES and textures:
        warnings.warn(f"{path}: {len(faces)} textured faces (> {MAX_FACES}); rendering it as it is (slow)",
                      stacklevel=2)
    elif len(faces) > MAX_FACES:
        small = _decimate(vertices, faces, path)
        if small is not None:  # decimation drops per-corner colours: keep the mean colour
            vertices, faces = small
            colors = np.broadcast_to(colors.reshape(-1, 3).mean(0), (len(faces), 3, 3)).copy()
            face_texture = np.full(len(faces), -1)
    if _up_axis(path, up) == "y":
        vertices = vertices[:, [2, 0, 1]]
    used = vertices[np.unique(faces)]
    lo, hi = used.min(0), used.max(0)
    centre = 0.5 * (lo + hi)
    radius = np.linalg.norm(used - centre, axis=1).max()
    if not radius > 1e-12:
        raise MeshError("all vertices coincide (zero size)")
    vertices = (vertices - centre) * (UNIT_RADIUS / radius)
    v = torch.from_numpy(vertices).float()
    f = torch.from_numpy(faces).long()
    return Mesh(
        vertices=v, faces=f,
        corner_colors=torch.from_numpy(colors).float().clamp(0, 1),
        corner_normals=corner_normals(v.double(), f).float(),
        corner_uvs=None if uvs is None else torch.from_numpy(uvs).float(),
        face_texture=torch.from_numpy(face_texture).long(),
        textures=[torch.from_numpy(t.copy()) for t in textures],
    )


# ---------------------------------------------------------------------- ray casting
def _tile_pairs(uv: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, width: int, height: int,
                near: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(face, tile x, tile y) [P] for every tile that a face's projected bounding box covers.

    uv: [N, 2] projected vertices in pixels, z: [N] their z-depth. Faces crossing the camera
    plane are given every tile (their projection is unbounded); faces behind it none.
    """
    tri_uv, tri_z = uv[faces], z[faces]  # [F, 3, 2], [F, 3]
    in_front = tri_z > near
    all_front, any_front = in_front.all(-1), in_front.any(-1)
    size = torch.tensor([width, height], dtype=uv.dtype, device=uv.device)
    lo = torch.where(all_front[:, None], tri_uv.amin(1), torch.zeros_like(size))
    hi = torch.where(all_front[:, None], tri_uv.amax(1), size)
    keep = any_front & (hi >= 0).all(-1) & (lo < size).all(-1)
    n_tiles = torch.tensor([math.ceil(width / TILE) - 1, math.ceil(height / TILE) - 1], device=uv.device)
    t0 = torch.minimum(torch.floor(lo[keep] / TILE).clamp_min(0).long(), n_tiles)
    t1 = torch.minimum(torch.floor(hi[keep] / TILE).clamp_min(0).long(), n_tiles)
    span = t1 - t0 + 1  # [K, 2]
    counts = span[:, 0] * span[:, 1]
    owner = torch.repeat_interleave(torch.arange(len(counts), device=uv.device), counts)
    offset = torch.arange(len(owner), device=uv.device) - (torch.cumsum(counts, 0) - counts)[owner]
    face = keep.nonzero().squeeze(1)[owner]
    tx = t0[owner, 0] + offset % span[owner, 0]
    ty = t0[owner, 1] + offset // span[owner, 0]
    return face, tx, ty


def _moller_trumbore(origin: torch.Tensor, dirs: torch.Tensor, v0: torch.Tensor, v1: torch.Tensor,
                     v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ray-triangle intersection. origin [P, 3] or [3], dirs [P, R, 3], triangle corners [P, 3].

    Returns (t, u, v, hit), each [P, R]: ray distance, barycentrics of v1 and v2, and whether
    the ray meets the triangle (both sides count) in front of its origin.
    """
    e1, e2 = v1 - v0, v2 - v0
    tvec = origin - v0
    qvec = torch.cross(tvec, e1, dim=-1)  # [P, 3]
    pvec = torch.cross(dirs, e2[:, None].expand_as(dirs), dim=-1)  # [P, R, 3]
    det = (pvec * e1[:, None]).sum(-1)
    ok = det.abs() > 1e-12
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    u = (pvec * tvec[:, None]).sum(-1) * inv
    v = (dirs * qvec[:, None]).sum(-1) * inv
    t = (e2 * qvec).sum(-1, keepdim=True) * inv
    hit = ok & (u >= -_BARY_EPS) & (v >= -_BARY_EPS) & (u + v <= 1.0 + _BARY_EPS)
    return t, u, v, hit


def nearest_hits(mesh: Mesh, cameras: Cameras, supersample: int = 1,
                 near: float = 1e-4) -> tuple[torch.Tensor, ...]:
    """The first triangle on every (sub-)pixel ray.

    Returns face [B, H, W] (-1 where nothing is hit), ray distance t, barycentrics u, v
    ([B, H, W] each) and the unit ray directions [B, H, W, 3]; H, W are the supersampled size.
    """
    s = int(supersample)
    H, W = cameras.height * s, cameras.width * s
    _, dirs = cameras.rays(s)
    dev = cameras.device
    verts = mesh.vertices.to(dev, cameras.c2w.dtype)
    faces = mesh.faces.to(dev)
    uv, z = cameras.project(verts[None].expand(len(cameras), -1, -1))
    tile = torch.arange(TILE * TILE, device=dev)
    dx, dy = tile % TILE, tile // TILE
    face_map = torch.full((len(cameras), H * W), -1, dtype=torch.long, device=dev)
    for b in range(len(cameras)):
        face, tx, ty = _tile_pairs(uv[b] * s, z[b], faces, W, H, near)
        origin = cameras.centers[b]
        rays = dirs[b].reshape(-1, 3)
        best_t = torch.full((H * W,), math.inf, dtype=verts.dtype, device=dev)
        hits_pid, hits_face, hits_t = [], [], []
        step = max(1, CHUNK_TESTS // (TILE * TILE))
        for lo in range(0, len(face), step):
            f = face[lo:lo + step]
            px = tx[lo:lo + step, None] * TILE + dx
            py = ty[lo:lo + step, None] * TILE + dy
            inside = (px < W) & (py < H)
            pid = py.clamp(max=H - 1) * W + px.clamp(max=W - 1)  # [P, TILE * TILE]
            tri = verts[faces[f]]  # [P, 3, 3]
            t, _, _, hit = _moller_trumbore(origin, rays[pid], tri[:, 0], tri[:, 1], tri[:, 2])
            hit = hit & inside & (t > near)
            p_hit, t_hit = pid[hit], t[hit]
            best_t.scatter_reduce_(0, p_hit, t_hit, "amin")
            hits_pid.append(p_hit)
            hits_face.append(f[:, None].expand_as(pid)[hit])
            hits_t.append(t_hit)
        if hits_pid:
            p_all, f_all, t_all = torch.cat(hits_pid), torch.cat(hits_face), torch.cat(hits_t)
            nearest = t_all == best_t[p_all]
            face_map[b].scatter_reduce_(0, p_all[nearest], f_all[nearest], "amax")
    face_map = face_map.reshape(len(cameras), H, W)
    # barycentrics of the winning triangle, recomputed per pixel
    t_map = torch.zeros(face_map.shape, dtype=verts.dtype, device=dev)
    u_map, v_map = torch.zeros_like(t_map), torch.zeros_like(t_map)
    hit = face_map >= 0
    if hit.any():
        tri = verts[faces[face_map[hit]]]
        origin = cameras.centers[:, None, None, :].expand(-1, H, W, -1)[hit]
        t, u, v, _ = _moller_trumbore(origin, dirs[hit][:, None], tri[:, 0], tri[:, 1], tri[:, 2])
        t_map[hit], u_map[hit], v_map[hit] = t[:, 0], u[:, 0], v[:, 0]
    return face_map, t_map, u_map, v_map, dirs


# ---------------------------------------------------------------------- shading
def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear, repeating lookup of a [Ht, Wt, 3] uint8 texture at uv [N, 2] (v up) -> [N, 3] in [0, 1]."""
    h, w = texture.shape[:2]
    x = uv[:, 0] * w - 0.5
    y = (1.0 - uv[:, 1]) * h - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    tex = texture.to(uv.device).float() / 255.0

    def at(xi, yi):
        return tex[yi.remainder(h), xi.remainder(w)]

    top = at(x0, y0) * (1 - fx) + at(x0 + 1, y0) * fx
    bottom = at(x0, y0 + 1) * (1 - fx) + at(x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def _albedo(mesh: Mesh, face: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[N, 3] albedo at hit points on faces [N] with barycentric weights [N, 3]."""
    dev = face.device
    albedo = (mesh.corner_colors.to(dev)[face] * weights[..., None]).sum(1)
    if mesh.textures:
        tex_index = mesh.face_texture.to(dev)[face]
        uv = (mesh.corner_uvs.to(dev)[face] * weights[..., None]).sum(1)
        for i, texture in enumerate(mesh.textures):
            sel = tex_index == i
            if sel.any():
                albedo[sel] = albedo[sel] * sample_texture(texture, uv[sel])
    return albedo


def _downsample(x: torch.Tensor, s: int) -> torch.Tensor:
    """[B, H*s, W*s, C] -> [B, H, W, C] by averaging s x s blocks."""
    B, H, W, C = x.shape
    return x.reshape(B, H // s, s, W // s, s, C).mean(dim=(2, 4))


def render_mesh(mesh: Mesh, cameras: Cameras, *, supersample: int = 2, background: float = 1.0) -> RenderOutput:
    """Render a mesh: rgb [B, H, W, 3] over ``background``, alpha, z-depth [B, H, W, 1], normals.

    Each pixel averages ``supersample x supersample`` sub-pixel rays; depth and normal are
    averaged over the sub-pixels that hit.
    """
    s = int(supersample)
    face, t, u, v, dirs = nearest_hits(mesh, cameras, s)
    hit = face >= 0
    dev, dt = dirs.device, dirs.dtype
    B, H, W = face.shape
    colour = torch.zeros(B, H, W, 3, dtype=dt, device=dev)
    normal = torch.zeros(B, H, W, 3, dtype=dt, device=dev)
    depth = torch.zeros(B, H, W, 1, dtype=dt, device=dev)
    if hit.any():
        f = face[hit]
        weights = torch.stack([1.0 - u[hit] - v[hit], u[hit], v[hit]], dim=-1)  # [N, 3]
        n = (mesh.corner_normals.to(dev, dt)[f] * weights[..., None]).sum(1)
        n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        verts = mesh.vertices.to(dev, dt)[mesh.faces.to(dev)[f]]
        geometric = torch.cross(verts[:, 1] - verts[:, 0], verts[:, 2] - verts[:, 0], dim=-1)
        d = dirs[hit]
        n = torch.where(((geometric * d).sum(-1, keepdim=True) > 0), -n, n)  # two-sided: face the viewer
        light = torch.tensor(LIGHT_DIRECTION, dtype=dt, device=dev)
        shade = AMBIENT + (1.0 - AMBIENT) * (n @ light).clamp_min(0.0)[:, None]
        colour[hit] = _albedo(mesh, f, weights).to(dt) * shade
        normal[hit] = n
        forward = cameras.forward[:, None, None, :].expand(-1, H, W, -1)[hit]
        depth[hit] = (t[hit] * (d * forward).sum(-1))[:, None]
    cover = hit[..., None].to(dt)
    alpha = _downsample(cover, s)
    hits = alpha.clamp_min(1e-12)
    rgb = _downsample(colour, s) + background * (1.0 - alpha)
    depth = torch.where(alpha > 0, _downsample(depth, s) / hits, torch.zeros_like(alpha))
    normal = _downsample(normal, s)
    normal = normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return RenderOutput(rgb=rgb.clamp(0, 1), alpha=alpha, depth=depth, normal=normal)
