"""Geometry and appearance of the world's objects: signed distance functions and albedo fields.

All objects sit centred at the origin in the world frame of ``distill3d.cameras`` (+Z up,
front facing +X) and fit inside a sphere of radius ``OBJECT_RADIUS``. Every SDF is an exact
Euclidean distance (sphere, rounded cube, torus, cylinder, cone, capsule) or, for the mug and
the house, a union / subtraction of exact ones, which is still a lower bound of the distance
with |gradient| <= 1 (what sphere tracing needs). The torus lies flat (axis along Z).

Patterns live in object space, so every view sees the same surface colours:

- striped: the secondary colour on bands ``frac(z / STRIPE_PERIOD)`` in
  ``STRIPE_SECONDARY_BAND`` (horizontal bands, 0.1 thick every 0.25);
- checkered: 3D cells of side ``CHECKER_CELL`` with corners on the grid ``CHECKER_CELL * Z^3``;
  the secondary colour where ``floor(x/c) + floor(y/c) + floor(z/c)`` is odd;
- two-tone: the colour for z >= 0, the secondary colour for z < 0.

No flat face of any shape lies on a pattern boundary, so faces never flicker between colours.
The house's door has a third colour, the secondary colour of the secondary colour (``door_colour``),
so that it stands out under every pattern.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from distill3d.world.prompts import WorldObject
from distill3d.world.vocabulary import COLOURS, SECONDARY_COLOURS

OBJECT_RADIUS = 0.9
"""Every object lies inside the sphere of this radius about the origin (renderer bound)."""

# ---------------------------------------------------------------------- sizes (world units)
SPHERE_RADIUS = 0.62
CUBE_HALF_SIZE = 0.45
CUBE_ROUNDING = 0.06
TORUS_MAJOR_RADIUS = 0.5
TORUS_MINOR_RADIUS = 0.22
CYLINDER_RADIUS = 0.38
CYLINDER_HALF_HEIGHT = 0.55
CONE_BASE_RADIUS = 0.5
CONE_BASE_Z = -0.45
CONE_APEX_Z = 0.62
CAPSULE_RADIUS = 0.34
CAPSULE_HALF_LENGTH = 0.33  # half the length of the axis segment; total height 1.34
MUG_RADIUS = 0.4
MUG_HALF_HEIGHT = 0.43
MUG_WALL = 0.06
MUG_BOTTOM = 0.08
MUG_HANDLE_RADIUS = 0.2  # handle: half a torus in the YZ plane centred on the +Y wall
MUG_HANDLE_THICKNESS = 0.055
HOUSE_WALLS_MIN = (-0.4, -0.5, -0.45)
HOUSE_WALLS_MAX = (0.4, 0.5, 0.1)
HOUSE_ROOF_HALF_WIDTH = 0.5  # along X (eaves overhang the walls)
HOUSE_ROOF_HALF_LENGTH = 0.56  # along Y, the ridge direction
HOUSE_ROOF_APEX_Z = 0.58
HOUSE_DOOR_MIN = (0.395, -0.12, -0.45)  # on the front (+X) wall, standing out by 0.035
HOUSE_DOOR_MAX = (0.435, 0.12, -0.05)

# ---------------------------------------------------------------------- patterns
STRIPE_PERIOD = 0.25
STRIPE_SECONDARY_BAND = (0.3, 0.7)
CHECKER_CELL = 0.3


# ---------------------------------------------------------------------- primitives
def _radial(points: torch.Tensor) -> torch.Tensor:
    """Distance to the Z axis, [...]."""
    return torch.sqrt(points[..., 0] ** 2 + points[..., 1] ** 2)


def _extrude(d2: torch.Tensor, half_length: torch.Tensor) -> torch.Tensor:
    """Exact SDF of a 2D region (distance d2) extruded over |axis| <= half length (excess given)."""
    w = torch.stack([d2, half_length], dim=-1)
    return w.amax(dim=-1).clamp_max(0.0) + w.clamp_min(0.0).norm(dim=-1)


def sphere_sdf(points: torch.Tensor, radius: float) -> torch.Tensor:
    """[..., 3] -> [...] exact SDF of a sphere at the origin."""
    return points.norm(dim=-1) - radius


def box_sdf(points: torch.Tensor, low, high, rounding: float = 0.0) -> torch.Tensor:
    """[..., 3] -> [...] exact SDF of the axis-aligned box [low, high] with rounded edges."""
    low = torch.as_tensor(low, dtype=points.dtype, device=points.device)
    high = torch.as_tensor(high, dtype=points.dtype, device=points.device)
    q = (points - 0.5 * (low + high)).abs() - (0.5 * (high - low) - rounding)
    return q.clamp_min(0.0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0.0) - rounding


def torus_sdf(points: torch.Tensor, major: float, minor: float) -> torch.Tensor:
    """[..., 3] -> [...] exact SDF of a torus around the Z axis."""
    q = torch.stack([_radial(points) - major, points[..., 2]], dim=-1)
    return q.norm(dim=-1) - minor


def cylinder_sdf(points: torch.Tensor, radius: float, z_low: float, z_high: float) -> torch.Tensor:
    """[..., 3] -> [...] exact SDF of a capped cylinder around the Z axis."""
    half = 0.5 * (z_high - z_low)
    dz = (points[..., 2] - 0.5 * (z_low + z_high)).abs() - half
    return _extrude(_radial(points) - radius, dz)


def capsule_sdf(points: torch.Tensor, radius: float, half_length: float) -> torch.Tensor:
    """[..., 3] -> [...] exact SDF of a capsule around the Z axis segment |z| <= half_length."""
    axis_point = torch.zeros_like(points)
    axis_point[..., 2] = points[..., 2].clamp(-half_length, half_length)
    return (points - axis_point).norm(dim=-1) - radius


def _segment_distance_2d(a: torch.Tensor, z: torch.Tensor, start, end) -> torch.Tensor:
    """Distance of 2D points (a, z) [...] to the segment start-end."""
    (a0, z0), (a1, z1) = start, end
    da, dz = a1 - a0, z1 - z0
    h = (((a - a0) * da + (z - z0) * dz) / (da * da + dz * dz)).clamp(0.0, 1.0)
    return torch.sqrt((a - a0 - h * da) ** 2 + (z - z0 - h * dz) ** 2)


def triangle_sdf_2d(a: torch.Tensor, z: torch.Tensor, half_base: float, z_base: float,
                    z_apex: float) -> torch.Tensor:
    """Exact 2D SDF [...] of the isosceles triangle with base |a| <= half_base at z_base and
    apex (0, z_apex), for points given by |a| [...] (a >= 0) and z [...]."""
    base = _segment_distance_2d(a, z, (0.0, z_base), (half_base, z_base))
    slant = _segment_distance_2d(a, z, (half_base, z_base), (0.0, z_apex))
    inside = (z > z_base) & (a / half_base + (z - z_base) / (z_apex - z_base) < 1.0)
    return torch.where(inside, -1.0, 1.0) * torch.minimum(base, slant)


def cone_sdf(points: torch.Tensor, base_radius: float, z_base: float, z_apex: float) -> torch.Tensor:
    """[..., 3] -> [...] exact SDF of a solid cone around the Z axis (base below the apex)."""
    return triangle_sdf_2d(_radial(points), points[..., 2], base_radius, z_base, z_apex)


# ---------------------------------------------------------------------- the shapes
def sphere(points: torch.Tensor) -> torch.Tensor:
    return sphere_sdf(points, SPHERE_RADIUS)


def cube(points: torch.Tensor) -> torch.Tensor:
    h = CUBE_HALF_SIZE
    return box_sdf(points, (-h, -h, -h), (h, h, h), CUBE_ROUNDING)


def torus(points: torch.Tensor) -> torch.Tensor:
    return torus_sdf(points, TORUS_MAJOR_RADIUS, TORUS_MINOR_RADIUS)


def cylinder(points: torch.Tensor) -> torch.Tensor:
    return cylinder_sdf(points, CYLINDER_RADIUS, -CYLINDER_HALF_HEIGHT, CYLINDER_HALF_HEIGHT)


def cone(points: torch.Tensor) -> torch.Tensor:
    return cone_sdf(points, CONE_BASE_RADIUS, CONE_BASE_Z, CONE_APEX_Z)


def capsule(points: torch.Tensor) -> torch.Tensor:
    return capsule_sdf(points, CAPSULE_RADIUS, CAPSULE_HALF_LENGTH)


def mug(points: torch.Tensor) -> torch.Tensor:
    """A cup open at the top (outer cylinder minus inner) with a handle on its +Y side."""
    h = MUG_HALF_HEIGHT
    outer = cylinder_sdf(points, MUG_RADIUS, -h, h)
    inner = cylinder_sdf(points, MUG_RADIUS - MUG_WALL, -h + MUG_BOTTOM, h + 1.0)
    body = torch.maximum(outer, -inner)
    y_off = points[..., 1] - MUG_RADIUS
    ring = torch.stack([torch.sqrt(y_off ** 2 + points[..., 2] ** 2) - MUG_HANDLE_RADIUS, points[..., 0]], dim=-1)
    handle = ring.norm(dim=-1) - MUG_HANDLE_THICKNESS
    handle = torch.maximum(handle, -(y_off + 0.5 * MUG_WALL))  # keep the half outside the wall
    return torch.minimum(body, handle)


def _house_parts(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(walls and roof, door) SDFs [...] of the house."""
    walls = box_sdf(points, HOUSE_WALLS_MIN, HOUSE_WALLS_MAX)
    roof_2d = triangle_sdf_2d(points[..., 0].abs(), points[..., 2], HOUSE_ROOF_HALF_WIDTH,
                              HOUSE_WALLS_MAX[2], HOUSE_ROOF_APEX_Z)
    roof = _extrude(roof_2d, points[..., 1].abs() - HOUSE_ROOF_HALF_LENGTH)
    door = box_sdf(points, HOUSE_DOOR_MIN, HOUSE_DOOR_MAX)
    return torch.minimum(walls, roof), door


