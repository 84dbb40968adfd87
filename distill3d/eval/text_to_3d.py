"""Evaluation of text-to-3D runs against the world's ground truth.

Each asset is rendered on white from ``num_views`` cameras at uniform azimuth (Consistent3D
Sec. 5.3 / B.1: 120 views) and read by the world classifier:

- ``r_precision``: share of views whose most likely prompt among *all* world prompts is the
  run's own (the world's CLIP R-precision; Consistent3D averages it over the views);
- ``shape_accuracy``, ``colour_accuracy``, ``pattern_accuracy``: per-head accuracy over the views.

Agreement with the ground truth compares the renders with reference renders of the prompt's
object at the same cameras. An asset may come out turned about the up axis (+Z); since the
views are uniform in azimuth, turning the asset by ``k * 360 / N`` degrees counter-clockwise
shifts the view index: its view ``i`` shows what the reference shows at view ``i - k``. The
shift ``k`` with the best mean mask IoU is picked (ties: the best PSNR) and ``mask_iou``,
``psnr`` and ``best_rotation_deg`` are reported there; ``mask_iou_unrotated`` and
``psnr_unrotated`` are the figures at ``k = 0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.errors import UserError
from distill3d.metrics import mask_iou, psnr
from distill3d.render.scene import render_scene
from distill3d.render_output import RenderOutput
from distill3d.training.run_dir import CHECKPOINT_NAME, CONFIG_NAME, SUMMARY_NAME, RunDir
from distill3d.training.run_scene import load_run_scene
from distill3d.world.prompts import WorldObject, all_objects, parse_prompt
from distill3d.world.reference_render import render_reference
from distill3d.world_models.classifier import ATTRIBUTES, HEADS, WorldClassifier, prompt_scores

RenderFn = Callable[[Cameras], RenderOutput]
METRICS = ("r_precision", "shape_accuracy", "colour_accuracy", "pattern_accuracy", "mask_iou", "psnr",
           "mask_iou_unrotated", "psnr_unrotated")
"""Figures of one asset that are averaged over runs."""

TEXT_TO_3D = "text-to-3d"
IOU_TIE = 1e-6
"""Rotations whose mean IoU is within this of the best count as tied (then PSNR decides)."""


@dataclass
class TextTo3DEvalConfig:
    """Cameras and thresholds of the evaluation."""

    num_views: int = 120          # Consistent3D Sec. B.1: 120 views at uniform azimuth
    elevation: float = 15.0       # our choice: a slightly raised orbit, as the world's view prompts
    distance: float = 2.6         # our choice: the whole object framed (world objects fit a unit sphere)
    fovy: float = 40.0            # our choice
    resolution: int = 64          # the world classifier's native resolution
    alpha_threshold: float = 0.5  # silhouette of mask IoU
    batch_size: int = 24          # views rendered at once

    def __post_init__(self) -> None:
        for name in ("num_views", "resolution", "batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name)}")


def eval_cameras(config: TextTo3DEvalConfig) -> Cameras:
    """``num_views`` orbit cameras; view i at azimuth i * 360 / N degrees."""
    azimuth = torch.arange(config.num_views, dtype=torch.float32) * (360.0 / config.num_views)
    return orbit_cameras(config.elevation, azimuth, config.distance, config.fovy, config.resolution,
                         config.resolution)


def render_batched(render: RenderFn, cameras: Cameras, batch_size: int) -> RenderOutput:
    """rgb [N, H, W, 3] and alpha [N, H, W, 1] of ``render`` over cameras [N], ``batch_size`` at a time."""
    parts = [render(cameras[s:s + batch_size]) for s in range(0, len(cameras), batch_size)]
    rgb = torch.cat([p.rgb.detach().float() for p in parts])
    alpha = torch.cat([p.alpha.detach().float() for p in parts])
    return RenderOutput(rgb=rgb, alpha=alpha, depth=torch.zeros_like(alpha))


def classifier_scores(classifier: WorldClassifier, images: Tensor, obj: WorldObject) -> dict[str, float]:
    """R-precision over all world prompts and per-attribute accuracy of images [N, H, W, 3]."""
    logp = classifier.log_probs(images)
    best = prompt_scores(logp, all_objects()).argmax(-1)  # [N] index of the most likely world prompt
    scores = {"r_precision": float((best == obj.index).float().mean())}
    for name in ATTRIBUTES:
        truth = HEADS[name].index(getattr(obj, name))
        scores[f"{name}_accuracy"] = float((logp[name].argmax(-1) == truth).float().mean())
    return scores


def shifted(reference: Tensor, k: int) -> Tensor:
    """Reference views [N, ...] as seen by an asset turned by k * 360 / N degrees about +Z: entry i is view i - k."""
    return torch.roll(reference, shifts=k, dims=0)


def rotation_scores(rendered: RenderOutput, reference: RenderOutput,
                    threshold: float) -> tuple[Tensor, Tensor]:
    """Mean mask IoU [N] and mean PSNR [N] of the renders against the reference shifted by k = 0 .. N-1."""
    n = rendered.rgb.shape[0]
    iou = torch.stack([mask_iou(rendered.alpha, shifted(reference.alpha, k), threshold).mean() for k in range(n)])
    db = torch.stack([psnr(rendered.rgb, shifted(reference.rgb, k)).mean() for k in range(n)])
    return iou, db


def best_shift(iou: Tensor, db: Tensor) -> int:
    """The shift with the highest mean IoU; among ties (``IOU_TIE``) the highest PSNR."""
    tied = iou >= iou.max() - IOU_TIE
    return int(torch.where(tied, db, torch.full_like(db, -float("inf"))).argmax())


def signed_degrees(k: int, n: int) -> float:
    """k * 360 / n as an angle in (-180, 180]."""
    deg = (k * 360.0 / n) % 360.0
    return deg - 360.0 if deg > 180.0 else deg


@torch.no_grad()
def evaluate_scene(render: RenderFn, obj: WorldObject, classifier: WorldClassifier, config: TextTo3DEvalConfig,
                   device: torch.device | str = "cpu") -> dict:
    """Classifier scores and agreement with the reference renders of ``obj``.

    ``render(cameras) -> RenderOutput`` renders the asset on a white background.
    """
    cameras = eval_cameras(config).to(device)
    rendered = render_batched(render, cameras, config.batch_size)
    reference = render_batched(lambda c: render_reference(obj, c), cameras, config.batch_size)
    rendered, reference = rendered.to("cpu"), reference.to("cpu")
    metrics = classifier_scores(classifier, rendered.rgb, obj)
    iou, db = rotation_scores(rendered, reference, config.alpha_threshold)
    k = best_shift(iou, db)
    metrics.update(mask_iou=float(iou[k]), psnr=float(db[k]), best_rotation_deg=signed_degrees(k, config.num_views),
                   mask_iou_unrotated=float(iou[0]), psnr_unrotated=float(db[0]), num_views=config.num_views)
    return metrics


# ---------------------------------------------------------------------- run folders
def check_run_folder(run_dir: str | Path) -> RunDir:
    """The run folder of a finished text-to-3d run; UserError naming what is missing otherwise."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder (expected a finished `distill3d text-to-3d` run)")
    missing = [name for name in (CONFIG_NAME, CHECKPOINT_NAME, SUMMARY_NAME) if not (path / name).is_file()]
    if missing:
        raise UserError(f"{path} is not a finished text-to-3d run: no {', '.join(missing)}")
    run = RunDir(path)
    method = run.method()
    if method != TEXT_TO_3D:
        made_by = f"a `distill3d {method}` run" if method else "a run of an older distill3d (no method in config.json)"
        raise UserError(f"{path} is {made_by}, not a text-to-3d run")
    return run


