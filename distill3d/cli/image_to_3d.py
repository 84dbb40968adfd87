"""``distill3d image-to-3d IMAGE|FOLDER [--model STUDENT] --out DIR``: 3D Gaussians from one image, feed-forward (DD3G)."""

from __future__ import annotations

import argparse
import json

from distill3d.cli.dataclass_args import add_config_options, config_from_args


def register(commands, help_text: str) -> None:
    from distill3d.methods.dd3g.infer import ImageTo3DConfig

    p = commands.add_parser("image-to-3d", help=help_text, usage="distill3d image-to-3d IMAGE|FOLDER --out DIR "
                                                                  "[--model STUDENT] [options]",
                            description="DD3G inference: the student turns an image (an object on a plain or "
                                        "transparent background; alpha is composited over white) into 3D Gaussians "
                                        "in one pass. Writes gaussians.ply (the standard 3DGS layout), input.png, "
                                        "a turntable and summary.json into --out (one folder per image for a "
                                        "folder of images). The student is the shipped dd3g-student (trained on the "
                                        "world's primitive objects: other objects come out as blobs of their "
                                        "colour) or a folder from `distill3d dd3g train`.")
    p.add_argument("source", help="an image file (PNG, JPEG, WebP, BMP) or a folder of them")
    p.add_argument("--out", required=True, help="output folder")
    add_config_options(p, ImageTo3DConfig, skip={"cameras"})  # the teacher's group layout, as it was trained
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from distill3d.methods.dd3g.infer import ImageTo3DConfig, image_to_3d

    config = config_from_args(ImageTo3DConfig, args)
    for summary in image_to_3d(args.source, config, args.out):
        print(json.dumps({k: summary[k] for k in ("image", "gaussians", "inference_seconds", "outputs")}))
    return 0