def house(points: torch.Tensor) -> torch.Tensor:
    """Walls, a gable roof with its ridge along Y, and a door standing out of the +X wall."""
    body, door = _house_parts(points)
    return torch.minimum(body, door)


SHAPE_SDFS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sphere": sphere, "cube": cube, "torus": torus, "cylinder": cylinder,
    "cone": cone, "capsule": capsule, "mug": mug, "house": house,
}
"""Shape word -> SDF ``[..., 3] -> [...]``."""

_HOUSE_CORNERS = (
    (HOUSE_WALLS_MAX[0], HOUSE_WALLS_MAX[1], HOUSE_WALLS_MIN[2]),
    (HOUSE_ROOF_HALF_WIDTH, HOUSE_ROOF_HALF_LENGTH, HOUSE_WALLS_MAX[2]),
    (0.0, HOUSE_ROOF_HALF_LENGTH, HOUSE_ROOF_APEX_Z),
    (HOUSE_DOOR_MAX[0], HOUSE_DOOR_MAX[1], HOUSE_DOOR_MIN[2]),
)
BOUNDING_RADII: dict[str, float] = {
    "sphere": SPHERE_RADIUS,
    "cube": 3 ** 0.5 * (CUBE_HALF_SIZE - CUBE_ROUNDING) + CUBE_ROUNDING,
    "torus": TORUS_MAJOR_RADIUS + TORUS_MINOR_RADIUS,
    "cylinder": math.hypot(CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT),
    "cone": max(math.hypot(CONE_BASE_RADIUS, CONE_BASE_Z), abs(CONE_APEX_Z)),
    "capsule": CAPSULE_HALF_LENGTH + CAPSULE_RADIUS,
    "mug": max(math.hypot(MUG_RADIUS, MUG_HALF_HEIGHT),
               MUG_RADIUS + MUG_HANDLE_RADIUS + MUG_HANDLE_THICKNESS),
    "house": max(math.sqrt(sum(c * c for c in corner)) for corner in _HOUSE_CORNERS),
}
"""Shape word -> radius of the smallest origin-centred sphere holding it (<= OBJECT_RADIUS)."""


