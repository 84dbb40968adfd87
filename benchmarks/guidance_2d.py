"""2D distillation check: SDS and CDS optimising plain images, scored by the world classifier.

The cheapest test of a guidance setting: no 3D scene, no renderer; one 64x64 image per
held-out prompt (with ", front view"), parameterised by per-pixel logits (image = sigmoid),
optimised with Adam against the world text-to-image teacher. What the teacher's gradients
make of an image shows whether a classifier-free guidance scale suits the teacher, on a CPU in
minutes. Each setting is ``NAME=guidance:cfg_start[:cfg_end[:t_max]]`` (t_max: the loss's
default when left out, 0.7 for CDS as the coarse stage, 0.98 for SDS):

    PYTHONPATH=. python benchmarks/guidance_2d.py --prompts 4 --steps 120 \\
        --setting cds_50_20=cds:50:20 --setting cds_3=cds:3 --setting sds_100=sds:100 \\
        --out guidance_2d.json --grid guidance_2d.png

Reports per setting: the classifier's shape / colour / pattern accuracy and R-precision over
the prompts (here the prompt's rank among the held-out prompts only, an easier test than
``eval.text_to_3d.classifier_scores``, which ranks among all world prompts), and the share of saturated pixels (a channel below 0.02 or above 0.98 while the
pixel is not white background), the usual symptom of an over-strong guidance scale.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from distill3d.eval.teacher_quality import save_grid
from distill3d.guidance import CDSConfig, CDSLoss, SDSConfig, SDSLoss
from distill3d.world import view_suffix
from distill3d.world.split import heldout_objects
from distill3d.world_models.classifier import HEADS, WorldClassifier, prompt_scores
from distill3d.world_models.teachers import WorldTextToImageTeacher


def parse_setting(text: str) -> tuple[str, str, float, float, float | None]:
    """``NAME=guidance:cfg_start[:cfg_end[:t_max]]`` -> (name, guidance, cfg_start, cfg_end, t_max)."""
    name, _, spec = text.partition("=")
    parts = spec.split(":")
    if not name or parts[0] not in ("sds", "cds") or not 2 <= len(parts) <= 4:
        raise SystemExit(f"bad --setting {text!r}; expected NAME=sds|cds:CFG[:CFG_END[:T_MAX]]")
    start = float(parts[1])
    end = float(parts[2]) if len(parts) >= 3 else start
    return name, parts[0], start, end, float(parts[3]) if len(parts) == 4 else None


def distil_images(teacher, prompts: list[str], guidance: str, cfg_start: float, cfg_end: float,
                  t_max: float | None, steps: int, lr: float, seed: int, *, optimizer: str = "adam",
                  fixed_noise: bool = True) -> torch.Tensor:
    """Images [P, R, R, 3] in [0, 1] optimised from light grey by the guidance loss.

    ``optimizer``: "adam" (per-pixel normalised steps) or "sgd" (steps proportional to the
    gradient); ``fixed_noise=False`` draws CDS's noise afresh every step (ablation (c)).
    """
    R = teacher.native_image_size
    generator = torch.Generator().manual_seed(seed)
    logits = (1.5 + 0.1 * torch.randn(len(prompts), R, R, 3, generator=generator)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr) if optimizer == "adam" else torch.optim.SGD([logits], lr=lr)
    cond = teacher.encode_prompt(prompts)
    t_range = {} if t_max is None else {"t_max": t_max}
    if guidance == "cds":
        loss_fn = CDSLoss(CDSConfig(cfg_start=cfg_start, cfg_end=cfg_end, fixed_noise=fixed_noise, **t_range),
                          total_steps=steps, seed=seed)
    else:
        loss_fn = SDSLoss(SDSConfig(guidance_scale=cfg_start, **t_range), total_steps=steps, seed=seed)
    for step in range(steps):
        loss, _ = loss_fn(torch.sigmoid(logits), teacher, cond, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.sigmoid(logits).detach()


def score(classifier: WorldClassifier, images: torch.Tensor, objects) -> dict[str, float]:
    logp = classifier.log_probs(images)
    result = {}
    for head in ("shape", "colour", "pattern"):
        predicted = logp[head].argmax(-1).tolist()
        words = [HEADS[head][i] for i in predicted]
        result[f"{head}_accuracy"] = sum(w == getattr(o, head) for w, o in zip(words, objects)) / len(objects)
    candidates = heldout_objects()
    scores = prompt_scores(logp, candidates)
    own = torch.tensor([candidates.index(o) for o in objects])
    result["r_precision"] = float((scores.argmax(-1) == own).float().mean())
    white = (images > 0.98).all(-1)
    saturated = ((images < 0.02) | (images > 0.98)).any(-1) & ~white
    result["saturated_share"] = float(saturated.float().mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", action="append", required=True, help="NAME=sds|cds:CFG[:CFG_END[:T_MAX]]")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.03)
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--fresh-noise", action="store_true", help="CDS: new noise every step (ablation (c))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grid", type=Path, default=None, help="PNG: one row per setting")
    args = parser.parse_args()
    settings = [parse_setting(s) for s in args.setting]
    objects = heldout_objects()
    objects = [objects[i * len(objects) // args.prompts] for i in range(args.prompts)]
    prompts = [o.prompt + view_suffix("front") for o in objects]
    teacher = WorldTextToImageTeacher.from_pretrained(device=args.device)
    classifier = WorldClassifier.from_pretrained(device=args.device)
    rows, images = {}, []
    for name, guidance, start, end, t_max in settings:
        began = time.perf_counter()
        out = distil_images(teacher, prompts, guidance, start, end, t_max, args.steps, args.lr, args.seed,
                            optimizer=args.optimizer, fixed_noise=not args.fresh_noise)
        rows[name] = {"guidance": guidance, "cfg_start": start, "cfg_end": end, "t_max": t_max,
                      **score(classifier, out, objects),
                      "seconds": round(time.perf_counter() - began, 1)}
        images.append(out)
        print(name, json.dumps(rows[name]), flush=True)
    args.out.write_text(json.dumps({"prompts": prompts, "steps": args.steps, "lr": args.lr, "seed": args.seed,
                                    "optimizer": args.optimizer, "fresh_noise": args.fresh_noise,
                                    "device": args.device, "rows": rows}, indent=2))
    if args.grid is not None:
        save_grid(torch.cat(images), args.grid, columns=len(prompts))


if __name__ == "__main__":
    main()
