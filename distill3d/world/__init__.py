"""The world: distill3d's embedded procedural object universe with an exact reference renderer.

Objects are ``"a <colour> <pattern> <shape>"`` (``vocabulary``, ``prompts``), signed distance
functions with albedo fields (``shapes``), rendered by analytic sphere tracing under a fixed
Lambertian light (``reference_render``), described from a view by a suffix such as ", front
view" (``views``), and split into training and held-out objects (``split``).
"""

from distill3d.world.prompts import WorldObject, all_objects, all_prompts, num_objects, parse_prompt
from distill3d.world.reference_render import AMBIENT, LIGHT_DIRECTION, render_reference
from distill3d.world.shapes import OBJECT_RADIUS, object_albedo, object_sdf
from distill3d.world.split import heldout_objects, is_heldout, train_objects
from distill3d.world.views import view_bucket, view_bucket_index, view_prompt, view_suffix
from distill3d.world.vocabulary import (COLOURS, PATTERNS, SECONDARY_COLOURS, SHAPES, SHAPES_WITH_FRONT,
                                        VIEW_BUCKETS)

__all__ = [
    "WorldObject", "all_objects", "all_prompts", "num_objects", "parse_prompt",
    "AMBIENT", "LIGHT_DIRECTION", "render_reference",
    "OBJECT_RADIUS", "object_albedo", "object_sdf",
    "heldout_objects", "is_heldout", "train_objects",
    "view_bucket", "view_bucket_index", "view_prompt", "view_suffix",
    "COLOURS", "PATTERNS", "SECONDARY_COLOURS", "SHAPES", "SHAPES_WITH_FRONT", "VIEW_BUCKETS",
]
