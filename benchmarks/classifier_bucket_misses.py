"""Where classifiers misread the view bucket, and whether those views could be read at all.

    PYTHONPATH=. python benchmarks/classifier_bucket_misses.py --out bucket_misses.json \
        --classifier world-classifier [DIR ...]

On the views of ``distill3d teacher eval classifier`` (same objects, cameras and seed), for the
shapes with a front:
- every miss of each classifier, with its camera and its distance to the nearest bucket cut;
- how many classifiers miss each view (with several), and the accuracy of their ensemble (the
  mean of their probabilities);
- for each view within ``--band`` degrees of a cut, whether its reference render can be told
  from the render mirrored across that cut (the same camera at the same distance on the other
  side), and from the render just across it (``--beyond`` degrees past the cut, the nearest view
  of another bucket: ``view_ambiguity.bucket_hidden``), by the pixel test that calls a pattern
  hidden (``view_ambiguity.indistinguishable``).
"""

from __future__ import annotations

import argparse

import torch
from bench_report import report

from distill3d.eval.teacher_quality import _views, eval_objects, render_views
from distill3d.eval.view_ambiguity import across_cut, bucket_hidden, degrees_to_bucket_cut
from distill3d.world import view_bucket_index
from distill3d.world.vocabulary import SHAPES_WITH_FRONT
from distill3d.world_models.classifier import HEADS, WorldClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", nargs="+", default=["world-classifier"], help="model folders or shipped names")
    parser.add_argument("--count", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--band", type=float, default=180.0, help="degrees from a cut for the mirror tests (180: every view)")
    parser.add_argument("--beyond", type=float, default=0.01, help="degrees past the cut for the nearest other view")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    objects = eval_objects(args.count)
    cams, params = _views(args.count, 64, args.seed, torch.device("cpu"))
    az, el = params["azimuth"], params["elevation"]
    images = render_views(objects, cams)
    front = torch.tensor([o.shape in SHAPES_WITH_FRONT for o in objects])
    truth = view_bucket_index(az, el)
    margin = degrees_to_bucket_cut(az, el)

    probs, per_classifier = [], {}
    for name in args.classifier:
        logp = WorldClassifier.from_pretrained(name, device="cpu").log_probs(images)["bucket"]
        probs.append(logp.exp())
        wrong = front & (logp.argmax(-1) != truth)
        per_classifier[name] = {
            "bucket_accuracy": round(1 - float(wrong.sum() / front.sum()), 4),
            "misses": [{"view": i, "prompt": objects[i].prompt, "azimuth": round(float(az[i]), 2),
                        "elevation": round(float(el[i]), 2), "degrees_to_cut": round(float(margin[i]), 2),
                        "truth": HEADS["bucket"][int(truth[i])], "read_as": HEADS["bucket"][int(logp[i].argmax())]}
                       for i in torch.nonzero(wrong).flatten().tolist()]}
    missed_by = torch.zeros(args.count, dtype=torch.long)
    for result in per_classifier.values():
        missed_by[[m["view"] for m in result["misses"]]] += 1
    ensemble_wrong = front & (torch.stack(probs).mean(0).argmax(-1) != truth)

    near = torch.nonzero(front & (margin < args.band)).flatten()

    near_objects, near_params = [objects[i] for i in near.tolist()], {k: v[near] for k, v in params.items()}

    def summary(alike: torch.Tensor) -> dict:
        return {"alike": int(alike.sum()),
                "within_degrees": {f"{b:g}": {"views": int((margin[near] < b).sum()),
                                              "alike": int((alike & (margin[near] < b)).sum())}
                                   for b in sorted({0.5, 1.0, 2.0, 3.0, 5.0, 10.0, args.band})},
                "alike_views": [int(i) for i in near[alike].tolist()]}

    mirrored = bucket_hidden(near_objects, near_params, images[near], beyond=None)
    just_across = bucket_hidden(near_objects, near_params, images[near], beyond=args.beyond)
    overhead_cut = across_cut(az[near], el[near])[2]
    unreadable = set(near[just_across].tolist())
    report({
        "classifiers": per_classifier,
        "views_missed_by_k_classifiers": {str(k): int(((missed_by == k) & front).sum())
                                          for k in range(1, len(args.classifier) + 1)},
        "ensemble_bucket_accuracy": round(1 - float(ensemble_wrong.sum() / front.sum()), 4),
        "ensemble_misses": int(ensemble_wrong.sum()), "views_with_a_front": int(front.sum()),
        "near_cut_views": {"band_degrees": args.band, "views": int(near.numel()),
                           "at_the_overhead_cut": int(overhead_cut.sum())},
        "mirror_test": summary(mirrored),
        "just_across_test": {"beyond_degrees": args.beyond, **summary(just_across)},
        "misses_alike_just_across": {name: sum(m["view"] in unreadable for m in result["misses"])
                                     for name, result in per_classifier.items()},
    }, args.out)


if __name__ == "__main__":
    main()
