"""Quality of the world classifier and teachers, measured on held-out objects only.

- ``evaluate_classifier``: attribute accuracy on reference renders of held-out objects
  (target: >= 98% for shape, colour, pattern and the view bucket of shapes with a front, each on
  all views: ``classifier_passed``), also on the views where the pattern can be seen and for the
  view bucket away from its cuts and where it can be seen (``view_ambiguity``).
- ``evaluate_text_to_image``: 50-step DDIM samples of held-out view prompts, read by the
  classifier (targets: shape >= 95%, colour >= 95%, pattern >= 85%; the view bucket is
  reported for shapes with a front). The classifier's accuracy on reference renders of the
  same prompts and cameras is reported beside it (``reference_*``) as the ceiling.
- ``evaluate_multiview``: PSNR / SSIM of the K target views of deterministic 50-step DDIM
  against reference renders of the same held-out object at the same cameras (targets:
  >= 20 dB, >= 0.85), also per shape.

Views are framed so that the whole object is seen (``EVAL_VIEWS``); objects are taken
round robin over ``heldout_objects()``, cameras from a seeded generator, so results repeat.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from distill3d.cameras import Cameras
from distill3d.eval.view_ambiguity import BUCKET_MARGIN_DEG, bucket_hidden, degrees_to_bucket_cut, pattern_hidden
from distill3d.metrics import psnr, ssim
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects, train_objects
from distill3d.world.views import view_bucket_index, view_prompt
from distill3d.world.vocabulary import SHAPES_WITH_FRONT
from distill3d.world_models.classifier import ATTRIBUTES, HEADS, WorldClassifier
from distill3d.world_models.multiview_cameras import sample_multiview_groups, split_groups
from distill3d.world_models.render_pool import ViewCameras
from distill3d.world_models.teachers import WorldMultiViewTeacher, WorldTextToImageTeacher

EVAL_VIEWS = ViewCameras(distance_range=(2.0, 3.0), fovy_range=(35.0, 45.0))
"""Cameras of the evaluations: the training elevations, distances at which objects are framed."""

CLASSIFIER_TARGET = 0.98
TEXT_TO_IMAGE_TARGETS = {"shape": 0.95, "colour": 0.95, "pattern": 0.85}
MULTIVIEW_TARGETS = {"psnr": 20.0, "ssim": 0.85}


def eval_objects(count: int, split: str = "heldout") -> list[WorldObject]:
    """``count`` objects of ``split``: held-out ones round robin, or training ones (to measure a
    generalisation gap) evenly spaced over the 228 when ``count`` is smaller, else round robin."""
    if split not in ("heldout", "train"):
        raise ValueError(f"split must be 'heldout' or 'train', got {split!r}")
    objects = heldout_objects() if split == "heldout" else train_objects()
    if split == "train" and count < len(objects):
        return [objects[i * len(objects) // count] for i in range(count)]
    return [objects[i % len(objects)] for i in range(count)]


def render_views(objects: list[WorldObject], cameras: Cameras, batch_size: int = 256) -> Tensor:
    """Reference renders [N, H, W, 3] of objects [N] at cameras [N] (on the cameras' device)."""
    out = [render_reference(objects[s:s + batch_size], cameras[s:s + batch_size]).rgb
           for s in range(0, len(objects), batch_size)]
    return torch.cat(out)


def _accuracies(logp: dict[str, Tensor], objects: list[WorldObject], buckets: Tensor) -> dict:
    """Accuracy per attribute and of the view bucket, and ``shape_errors``: {"<prompt> -> <read as>": count},
    from the classifier's ``log_probs`` of the views of ``objects``."""
    out = {}
    for name in ATTRIBUTES:
        truth = torch.tensor([HEADS[name].index(getattr(o, name)) for o in objects], device=logp[name].device)
        out[f"{name}_accuracy"] = float((logp[name].argmax(-1) == truth).float().mean())
    read_as = [HEADS["shape"][int(i)] for i in logp["shape"].argmax(-1)]
    out["shape_errors"] = dict(Counter(f"{o.prompt} -> {r}" for o, r in zip(objects, read_as) if r != o.shape)
                               .most_common())
    front = torch.tensor([o.shape in SHAPES_WITH_FRONT for o in objects], device=logp["bucket"].device)
    hits = (logp["bucket"].argmax(-1) == buckets.to(logp["bucket"].device)) & front
    out["bucket_accuracy_front_shapes"] = float(hits.sum() / front.sum().clamp_min(1))
    return out


def _views(count: int, resolution: int, seed: int, device: torch.device) -> tuple[Cameras, dict]:
    cams, params = EVAL_VIEWS.sample(count, resolution, torch.Generator().manual_seed(seed))
    return cams.to(device), params


def classifier_passed(metrics: dict) -> bool:
    """Every attribute and the view bucket (shapes with a front) at ``CLASSIFIER_TARGET`` or above, on all views."""
    keys = [f"{a}_accuracy" for a in ATTRIBUTES] + ["bucket_accuracy_front_shapes"]
    return all(metrics[k] >= CLASSIFIER_TARGET for k in keys)


@torch.no_grad()
def evaluate_classifier(classifier: WorldClassifier, count: int = 2048, seed: int = 0) -> dict:
    """Accuracy of the classifier on ``count`` reference renders of held-out objects."""
    objects = eval_objects(count)
    cams, params = _views(count, classifier.config.resolution, seed, classifier.device)
    images = render_views(objects, cams)
    buckets = view_bucket_index(params["azimuth"], params["elevation"])
    logp = classifier.log_probs(images)
    metrics = _accuracies(logp, objects, buckets)
    metrics.update(count=count, seed=seed, target=CLASSIFIER_TARGET, passed=classifier_passed(metrics))
    metrics.update(_clear_view_accuracies(logp, images, objects, cams, params, buckets))
    return metrics


def _clear_view_accuracies(logp: dict[str, Tensor], images: Tensor, objects: list[WorldObject], cams: Cameras,
                           params: dict, buckets: Tensor) -> dict:
    """Pattern accuracy on the views where the pattern can be seen; bucket accuracy on the views at
    least ``BUCKET_MARGIN_DEG`` from a bucket cut, and on the views whose bucket can be seen
    (``view_ambiguity``); bucket misses by degrees to the nearest cut; from the classifier's
    ``log_probs`` of ``images``; reported beside, not instead of, the figures on all views."""
    logp = {name: v.cpu() for name, v in logp.items()}
    pattern_right = logp["pattern"].argmax(-1) == torch.tensor([HEADS["pattern"].index(o.pattern) for o in objects])
    hidden = pattern_hidden(objects, cams, images)
    front = torch.tensor([o.shape in SHAPES_WITH_FRONT for o in objects])
    to_cut = degrees_to_bucket_cut(params["azimuth"], params["elevation"]).cpu()
    clear = front & (to_cut >= BUCKET_MARGIN_DEG)
    readable = front & ~bucket_hidden(objects, params, images)
    bucket_right = logp["bucket"].argmax(-1) == buckets.cpu()
    return {"pattern_hidden_views": int(hidden.sum()),
            "pattern_accuracy_where_visible": float(pattern_right[~hidden].float().mean()),
            "bucket_clear_views": int(clear.sum()), "bucket_margin_degrees": BUCKET_MARGIN_DEG,
            "bucket_accuracy_clear_views": float(bucket_right[clear].float().mean()) if clear.any() else None,
            "bucket_hidden_views": int((front & ~readable).sum()),
            "bucket_accuracy_where_visible": float(bucket_right[readable].float().mean()) if readable.any() else None,
            "bucket_misses_by_degrees_to_cut": bucket_misses_by_degrees(to_cut[front], bucket_right[front])}


CUT_DISTANCE_BINS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 180.0)
"""Degrees from the nearest bucket cut at which bucket misses are counted."""


