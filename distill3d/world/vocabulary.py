"""The words of the world: shapes, colours and patterns that a prompt combines.

Every object is ``"a <colour> <pattern> <shape>"``. Appending to these tuples keeps every
existing prompt valid (held-out membership depends on the prompt alone, see ``split``), but
changes ``WorldObject.index`` of the objects after the new word.

Backgrounds are white (1, 1, 1) by default; the "white" albedo is kept at 0.92 so that even a
fully lit white surface is darker than the background, and alpha separates it exactly.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("sphere", "cube", "torus", "cylinder", "cone", "capsule", "mug", "house")
"""Shape words. Geometry and sizes are in ``distill3d.world.shapes``."""

SHAPES_WITH_FRONT: tuple[str, ...] = ("mug", "house")
"""Shapes whose front (+X) can be told from their back and sides.

- mug: the handle sticks out on the mug's **+Y** side (the object's own left). Seen from the
  front (azimuth 0, camera on +X looking towards -X, image right = world +Y) the handle is on
  the **right** of the image; at azimuth 90 it points at the camera; from the back it is on
  the left.
- house: the door is on the +X wall; the roof ridge runs along Y, so the gables face +-Y.
"""

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (0.98, 0.50, 0.05),
    "yellow": (0.95, 0.85, 0.10),
    "green": (0.10, 0.62, 0.20),
    "blue": (0.12, 0.28, 0.90),
    "purple": (0.55, 0.15, 0.72),
    "white": (0.92, 0.92, 0.92),
    "black": (0.08, 0.08, 0.08),
}
"""Colour word -> albedo in [0, 1] (display RGB)."""

SECONDARY_COLOURS: dict[str, str] = {
    "red": "white",
    "white": "blue",
    "blue": "yellow",
    "yellow": "black",
    "black": "orange",
    "orange": "purple",
    "purple": "green",
    "green": "red",
}
"""Colour word -> the second colour of its striped / checkered / two-tone pattern and of a
house's door. One 8-cycle: no two colours are each other's secondary, so e.g. "a red striped
torus" and "a white striped torus" never look alike."""

PATTERNS: tuple[str, ...] = ("plain", "striped", "checkered", "two-tone")
"""Pattern words; their definitions (object space) are in ``distill3d.world.shapes``:

- plain: the colour everywhere.
- striped: horizontal bands of the secondary colour (along Z).
- checkered: 3D checkerboard cells in object space, colour / secondary colour.
- two-tone: upper half (z >= 0) in the colour, lower half (z < 0) in the secondary colour.
"""

PLAIN = "plain"
"""The pattern a prompt may leave out: "a red torus" is "a red plain torus"."""

VIEW_BUCKETS: tuple[str, ...] = ("front", "side", "back", "overhead")
"""View words of view-dependent prompts ("..., front view"); the rule is in ``views``."""