def object_sdf(obj: WorldObject, points: torch.Tensor) -> torch.Tensor:
    """Signed distance [...] of world points [..., 3] to ``obj`` (negative inside)."""
    return SHAPE_SDFS[obj.shape](points)


# ---------------------------------------------------------------------- appearance
def door_colour(colour: str) -> str:
    """The house door's colour word: the secondary colour of the secondary colour."""
    return SECONDARY_COLOURS[SECONDARY_COLOURS[colour]]


def pattern_mask(pattern: str, points: torch.Tensor) -> torch.Tensor:
    """[..., 3] -> [...] bool, True where ``pattern`` shows the secondary colour."""
    if pattern == "plain":
        return torch.zeros(points.shape[:-1], dtype=torch.bool, device=points.device)
    if pattern == "striped":
        phase = torch.remainder(points[..., 2] / STRIPE_PERIOD, 1.0)
        lo, hi = STRIPE_SECONDARY_BAND
        return (phase >= lo) & (phase < hi)
    if pattern == "checkered":
        cells = torch.floor(points / CHECKER_CELL).to(torch.long).sum(dim=-1)
        return torch.remainder(cells, 2) == 1
    if pattern == "two-tone":
        return points[..., 2] < 0.0
    raise ValueError(f"unknown pattern {pattern!r}")


def _rgb(colour: str, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(COLOURS[colour], dtype=like.dtype, device=like.device)


def object_albedo(obj: WorldObject, points: torch.Tensor) -> torch.Tensor:
    """Albedo [..., 3] in [0, 1] of ``obj`` at surface points [..., 3]."""
    mask = pattern_mask(obj.pattern, points)[..., None]
    albedo = torch.where(mask, _rgb(SECONDARY_COLOURS[obj.colour], points), _rgb(obj.colour, points))
    if obj.shape == "house":
        body, door = _house_parts(points)
        albedo = torch.where((door <= body)[..., None], _rgb(door_colour(obj.colour), points), albedo)
    return albedo
