"""The ceiling of the text-to-3D table: the world's reference renders scored as if they were an asset.

A perfect asset of a prompt renders exactly as the reference, so its mask IoU is 1 and its PSNR
infinite; its world R-precision and attribute accuracies are what the classifier reads off the
reference renders at the evaluation cameras (120 views, ``TextTo3DEvalConfig``). This script
measures those on the table's prompts, so the table's figures can be read against them:

    python benchmarks/text_to_3d_ceiling.py --prompts 16 --out benchmarks/results/text_to_3d_ceiling_cpu.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from consistent3d_table import table_prompts  # noqa: E402

from distill3d.eval.text_to_3d import (METRICS, TextTo3DEvalConfig, classifier_scores, eval_cameras,  # noqa: E402
                                       render_batched)
from distill3d.world.prompts import parse_prompt  # noqa: E402
from distill3d.world.reference_render import render_reference  # noqa: E402
from distill3d.world_models.classifier import WorldClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--classifier", default="world-classifier")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    config = TextTo3DEvalConfig()
    classifier = WorldClassifier.from_pretrained(args.classifier, device=torch.device(args.device))
    cameras = eval_cameras(config).to(args.device)
    per_prompt = {}
    for prompt in table_prompts(args.prompts):
        obj, _ = parse_prompt(prompt)
        with torch.no_grad():
            reference = render_batched(lambda c: render_reference(obj, c), cameras, config.batch_size).to("cpu")
            per_prompt[prompt] = classifier_scores(classifier, reference.rgb, obj)
        print(prompt, per_prompt[prompt], flush=True)
    names = [m for m in METRICS if m in next(iter(per_prompt.values()))]
    mean = {m: sum(s[m] for s in per_prompt.values()) / len(per_prompt) for m in names}
    result = {"classifier": args.classifier, "num_views": config.num_views, "mean": mean, "per_prompt": per_prompt}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(mean, indent=2))


if __name__ == "__main__":
    main()
