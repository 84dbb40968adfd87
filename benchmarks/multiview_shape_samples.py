"""Multi-view teacher samples of chosen shapes, with their PSNR per view.

    PYTHONPATH=. python benchmarks/multiview_shape_samples.py --shapes cube,house,mug --count 16 \
        --samples hard_shapes.png [--split train] [--teacher DIR] [--device cuda] [--out psnr.json]

Takes the first ``--count`` groups of ``distill3d teacher eval multiview`` (its 256 groups,
seed 0) whose object has one of ``--shapes``, and draws their target views with 50-step DDIM
(guidance 1, initial noise from a CPU generator seeded with ``--seed``). The grid has one row
per group: the input view, the 4 sampled views, a blank, the 4 reference views. The evaluation
only draws its first 8 groups, all spheres and cubes; this shows the other shapes.

``--split train`` keeps those groups' cameras but swaps each held-out object for a training
object of the same shape (round robin over them): whether an error is the teacher's on every
object of a shape or only on the combinations it never saw.
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from bench_report import report

from distill3d.eval.teacher_quality import multiview_eval_groups_of_shapes, render_views, save_grid
from distill3d.metrics import psnr
from distill3d.world.split import train_objects
from distill3d.world_models.multiview_cameras import split_groups
from distill3d.world_models.teachers import DEFAULT_MULTIVIEW, WorldMultiViewTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=DEFAULT_MULTIVIEW, help="model folder or shipped name")
    parser.add_argument("--shapes", default="cube,house,mug", help="comma-separated shape words")
    parser.add_argument("--count", type=int, default=16, help="groups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout", help="which objects")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", default=None, help="PNG grid")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    teacher = WorldMultiViewTeacher.from_pretrained(args.teacher, device=args.device)
    R, K = teacher.native_image_size, teacher.num_views
    objects, cams = multiview_eval_groups_of_shapes(teacher, args.shapes.split(","), args.count)
    cams, n = cams.to(teacher.device), len(objects)
    if args.split == "train":
        seen = {shape: [o for o in train_objects() if o.shape == shape] for shape in {o.shape for o in objects}}
        drawn = Counter()
        for i, o in enumerate(objects):
            objects[i] = seen[o.shape][drawn[o.shape] % len(seen[o.shape])]
            drawn[o.shape] += 1
    rendered = render_views([o for o in objects for _ in range(K + 1)], cams).reshape(n, K + 1, R, R, 3)
    inputs, targets = split_groups(cams, K)
    cond = teacher.encode_condition(rendered[:, 0], inputs, targets)
    views = teacher.sample(cond, num_steps=50, generator=torch.Generator().manual_seed(args.seed), progress=True)
    truth = rendered[:, 1:]
    per_view = psnr(views.reshape(-1, R, R, 3), truth.reshape(-1, R, R, 3)).reshape(n, K)
    if args.samples:
        grid = torch.cat([rendered[:, :1], views, torch.ones_like(rendered[:, :1]), truth], dim=1)
        save_grid(grid.reshape(-1, R, R, 3), args.samples, columns=2 * K + 2)
    report({"teacher": str(args.teacher), "split": args.split, "seed": args.seed,
            "objects": [o.prompt for o in objects], "psnr_per_group": [round(float(p), 2) for p in per_view.mean(1)],
            "psnr": round(float(per_view.mean()), 3)}, args.out)


if __name__ == "__main__":
    main()
