"""By how much does the multi-view teacher turn an object wrongly? The yaw error of each view.

    PYTHONPATH=. python benchmarks/multiview_yaw_error.py --shapes cube,house --count 12 --steps 20 \
        --out yaw.json [--teacher DIR] [--device cuda]

Takes the first ``--count`` groups of ``distill3d teacher eval multiview`` (its 256 groups, seed
0) whose object has one of ``--shapes``, and draws their target views with ``--steps``-step
DDIM (guidance 1, initial noise from a CPU generator seeded with ``--seed``). Each drawn view is
then compared, by PSNR, with reference renders of its object from its camera turned about the
world's vertical axis by every multiple of ``--step-degrees``; the turn that matches best is the
view's yaw error (0 for a view drawn at the right angle; for a cube, a turn by a multiple of 90
degrees looks the same). When the four views of a group share one error, the teacher has read
the object's yaw in the input view wrongly and then turned it correctly.
"""

from __future__ import annotations

import argparse

import torch
from bench_report import report

from distill3d.cameras import turned_about_up
from distill3d.eval.teacher_quality import multiview_eval_groups_of_shapes, render_views
from distill3d.metrics import psnr
from distill3d.world_models.multiview_cameras import split_groups
from distill3d.world_models.teachers import DEFAULT_MULTIVIEW, WorldMultiViewTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=DEFAULT_MULTIVIEW, help="model folder or shipped name")
    parser.add_argument("--shapes", default="cube,house", help="comma-separated shape words")
    parser.add_argument("--count", type=int, default=12, help="groups")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--step-degrees", type=float, default=5.0, help="spacing of the turns tried")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not 0 < args.step_degrees <= 90:
        parser.error("--step-degrees must be in (0, 90]")

    teacher = WorldMultiViewTeacher.from_pretrained(args.teacher, device=args.device)
    R, K = teacher.native_image_size, teacher.num_views
    objects, cams = multiview_eval_groups_of_shapes(teacher, args.shapes.split(","), args.count)
    cams, n = cams.to(teacher.device), len(objects)
    rendered = render_views([o for o in objects for _ in range(K + 1)], cams).reshape(n, K + 1, R, R, 3)
    inputs, targets = split_groups(cams, K)
    cond = teacher.encode_condition(rendered[:, 0], inputs, targets)
    views = teacher.sample(cond, num_steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                           progress=True)
    side = int(180.0 // args.step_degrees)
    turns = args.step_degrees * torch.arange(-side, side + 1, dtype=torch.float32)
    turns = turns[turns > -180.0]  # multiples of the step in (-180, 180], 0 among them
    zero = int((turns == 0).nonzero())
    groups = []
    for g in range(n):
        errors, best, right = [], [], []
        for k in range(K):
            refs = render_views([objects[g]] * len(turns), turned_about_up(targets[g * K + k:g * K + k + 1], turns))
            p = psnr(views[g, k][None].expand_as(refs), refs)
            errors.append(float(turns[int(p.argmax())]))
            best.append(round(float(p.max()), 2))
            right.append(round(float(p[zero]), 2))
        groups.append({"object": objects[g].prompt, "yaw_error_degrees": errors, "psnr_at_best_turn": best,
                       "psnr": right})
    report({"teacher": str(args.teacher), "steps": args.steps, "seed": args.seed,
            "step_degrees": args.step_degrees, "groups": groups}, args.out)


if __name__ == "__main__":
    main()
