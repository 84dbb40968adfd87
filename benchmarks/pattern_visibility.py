"""How often the two-tone pattern cannot be seen: the ceiling on the classifier's pattern accuracy.

    PYTHONPATH=. python benchmarks/pattern_visibility.py --count 2048 --out pattern_visibility.json [--classifier DIR]

Two-tone paints z < 0 in the secondary colour, so from above the lower half may be hidden and
"a red two-tone sphere" looks exactly like "a red plain sphere". On the objects and cameras of
``evaluate_classifier``, every plain or two-tone object is rendered beside its counterpart
(same shape and colour, plain <-> two-tone) at the same camera; a view is indistinguishable
when fewer than ``--max-pixel-share`` of its pixels differ by more than ``--pixel-tolerance``
in any channel. Reported: the indistinguishable share (overall, per elevation band, per shape),
the pattern accuracy of ``--classifier`` (default: the shipped one) on all, distinguishable and
indistinguishable views, and the accuracy ceiling if indistinguishable views are at best guessed
right half the time.
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_report import report

from distill3d.eval.teacher_quality import _views, eval_objects, render_views
from distill3d.eval.view_ambiguity import TWO_TONE, pattern_hidden
from distill3d.world.vocabulary import PLAIN, SHAPES
from distill3d.world_models.classifier import HEADS, WorldClassifier

ELEVATION_BANDS = ((-10.0, 20.0), (20.0, 40.0), (40.0, 60.0), (60.0, 90.0))  # degrees, [low, high)


def share(mask: torch.Tensor) -> float | None:
    """Share of True in a bool mask, None when it is empty."""
    return round(int(mask.sum()) / mask.numel(), 4) if mask.numel() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pixel-tolerance", type=float, default=0.1)
    parser.add_argument("--max-pixel-share", type=float, default=0.001)
    parser.add_argument("--classifier", default="world-classifier", help="model folder or shipped name")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    start = time.perf_counter()

    classifier = WorldClassifier.from_pretrained(args.classifier, device="cpu")
    objects = eval_objects(args.count)
    cams, params = _views(args.count, classifier.config.resolution, args.seed, torch.device("cpu"))
    images = render_views(objects, cams)
    pattern_truth = torch.tensor([HEADS["pattern"].index(o.pattern) for o in objects])
    correct = classifier.log_probs(images)["pattern"].argmax(-1).cpu() == pattern_truth

    pair = torch.tensor([o.pattern in (PLAIN, TWO_TONE) for o in objects])
    hidden = pattern_hidden(objects, cams, images, args.pixel_tolerance, args.max_pixel_share)

    elevation, shapes = params["elevation"], [o.shape for o in objects]
    bands = {}
    for lo, hi in ELEVATION_BANDS:
        in_band = pair & (elevation >= lo) & (elevation < hi)
        bands[f"{lo:g}..{hi:g}"] = {"views": int(in_band.sum()), "indistinguishable_share": share(hidden[in_band])}
    per_shape = {}
    for name in SHAPES:
        of_shape = pair & torch.tensor([s == name for s in shapes])
        if of_shape.any():
            per_shape[name] = {"views": int(of_shape.sum()), "indistinguishable_share": share(hidden[of_shape])}
    result = {
        "classifier": args.classifier, "count": args.count, "seed": args.seed,
        "pixel_tolerance": args.pixel_tolerance, "max_pixel_share": args.max_pixel_share,
        "plain_or_two_tone_views": int(pair.sum()),
        "indistinguishable_views": int(hidden.sum()),
        "indistinguishable_share_of_pairs": share(hidden[pair]),
        "indistinguishable_share_of_all": share(hidden),
        "by_elevation": bands, "by_shape": per_shape,
        "pattern_accuracy": share(correct),
        "pattern_accuracy_distinguishable": share(correct[~hidden]),
        "pattern_accuracy_distinguishable_plain_or_two_tone": share(correct[pair & ~hidden]),
        "pattern_accuracy_indistinguishable": share(correct[hidden]),
        "pattern_errors": {"indistinguishable": int((hidden & ~correct).sum()),
                           "distinguishable_plain_or_two_tone": int((pair & ~hidden & ~correct).sum()),
                           "striped_or_checkered": int((~pair & ~correct).sum())},
        "pattern_accuracy_ceiling": round(1.0 - 0.5 * int(hidden.sum()) / args.count, 4),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(f"{'band / shape':>14} {'views':>6} {'hidden':>7}")
    for name, row in [*bands.items(), *per_shape.items()]:
        print(f"{name:>14} {row['views']:>6} {row['indistinguishable_share'] or 0.0:>7.1%}")
    report(result, args.out)


if __name__ == "__main__":
    main()
