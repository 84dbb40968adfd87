"""Seconds per render-pool block of the classifier's training, by views per object and ray chunk.

    python benchmarks/bench_render_pool_blocks.py --device cuda --out pool_blocks.json

Each setting renders pool blocks of 64 training objects (mugs and houses drawn three times as
often, as the classifier does), ``entries`` views of each, 64x64 with supersample 2: one warm-up
block, then the mean of three. On a GPU the tracer is bound by kernel launches, so a block of
1024 renders traced in one chunk per shape costs about what a block of 256 does.
"""

from __future__ import annotations

import argparse

import torch
from bench_report import report

from distill3d.world.split import train_objects
from distill3d.world_models.render_pool import RenderPool, RenderPoolConfig, ViewCameras, repeat_shapes

REPEATS = {"mug": 3, "house": 3}
SETTINGS = ((4, 1 << 20), (16, 1 << 20), (16, 1 << 22), (8, 1 << 21))  # (views per object, rays per chunk)


def seconds_per_block(entries: int, chunk_rays: int, device: str) -> tuple[int, float]:
    """(block size, mean seconds per block) of a pool with ``entries`` views of each of 64 objects."""
    config = RenderPoolConfig(size=entries * 64 * 2, entries_per_object=entries, objects_per_block=64,
                              refresh_every=50, resolution=64, supersample=2, chunk_rays=chunk_rays,
                              shape_repeats=REPEATS)
    pool = RenderPool(config, 1, ViewCameras().sample, device, objects=repeat_shapes(train_objects(), REPEATS))
    generator = torch.Generator().manual_seed(0)
    pool.render_block(0, generator)  # warm-up
    before = pool.render_seconds  # the pool times each block itself, the GPU synchronised
    for i in range(3):
        pool.render_block(i % 2, generator)
    return config.block_size, (pool.render_seconds - before) / 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name() if args.device == "cuda"
              else f"cpu ({torch.get_num_threads()} threads)"}
    for entries, chunk in SETTINGS:
        block, seconds = seconds_per_block(entries, chunk, args.device)
        result[f"entries{entries}_chunk{chunk}"] = {"block": block, "seconds_per_block": round(seconds, 4),
                                                    "renders_per_second": round(block / seconds, 1)}
        if args.device == "cuda":
            torch.cuda.empty_cache()
    report(result, args.out)


if __name__ == "__main__":
    main()
