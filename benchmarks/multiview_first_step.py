"""How well the multi-view teacher predicts the target views in one step, at high noise.

    PYTHONPATH=. python benchmarks/multiview_first_step.py --out first_step.json [--teacher DIR] [--samples grid.png]

For the first ``--count`` groups of ``distill3d teacher eval multiview`` (same objects, cameras
and seed), the reference target views are noised to x_t at each of ``--timesteps`` and the
teacher's x0 prediction (guidance 1) is compared with them by PSNR. At t = 999, x_t is pure
noise for the cosine schedule, so the prediction is the teacher's whole guess from the input
view and the cameras; the first step of 50-step DDIM starts from that guess, and it fixes the
pose and layout of what the sampler draws. A teacher that was never taught at those
timesteps gives a noisy guess there (benchmarks/RESULTS.md, "World multi-view teacher").

``--samples`` writes one row per group: the input view, the predictions at each timestep,
and the references.
"""

from __future__ import annotations

import argparse
import torch
from bench_report import report

from distill3d.eval.teacher_quality import multiview_eval_groups, render_views, save_grid
from distill3d.metrics import psnr
from distill3d.world_models.multiview_cameras import split_groups
from distill3d.world_models.teachers import DEFAULT_MULTIVIEW, WorldMultiViewTeacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=DEFAULT_MULTIVIEW, help="model folder or shipped name")
    parser.add_argument("--count", type=int, default=32, help="groups (the first of the evaluation's 256)")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[999, 900, 800, 600])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", default=None, help="PNG grid")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    teacher = WorldMultiViewTeacher.from_pretrained(args.teacher, device="cpu")
    R, K, n = teacher.native_image_size, teacher.num_views, args.count
    objects, cams = multiview_eval_groups(teacher, 256, args.seed)  # the evaluation's 256 groups; the first n
    objects = objects[:n]
    inputs, targets = split_groups(cams, K)
    inputs, targets = inputs[torch.arange(n)], targets[torch.arange(n * K)]
    rendered = render_views([o for o in objects for _ in range(K)], targets).reshape(n, K, R, R, 3)
    input_views = render_views(objects, inputs)
    cond = teacher.encode_condition(input_views, inputs, targets)
    truth = rendered.reshape(n * K, R, R, 3)
    x0 = truth.permute(0, 3, 1, 2) * 2 - 1
    generator = torch.Generator().manual_seed(args.seed)
    result, rows = {}, [input_views[:, None]]
    for t in args.timesteps:
        abar = teacher.schedule.alpha_bar(torch.tensor(t))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn(x0.shape, generator=generator)
        with torch.no_grad():
            predicted = teacher.denoise(x_t, torch.full((n * K,), t), cond, guidance_scale=1.0).x0
        images = ((predicted.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
        result[f"psnr_at_t{t}"] = round(float(psnr(images, truth).mean()), 3)
        rows.append(images.reshape(n, K, R, R, 3))
    if args.samples:
        grid = torch.cat(rows + [rendered], dim=1)[:8]
        save_grid(grid.reshape(-1, R, R, 3), args.samples, columns=grid.shape[1])
    report({"teacher": str(args.teacher), "count": n, "seed": args.seed, **result}, args.out)


if __name__ == "__main__":
    main()
