"""Does a guidance scale leave the right answer alone? The guided x0 estimate of true images.

SDS and CDS pull a render towards the teacher's guided clean estimate D(x_t; y, s). If the
render already is a perfect image of the prompt (the world's reference render), a suitable
guidance scale s should return (nearly) that image; a scale that returns something far away
pushes every solution off the prompt's images. For held-out objects seen by Consistent3D's
cameras, this prints the range of the guided x0 and its RMS distance to the reference (teacher
space, [-1, 1]) per noise level t and scale s. It also prints the size of the CDS and SDS
gradients at the reference images under their own prompts and under the next object's prompt
(the same image as a wrong answer): a usable scale gives a much smaller gradient at the right
answer than at a wrong one (``right_to_wrong`` well below 1).

    PYTHONPATH=. python benchmarks/guidance_fixed_point.py --objects 8 --scales 1,3,10,20,50,100 \\
        --out benchmarks/results/guidance_fixed_point_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from distill3d.camera_sampling import OrbitCameraConfig, sample_quadrant_cameras
from distill3d.diffusion.parameterization import sigma_space_to_vp
from distill3d.guidance import CDSConfig, CDSLoss, SDSConfig, SDSLoss
from distill3d.world import VIEW_BUCKETS, view_suffix
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects
from distill3d.world_models.teachers import WorldTextToImageTeacher


def gradient_rms(teacher, images: torch.Tensor, cond, guidance: str, t: float, scale: float, seed: int) -> float:
    """RMS of the CDS (t2 = t, t1 = t + 0.15) or SDS (at t) gradient on ``images`` [B, H, W, 3]."""
    if guidance == "cds":
        loss = CDSLoss(CDSConfig(t_max=t, t_min=t, t_sampling="predetermined", cfg_start=scale, cfg_end=scale),
                       total_steps=1, seed=seed)
    else:
        loss = SDSLoss(SDSConfig(t_min=t, t_max=t, guidance_scale=scale), total_steps=1, seed=seed)
    _, stats = loss(images, teacher, cond, 0)
    return stats["grad_norm"] / images.numel() ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--scales", default="1,3,10,20,50,100")
    parser.add_argument("--times", default="0.1,0.3,0.5,0.7", help="noise levels t / T (gradients up to 0.6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    times = [float(t) for t in args.times.split(",")]
    teacher = WorldTextToImageTeacher.from_pretrained(device=args.device)
    objects = heldout_objects()
    objects = [objects[i * len(objects) // args.objects] for i in range(args.objects)]
    generator = torch.Generator().manual_seed(args.seed)
    # one Consistent3D camera per object (its azimuth quarter and view prompt as in training)
    cams, params = sample_quadrant_cameras(OrbitCameraConfig(cameras_per_step=len(objects)), generator)
    images = render_reference(objects, cams).rgb
    prompts = [o.prompt + view_suffix(VIEW_BUCKETS[int(b)]) for o, b in zip(objects, params["bucket"])]
    x = teacher.encode_images(images.to(teacher.device))
    cond = teacher.encode_prompt(prompts)
    wrong_cond = teacher.encode_prompt(prompts[1:] + prompts[:1])  # each image with the next object's prompt
    eps = torch.randn(x.shape, generator=generator).to(x.device)
    rows = []
    for frac in times:
        t = torch.full((len(objects),), round(frac * teacher.schedule.num_train_timesteps), device=x.device)
        abar, sigma = teacher.schedule.alpha_bar(t), teacher.schedule.sigma(t)
        x_t = sigma_space_to_vp(x + sigma[:, None, None, None] * eps, abar)
        for scale in scales:
            with torch.no_grad():
                x0 = teacher.denoise(x_t, t, cond, scale).x0.float()
            row = {"t": frac, "scale": scale, "x0_min": float(x0.min()), "x0_max": float(x0.max()),
                   "rms_to_reference": float((x0 - x).square().mean().sqrt())}
            if frac <= 0.6:
                for guidance in ("cds", "sds"):
                    right = gradient_rms(teacher, images, cond, guidance, frac, scale, args.seed)
                    wrong = gradient_rms(teacher, images, wrong_cond, guidance, frac, scale, args.seed)
                    row[f"{guidance}_grad_rms_right"] = right
                    row[f"{guidance}_grad_rms_wrong"] = wrong
                    row[f"{guidance}_right_to_wrong"] = right / wrong
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    args.out.write_text(json.dumps({"prompts": prompts, "seed": args.seed, "device": args.device, "rows": rows},
                                   indent=2))


if __name__ == "__main__":
    main()
