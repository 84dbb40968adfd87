"""Where the classifier goes wrong on its evaluation views: pattern errors per object, and the
view bucket against the distance to the nearest bucket boundary.

    PYTHONPATH=. python benchmarks/classifier_errors.py --out classifier_errors.json [--classifier DIR]

The views are those of ``distill3d teacher eval classifier`` (same objects, cameras and seed).
The bucket accuracy is also reported for views at least ``--margins`` degrees away from every
bucket cut (``distill3d.eval.view_ambiguity.degrees_to_bucket_cut``).
"""

from __future__ import annotations

import argparse
from collections import Counter

import torch
from bench_report import report

from distill3d.eval.teacher_quality import _views, eval_objects, render_views
from distill3d.eval.view_ambiguity import degrees_to_bucket_cut
from distill3d.world import view_bucket_index
from distill3d.world.views import OVERHEAD_ELEVATION_DEG
from distill3d.world.vocabulary import SHAPES_WITH_FRONT
from distill3d.world_models.classifier import HEADS, WorldClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classifier", default="world-classifier", help="model folder or shipped name")
    parser.add_argument("--margins", type=float, nargs="+", default=[3.0, 5.0, 10.0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    classifier = WorldClassifier.from_pretrained(args.classifier, device="cpu")
    objects = eval_objects(args.count)
    cams, params = _views(args.count, classifier.config.resolution, args.seed, torch.device("cpu"))
    logp = classifier.log_probs(render_views(objects, cams))

    predicted = [HEADS["pattern"][int(i)] for i in logp["pattern"].argmax(-1)]
    high = params["elevation"] > OVERHEAD_ELEVATION_DEG
    errors = Counter(f"{o.prompt} -> {p}" for o, p in zip(objects, predicted) if p != o.pattern)
    wrong_pattern = torch.tensor([p != o.pattern for o, p in zip(objects, predicted)])

    front = torch.tensor([o.shape in SHAPES_WITH_FRONT for o in objects])
    truth = view_bucket_index(params["azimuth"], params["elevation"])
    right = logp["bucket"].argmax(-1).cpu() == truth
    margin = degrees_to_bucket_cut(params["azimuth"], params["elevation"])
    by_margin = {}
    for m in args.margins:
        far = front & (margin >= m)
        by_margin[f"at_least_{m:g}_degrees"] = {"views": int(far.sum()),
                                                "bucket_accuracy": round(float(right[far].float().mean()), 4),
                                                "errors_closer": int((front & ~far & ~right).sum())}
    report({"classifier": args.classifier, "count": args.count, "seed": args.seed,
            "pattern_errors": int(wrong_pattern.sum()),
            "pattern_errors_above_60_degrees": int((wrong_pattern & high).sum()),
            "pattern_errors_by_object": dict(errors.most_common()),
            "bucket_views": int(front.sum()), "bucket_accuracy": round(float(right[front].float().mean()), 4),
            "bucket_by_margin": by_margin}, args.out)


if __name__ == "__main__":
    main()
