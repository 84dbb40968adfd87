"""Image-to-3D quality on held-out world objects (the DD3G issue's measure; the paper's Sec. IV-B uses
PSNR / SSIM / LPIPS over 12 views of GSO objects).

Per held-out object (round robin over the held-out list), a group of cameras is drawn as the multi-view
teacher's groups are (``multiview_eval_groups``): the input view is rendered exactly and given to the
student with its true camera, so the Gaussians come back in the world frame. They are then compared with
the reference renders at:
- 12 novel views: azimuths every 30 degrees from the input's plus 15, elevation uniform in [0, 30]
  degrees, the input's distance and fovy: PSNR, SSIM, mask IoU and the perceptual distance;
- the teacher's K output views: PSNR, and with ``teacher_steps`` the teacher's own PSNR at the same views
  from the same input (the "within 1 dB of the teacher" comparison);
- a 120-view turntable at elevation 15: the classifier's attribute accuracy and R-precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.eval.perceptual import PerceptualDistance
from distill3d.eval.teacher_quality import eval_objects, render_views
from distill3d.eval.text_to_3d import classifier_scores
from distill3d.methods.dd3g.infer import predict_gaussians
from distill3d.methods.dd3g.student import PEPDStudent
from distill3d.metrics import mask_iou, psnr, ssim
from distill3d.render.splat import render_gaussian_batch
from distill3d.world.reference_render import render_reference
from distill3d.world_models.classifier import WorldClassifier
from distill3d.world_models.multiview_cameras import MultiViewGroupCameras, sample_multiview_groups, split_groups
from distill3d.world_models.teachers import WorldMultiViewTeacher


@dataclass
class ImageTo3DEvalConfig:
    """What ``evaluate_student`` measures."""

    count: int = 64                 # held-out objects (round robin over the held-out list)
    seed: int = 0                   # cameras and noise
    novel_views: int = 12           # DD3G Sec. IV-B: 12 views
    turntable_views: int = 120      # views read by the classifier
    batch_size: int = 16            # objects at once
    teacher_steps: int | None = None  # DDIM steps of the teacher's own views (50 as collected); none: skip
    split: str = "heldout"          # "train": the same figures on training objects (the generalisation gap)


def novel_view_cameras(params: Tensor, count: int, resolution: int, generator: torch.Generator) -> Cameras:
    """``count`` views per object [B * count]: azimuth input + 15 + 360 k / count, elevation uniform in
    [0, 30], the input camera's distance and fovy (params [B, 1 + K, 4])."""
    B = params.shape[0]
    k = torch.arange(count, dtype=torch.float32)
    azimuth = params[:, :1, 1] + 15.0 + k * (360.0 / count)
    elevation = 30.0 * torch.rand(B, count, generator=generator)
    distance, fovy = params[:, :1, 2].expand(B, count), params[:, :1, 3].expand(B, count)
    return orbit_cameras(elevation.reshape(-1), azimuth.reshape(-1), distance.reshape(-1), fovy.reshape(-1),
                         resolution, resolution)


def _per_object(values: Tensor, B: int) -> Tensor:
    return values.reshape(B, -1).mean(dim=1)


@torch.no_grad()
def evaluate_student(student: PEPDStudent, classifier: WorldClassifier, perceptual: PerceptualDistance,
                     config: ImageTo3DEvalConfig, teacher: WorldMultiViewTeacher | None = None) -> dict:
    """Figures over ``config.count`` held-out objects: means, and per object (module docstring)."""
    device = next(student.parameters()).device
    R, K = student.config.image_size, student.config.num_views
    layout = MultiViewGroupCameras(num_views=K)
    generator = torch.Generator().manual_seed(config.seed)
    objects = eval_objects(config.count, config.split)
    turntable_az = torch.arange(config.turntable_views, dtype=torch.float32) * (360.0 / config.turntable_views)
    rows: list[dict] = []
    for s in range(0, config.count, config.batch_size):
        batch = objects[s:s + config.batch_size]
        B = len(batch)
        cams, p = sample_multiview_groups(B, R, layout, generator)
        params = torch.stack([p[k] for k in ("elevation", "azimuth", "distance", "fovy")], dim=-1)  # [B, 1+K, 4]
        inputs, targets = split_groups(cams, K)
        images = render_views(batch, inputs.to(device))
        gaussians = predict_gaussians(student, images, params, generator)

        def compare(views: Cameras, repeat: int) -> tuple[Tensor, Tensor]:
            out = render_gaussian_batch(gaussians, views.to(device))
            ref = render_reference([o for o in batch for _ in range(repeat)], views.to(device))
            return out, ref

        novel, novel_ref = compare(novel_view_cameras(params, config.novel_views, R, generator), config.novel_views)
        at_targets, target_ref = compare(targets, K)
        figures = {
            "psnr": _per_object(psnr(novel.rgb, novel_ref.rgb), B),
            "ssim": _per_object(ssim(novel.rgb, novel_ref.rgb), B),
            "mask_iou": _per_object(mask_iou(novel.alpha, novel_ref.alpha), B),
            "perceptual": _per_object(perceptual(novel.rgb.clamp(0, 1), novel_ref.rgb), B),
            "psnr_teacher_views": _per_object(psnr(at_targets.rgb, target_ref.rgb), B),
        }
        if teacher is not None and config.teacher_steps:
            cond = teacher.encode_condition(images, inputs, targets)
            views = teacher.sample(cond, num_steps=config.teacher_steps, generator=torch.Generator(
                device=teacher.device).manual_seed(config.seed + s))
            figures["teacher_psnr_teacher_views"] = _per_object(psnr(views.reshape(-1, R, R, 3), target_ref.rgb), B)
        for i, obj in enumerate(batch):
            table = orbit_cameras(torch.full_like(turntable_az, 15.0), turntable_az + params[i, 0, 1],
                                  float(params[i, 0, 2]), float(params[i, 0, 3]), R, R).to(device)
            one = type(gaussians)(**{k: v[i:i + 1] for k, v in gaussians.tensors().items()})
            scores = classifier_scores(classifier, render_gaussian_batch(one, table).rgb.clamp(0, 1), obj)
            rows.append({"prompt": obj.prompt, **{k: float(v[i]) for k, v in figures.items()}, **scores})
    keys = [k for k in rows[0] if k != "prompt"]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    return {"mean": mean, "objects": rows, "count": len(rows), "config": config.__dict__}


__all__ = ["ImageTo3DEvalConfig", "evaluate_student", "novel_view_cameras"]
