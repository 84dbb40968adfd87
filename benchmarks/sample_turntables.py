"""The turntables of a folder of samples side by side in one video (.gif or .mp4), for the docs:

    distill3d holofusion sample --count 4 --out runs/hs --device cpu
    python benchmarks/sample_turntables.py runs/hs --out docs/videos/holofusion_samples_turntables.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from distill3d.export.video import write_video


def side_by_side(folder: Path, name: str = "turntable.gif") -> np.ndarray:
    """Frames uint8 [N, H, K W, 3]: the ``name`` video of each DIR/sample-*/ (sorted), left to right."""
    paths = sorted(folder.glob(f"sample-*/{name}"))
    if not paths:
        raise SystemExit(f"no sample-*/{name} in {folder}")
    videos = [iio.imread(p)[..., :3] for p in paths]
    frames = min(len(v) for v in videos)
    return np.concatenate([v[:frames] for v in videos], axis=2)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a folder written by `distill3d holofusion sample`")
    p.add_argument("--out", type=Path, required=True, help=".gif or .mp4")
    p.add_argument("--fps", type=int, default=12)
    args = p.parse_args(argv)
    return write_video(args.out, side_by_side(args.folder), fps=args.fps)


if __name__ == "__main__":
    main()
