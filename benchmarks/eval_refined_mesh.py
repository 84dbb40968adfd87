"""Score refined meshes (``distill3d text-to-3d-refine`` runs) as ``distill3d eval text-to-3d`` scores
coarse runs: world R-precision and attribute accuracy over 120 views, mask IoU and PSNR against the
reference renders of the prompt's object.

    python benchmarks/eval_refined_mesh.py REFINE_RUN [REFINE_RUN ...] --out refined.json --strips

``--strips`` writes strip.png into each run: 8 views of the coarse NeRF (top), the refined mesh and the
exact object (bottom), at 45 degree steps.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from distill3d.devices import pick_device
from distill3d.eval.teacher_quality import save_grid
from distill3d.eval.text_to_3d import TextTo3DEvalConfig, evaluate_scene
from distill3d.export.scene import TURNTABLE_DISTANCE
from distill3d.export.video import render_frames, turntable_cameras
from distill3d.methods.mesh_refine import load_refined
from distill3d.render.mesh import render_mesh
from distill3d.render.scene import render_scene
from distill3d.training.run_dir import RunDir
from distill3d.training.run_scene import load_run_scene
from distill3d.world.reference_render import render_reference
from distill3d.world.prompts import parse_prompt
from distill3d.world_models.classifier import WorldClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--strips", action="store_true")
    args = parser.parse_args()
    device = pick_device(args.device)
    classifier = WorldClassifier.from_pretrained("world-classifier", device=device)
    results = []
    for run_dir in args.runs:
        prompt = json.loads((Path(run_dir) / "config.json").read_text())["prompt"]
        verts, faces, colour = load_refined(run_dir, device)
        with torch.no_grad():
            metrics = evaluate_scene(lambda c: render_mesh(verts, faces, c, color_fn=colour, background=1.0),
                                     parse_prompt(prompt)[0], classifier, TextTo3DEvalConfig(), device)
        results.append({"run": run_dir, "prompt": prompt, "faces": int(faces.shape[0]), **metrics})
        if args.strips:
            coarse = load_run_scene(RunDir(json.loads((Path(run_dir) / "config.json").read_text())["coarse_run"]),
                                    device)
            cams = turntable_cameras(8, resolution=128, distance=TURNTABLE_DISTANCE).to(device)
            with torch.no_grad():
                rows = [render_frames(lambda c: render_scene(coarse, c, background=1.0), cams),
                        render_frames(lambda c: render_mesh(verts, faces, c, color_fn=colour, background=1.0), cams),
                        render_frames(lambda c: render_reference(parse_prompt(prompt)[0], c), cams)]
            images = torch.from_numpy(np.concatenate(rows)).float() / 255.0
            save_grid(images, Path(run_dir) / "strip.png", columns=8)
        print(json.dumps(results[-1]))
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