def run_object(run: RunDir) -> WorldObject:
    """The world object named by the run's prompt (summary.json)."""
    summary = json.loads((run.path / SUMMARY_NAME).read_text())
    if "prompt" not in summary:
        raise UserError(f"{run.path} is not a text-to-3d run: its {SUMMARY_NAME} has no prompt")
    try:
        obj, _ = parse_prompt(summary["prompt"])
    except UserError as err:
        raise UserError(f"{run.path}: prompt {summary['prompt']!r} is not a world prompt, so the world "
                        f"cannot score it ({err})") from None
    return obj


@torch.no_grad()
def evaluate_run(run_dir: str | Path, classifier: WorldClassifier, config: TextTo3DEvalConfig,
                 device: torch.device | str = "cpu") -> dict:
    """``evaluate_scene`` on the final checkpoint of a text-to-3d run, with the run's scene settings."""
    run = check_run_folder(run_dir)
    obj = run_object(run)
    run_config = run.read_config()
    scene = load_run_scene(run, torch.device(device))
    metrics = evaluate_scene(lambda c: render_scene(scene, c, background=1.0), obj, classifier, config, device)
    return {"run": str(run.path), "prompt": obj.prompt, "representation": scene.config.representation,
            "guidance": run_config.get("guidance"), "teacher": run_config.get("teacher"),
            "steps": run.checkpoint_step(), **metrics}


def mean_metrics(results: list[dict]) -> dict[str, float]:
    """``METRICS`` averaged over runs."""
    return {name: sum(r[name] for r in results) / len(results) for name in METRICS} if results else {}


__all__ = ["TextTo3DEvalConfig", "eval_cameras", "evaluate_scene", "evaluate_run", "check_run_folder", "run_object",
           "mean_metrics", "METRICS"]
