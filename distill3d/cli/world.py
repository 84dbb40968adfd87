"""``distill3d world``: render world objects, list the world, write data sets from it.

Heavy imports (torch, the renderer) happen inside the handlers so that ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from distill3d.errors import UserError

DATASET_KINDS = ("multiview", "text-image", "multiview-groups")
BUCKET_ANGLES = {"front": (0.0, 20.0), "side": (90.0, 20.0), "back": (180.0, 20.0), "overhead": (0.0, 75.0)}
"""View word -> (azimuth, elevation) used when a prompt names a view and no angles are given."""


def register(subparsers, help_text: str) -> None:
    world = subparsers.add_parser("world", help=help_text,
                                  description="The built-in procedural world of objects with exact renders.")
    commands = world.add_subparsers(dest="world_command", metavar="SUBCOMMAND", required=True)

    render = commands.add_parser("render", help="render one object to an RGBA PNG")
    render.add_argument("--prompt", required=True, help='e.g. "a red striped torus" or "a blue mug, side view"')
    render.add_argument("--azimuth", type=float, default=None,
                        help="degrees CCW about +Z from the object's front (+X); default from the view word, else 0")
    render.add_argument("--elevation", type=float, default=None,
                        help="degrees above the ground plane; default from the view word, else 20")
    render.add_argument("--distance", type=float, default=None,
                        help="camera distance from the object centre; default: the distance at which every "
                             "object fits the view (2.68 at --fovy 40)")
    render.add_argument("--fovy", type=float, default=40.0, help="vertical field of view in degrees")
    render.add_argument("--resolution", type=int, default=256, help="image width and height in pixels")
    render.add_argument("--supersample", type=int, default=2, help="s x s rays per pixel (antialiasing)")
    render.add_argument("--out", type=Path, required=True, help="output .png file")
    render.set_defaults(run=run_render)

    listing = commands.add_parser("list", help="print the vocabulary, view rule and train / held-out split")
    listing.set_defaults(run=run_list)

    dataset = commands.add_parser("dataset", help="write a training or evaluation data set from the world",
                                  description="Write a data set of reference renders (docs/data-layout.md): sharded, "
                                              "resumable, with a progress bar. A 2-core CPU writes about 25 images "
                                              "of 64x64 a second: --count 10000 text-image items take about 7 "
                                              "minutes, 10000 multi-view sequences of 32 views hours.")
    dataset.add_argument("kind", choices=DATASET_KINDS,
                         help="multiview: posed frame sequences; text-image: views with view-dependent prompts; "
                              "multiview-groups: an input view plus K target views")
    dataset.add_argument("--out", type=Path, required=True, help="output folder")
    dataset.add_argument("--count", type=int, required=True, help="number of sequences / images / groups")
    dataset.add_argument("--split", choices=("train", "heldout"), default="train", help="which objects to draw")
    dataset.add_argument("--resolution", type=int, default=64, help="image width and height in pixels")
    dataset.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    dataset.add_argument("--resume", action="store_true", help="keep finished items in --out and write the rest")
    dataset.add_argument("--views", type=int, default=32, help="frames per multi-view sequence (multiview)")
    dataset.add_argument("--targets", type=int, default=4, help="target views per group (multiview-groups)")
    dataset.add_argument("--prompt", action="append", dest="prompts", metavar="PROMPT",
                         help="only this object of the split (repeat for several; default: all of the split)")
    dataset.set_defaults(run=run_dataset)


def _positive(name: str, value: int | float) -> None:
    if value <= 0:
        raise UserError(f"--{name} must be positive, got {value}")


def framing_distance(fovy_deg: float) -> float:
    """Camera distance at which the sphere of radius ``OBJECT_RADIUS`` just fits the view."""
    from distill3d.world.shapes import OBJECT_RADIUS

    return round(OBJECT_RADIUS / math.sin(math.radians(0.5 * fovy_deg)) + 0.05, 2)


def _render_angles(view: str | None, azimuth: float | None, elevation: float | None) -> tuple[float, float]:
    from distill3d.world.views import view_bucket

    default_az, default_el = BUCKET_ANGLES[view] if view else (0.0, 20.0)
    az = default_az if azimuth is None else azimuth
    el = default_el if elevation is None else elevation
    if not -90.0 <= el <= 90.0:
        raise UserError(f"--elevation must be within [-90, 90] degrees, got {el}")
    if view is not None and view_bucket(az, el) != view:
        raise UserError(f"the prompt says '{view} view' but azimuth {az:g}, elevation {el:g} is a "
                        f"'{view_bucket(az, el)} view'; change the angles or the view word")
    return az, el


def run_render(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from distill3d.cameras import orbit_cameras
    from distill3d.world.prompts import parse_prompt
    from distill3d.world.reference_render import render_reference
    from distill3d.world.shapes import OBJECT_RADIUS

    obj, view = parse_prompt(args.prompt)
    az, el = _render_angles(view, args.azimuth, args.elevation)
    for name in ("resolution", "supersample", "fovy"):
        _positive(name, getattr(args, name))
    if args.fovy >= 180.0:
        raise UserError(f"--fovy must be below 180 degrees, got {args.fovy}")
    distance = framing_distance(args.fovy) if args.distance is None else args.distance
    if distance <= OBJECT_RADIUS:
        raise UserError(f"--distance must exceed the object radius {OBJECT_RADIUS}, got {distance}")
    if args.out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {args.out}")
    cameras = orbit_cameras(el, az, distance, args.fovy, args.resolution, args.resolution)
    out = render_reference(obj, cameras, supersample=args.supersample)
    alpha = out.alpha[0]
    colour = (out.rgb[0] - (1.0 - alpha)) / alpha.clamp_min(1e-6)  # straight alpha (white background removed)
    colour = torch.where(alpha > 0, colour, torch.ones_like(colour)).clamp(0.0, 1.0)
    rgba = torch.cat([colour, alpha], dim=-1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgba.numpy() * 255.0).round().astype(np.uint8), mode="RGBA").save(args.out)
    print(args.out)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from distill3d.world import split, views
    from distill3d.world.prompts import num_objects
    from distill3d.world.vocabulary import COLOURS, PATTERNS, SECONDARY_COLOURS, SHAPES, SHAPES_WITH_FRONT

    heldout = split.heldout_objects()
    print(f"shapes:   {', '.join(SHAPES)}  (with a front: {', '.join(SHAPES_WITH_FRONT)})")
    print(f"colours:  {', '.join(COLOURS)}")
    print(f"patterns: {', '.join(PATTERNS)}")
    print("second colours (stripes, checks, lower half; a house's door takes the second colour's second):")
    print("  " + ", ".join(f"{c} -> {s}" for c, s in SECONDARY_COLOURS.items()))
    print('prompt:   "a <colour> [<pattern>] <shape>[, <front|side|back|overhead> view]"')
    print(f"view rule: overhead above {views.OVERHEAD_ELEVATION_DEG:g} deg elevation; otherwise front within "
          f"{views.FRONT_HALF_ANGLE_DEG:g} deg of azimuth 0 (+X), back within {views.FRONT_HALF_ANGLE_DEG:g} deg "
          "of azimuth 180, side in between")
    print(f"objects:  {num_objects()} combinations, {num_objects() - len(heldout)} train, {len(heldout)} held out")
    print("held out:")
    for obj in heldout:
        print(f"  {obj.prompt}")
    return 0


def run_dataset(args: argparse.Namespace) -> int:
    from distill3d.data.world_datasets import write_world_dataset
    from distill3d.world.prompts import parse_prompt

    for name in ("count", "resolution", "views", "targets"):
        _positive(name, getattr(args, name))
    objects = [parse_prompt(p)[0] for p in args.prompts or ()]
    path = write_world_dataset(args.kind, args.out, args.count, split=args.split, resolution=args.resolution,
                               seed=args.seed, resume=args.resume, views=args.views, targets=args.targets,
                               objects=objects or None)
    print(path)
    return 0