def bucket_misses_by_degrees(to_cut: Tensor, right: Tensor) -> dict[str, dict[str, int]]:
    """Views and bucket misses per band of degrees to the nearest cut (``CUT_DISTANCE_BINS``).

    to_cut: [N] degrees; right: [N] bool. Keys "0-0.5", ..., "10-180" -> {"views", "misses"}. Band
    "lo-hi" holds the views more than lo and at most hi degrees from a cut; the first also those at 0."""
    bins = torch.tensor(CUT_DISTANCE_BINS, dtype=to_cut.dtype)
    band = (torch.bucketize(to_cut, bins) - 1).clamp(0, len(bins) - 2)
    return {f"{lo:g}-{hi:g}": {"views": int((band == i).sum()), "misses": int((~right[band == i]).sum())}
            for i, (lo, hi) in enumerate(zip(CUT_DISTANCE_BINS[:-1], CUT_DISTANCE_BINS[1:]))}


def save_grid(images: Tensor, path: str | Path, columns: int = 8) -> Path:
    """Write images [N, H, W, 3] in [0, 1] as one PNG grid."""
    n, h, w, _ = images.shape
    rows = math.ceil(n / columns)
    grid = np.ones((rows * h, min(n, columns) * w, 3), dtype=np.uint8) * 255
    arr = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    for i in range(n):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = arr[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


@torch.no_grad()
def evaluate_text_to_image(teacher: WorldTextToImageTeacher, classifier: WorldClassifier, count: int = 512,
                           seed: int = 0, guidance_scale: float | None = None, num_steps: int = 50,
                           batch_size: int = 128, samples_png: str | Path | None = None,
                           progress: bool = True) -> dict:
    """Classifier accuracy on DDIM samples of ``count`` held-out view prompts."""
    objects = eval_objects(count)
    cams, params = _views(count, teacher.native_image_size, seed, teacher.device)
    prompts = view_prompt(objects, params["azimuth"], params["elevation"])
    buckets = view_bucket_index(params["azimuth"], params["elevation"])
    generator = torch.Generator(device=teacher.device).manual_seed(seed)
    samples = torch.cat([teacher.sample(prompts[s:s + batch_size], num_steps=num_steps, guidance_scale=guidance_scale,
                                        generator=generator)
                         for s in tqdm(range(0, count, batch_size), desc="sampling", disable=not progress)])
    metrics = _accuracies(classifier.log_probs(samples), objects, buckets)
    reference = _accuracies(classifier.log_probs(render_views(objects, cams)), objects, buckets)
    metrics.update({f"reference_{k}": v for k, v in reference.items()})
    metrics.update(count=count, seed=seed, num_steps=num_steps,
                   guidance_scale=teacher.default_guidance_scale if guidance_scale is None else guidance_scale,
                   targets=TEXT_TO_IMAGE_TARGETS,
                   passed=all(metrics[f"{a}_accuracy"] >= v for a, v in TEXT_TO_IMAGE_TARGETS.items()))
    if samples_png is not None:
        save_grid(samples[:64], samples_png)
    return metrics


@torch.no_grad()
def multiview_eval_groups(teacher: WorldMultiViewTeacher, count: int = 256,
                          seed: int = 0) -> tuple[list[WorldObject], Cameras]:
    """The held-out objects [count] and cameras [count * (1 + K)] (input first) of ``evaluate_multiview``."""
    layout = replace(teacher.config.cameras, num_views=teacher.num_views)
    cams, _ = sample_multiview_groups(count, teacher.native_image_size, layout, torch.Generator().manual_seed(seed))
    return eval_objects(count), cams


def multiview_eval_groups_of_shapes(teacher: WorldMultiViewTeacher, shapes: Sequence[str],
                                    count: int) -> tuple[list[WorldObject], Cameras]:
    """The first ``count`` of the evaluation's 256 groups whose object has one of ``shapes``:
    objects [n] and cameras [n * (1 + K)] (input first), n <= count."""
    K = teacher.num_views
    objects, cams = multiview_eval_groups(teacher, 256, 0)
    chosen = [i for i, o in enumerate(objects) if o.shape in shapes][:count]
    rows = torch.tensor([i * (K + 1) + j for i in chosen for j in range(K + 1)], dtype=torch.long)
    return [objects[i] for i in chosen], cams[rows]


def figures_per_shape(objects: list[WorldObject], psnrs: Tensor, ssims: Tensor) -> dict[str, dict[str, float]]:
    """Mean PSNR and SSIM per shape, from per-view figures [N, K] of objects [N]."""
    shapes = sorted({o.shape for o in objects})
    rows = {name: torch.tensor([o.shape == name for o in objects]) for name in shapes}
    return {"psnr_per_shape": {name: float(psnrs[m].mean()) for name, m in rows.items()},
            "ssim_per_shape": {name: float(ssims[m].mean()) for name, m in rows.items()}}


def evaluate_multiview(teacher: WorldMultiViewTeacher, count: int = 256, seed: int = 0,
                       guidance_scale: float | None = None, num_steps: int = 50, batch_size: int = 32,
                       samples_png: str | Path | None = None, progress: bool = True) -> dict:
    """PSNR / SSIM of the teacher's target views against reference renders, ``count`` held-out groups."""
    R, K = teacher.native_image_size, teacher.num_views
    objects, cams = multiview_eval_groups(teacher, count, seed)
    cams = cams.to(teacher.device)
    rendered = render_views([o for o in objects for _ in range(K + 1)], cams).reshape(count, K + 1, R, R, 3)
    inputs, targets = split_groups(cams, K)
    generator = torch.Generator(device=teacher.device).manual_seed(seed)
    outputs = []
    for s in tqdm(range(0, count, batch_size), desc="sampling", disable=not progress):
        e = min(count, s + batch_size)
        cond = teacher.encode_condition(rendered[s:e, 0], inputs[s:e], targets[s * K:e * K])
        outputs.append(teacher.sample(cond, num_steps=num_steps, guidance_scale=guidance_scale, generator=generator))
    views = torch.cat(outputs)  # [count, K, R, R, 3]
    truth = rendered[:, 1:]
    p = psnr(views.reshape(-1, R, R, 3), truth.reshape(-1, R, R, 3)).reshape(count, K)
    s = ssim(views.reshape(-1, R, R, 3), truth.reshape(-1, R, R, 3)).reshape(count, K)
    metrics = {"psnr": float(p.mean()), "ssim": float(s.mean()), "psnr_per_view": p.mean(0).tolist(),
               "ssim_per_view": s.mean(0).tolist(), **figures_per_shape(objects, p, s), "count": count,
               "num_views": K, "seed": seed, "num_steps": num_steps,
               "guidance_scale": teacher.default_guidance_scale if guidance_scale is None else guidance_scale,
               "targets": MULTIVIEW_TARGETS}
    metrics["passed"] = metrics["psnr"] >= MULTIVIEW_TARGETS["psnr"] and metrics["ssim"] >= MULTIVIEW_TARGETS["ssim"]
    if samples_png is not None:
        n = min(count, 8)
        rows = torch.cat([rendered[:n, :1], views[:n], rendered[:n, :1] * 0 + 1, truth[:n]], dim=1)
        save_grid(rows.reshape(-1, R, R, 3), samples_png, columns=2 * K + 2)
    return metrics
