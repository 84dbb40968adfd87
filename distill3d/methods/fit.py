"""Multi-view reconstruction: fit a voxel grid, hash-grid NeRF or 3D Gaussians to posed images.

The plainest use of the shared parts, and the building block that HoloFusion's distillation
and Consistent3D's refinement reuse: photometric loss between renders and images at their
cameras, on the shared optimisation loop (resume, checkpoints, NaN guard, export), scored on
held-out views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from distill3d.cameras import Cameras
from distill3d.data.co3d import open_multiview_dataset
from distill3d.data.layout import sample_cameras
from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.export.scene import ExportConfig, export_scene
from distill3d.metrics import mask_iou, psnr, ssim
from distill3d.render.scene import render_scene
from distill3d.scene.factory import (Scene, SceneConfig, SceneOptimConfig, build_scene, scene_like_checkpoint,
                                     scene_optimizer)
from distill3d.scene.hash_grid import HashGridConfig
from distill3d.scene.voxel_grid import VoxelGridConfig
from distill3d.training.run_dir import RunDir
from distill3d.training.scene_loop import LoopConfig, SceneJob, finish_run, run_loop

METHOD = "fit"


@dataclass
class FitConfig:
    """Settings of ``distill3d fit`` (our defaults for 64x64 world objects; none comes from a paper)."""

    data: str                                # a multi-view data set (``distill3d world dataset multiview``) or CO3D folder
    item: int = 0                            # which sequence of the data set
    heldout_views: int = 8                   # the last frames of the sequence, never trained on, scored at the end
    steps: int = 2000                        # optimisation steps
    views_per_step: int = 4                  # training views rendered per step
    seed: int = 0                            # seed of the scene's start and of the views picked each step
    device: str = "auto"                     # auto: cuda when available, else cpu
    background: float = 1.0                  # background grey level (world data sets are rendered on white)
    alpha_weight: float = 0.1                # weight of the mask (alpha) MSE beside the colour MSE
    scene: SceneConfig = field(default_factory=lambda: SceneConfig(
        representation="gaussians", num_samples=96, voxels=VoxelGridConfig(resolution=48, feature_dim=16),
        nerf=HashGridConfig(num_levels=12, log2_table_size=16, max_resolution=512)))
    optim: SceneOptimConfig = field(default_factory=SceneOptimConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(checkpoint_every=250))
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "views_per_step"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.item < 0 or self.heldout_views < 0:
            raise UserError("--item and --heldout-views must not be negative")


def load_views(config: FitConfig) -> tuple[torch.Tensor, Cameras, torch.Tensor, Cameras, str]:
    """Training and held-out RGBA images [V, H, W, 4] with their cameras, and the item's prompt/name."""
    data = Path(config.data)
    if not data.exists():
        raise UserError(f"data set {data} does not exist; write one with "
                        "'distill3d world dataset multiview --out DIR --count 1 --views 40'")
    dataset = open_multiview_dataset(data, background=config.background)
    if not 0 <= config.item < len(dataset):
        raise UserError(f"--item {config.item} is out of range: {data} holds {len(dataset)} sequences")
    sample = dataset[config.item]
    images, cams = sample["images"], sample_cameras(sample)
    n = images.shape[0]
    if not 0 <= config.heldout_views < n:
        raise UserError(f"--heldout-views {config.heldout_views} leaves no training view of {n}")
    split = n - config.heldout_views
    return images[:split], cams[:split], images[split:], cams[split:], sample.get("prompt") or sample["name"]


@torch.no_grad()
def evaluate(scene: Scene, images: torch.Tensor, cameras: Cameras, background: float,
             batch: int = 4) -> dict[str, float]:
    """PSNR / SSIM of rgb and IoU of alpha on the given views (no stochastic sampling)."""
    if len(cameras) == 0:
        return {}
    rgb, alpha = [], []
    for s in range(0, len(cameras), batch):
        out = render_scene(scene, cameras[s:s + batch].to(scene.device), background=background, train=False)
        rgb.append(out.rgb.float().cpu())
        alpha.append(out.alpha.float().cpu())
    rgb, alpha = torch.cat(rgb).clamp(0, 1), torch.cat(alpha)
    return {"psnr": psnr(rgb, images[..., :3]).mean().item(),
            "ssim": ssim(rgb, images[..., :3]).mean().item(),
            "mask_iou": mask_iou(alpha, images[..., 3:]).mean().item()}


def fit(config: FitConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Run a reconstruction into ``out_dir``; returns the summary (also written to summary.json)."""
    run = RunDir(out_dir)
    run.check(method=METHOD, resume=resume)  # the folder, then the data, before anything is written
    train_images, train_cams, test_images, test_cams, label = load_views(config)
    resuming = run.prepare(config, method=METHOD, resume=resume)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    scene = (scene_like_checkpoint(config.scene, run.checkpoint_shapes(), device, config.seed) if resuming
             else build_scene(config.scene, device, config.seed))
    generator = torch.Generator().manual_seed(config.seed)  # picks the training views of each step
    images, cams = train_images.to(device), train_cams.to(device)

    def step(i: int, timer) -> tuple[torch.Tensor, dict[str, float]]:
        idx = torch.randperm(len(cams), generator=generator)[:config.views_per_step].to(device)
        target = images[idx]
        out = render_scene(scene, cams[idx], background=config.background, train=True)
        loss = F.mse_loss(out.rgb, target[..., :3]) + config.alpha_weight * F.mse_loss(out.alpha, target[..., 3:])
        return loss, {}

    job = SceneJob(scene.modules(), scene_optimizer(scene, config.optim), step,
                   state_tensors=lambda: {"view_generator": generator.get_state()},
                   load_state_tensors=lambda t: generator.set_state(t["view_generator"].cpu()))
    result = run_loop(run, job, steps=config.steps, config=config.loop, resuming=resuming, device=device,
                      desc=f"fit {config.scene.representation}", progress=progress)
    summary = {
        "label": label, "representation": config.scene.representation, "steps": result.step,
        "seconds": round(result.seconds, 2), "device": str(device), "final_loss": result.loss,
        "train_views": len(train_cams), "heldout_views": len(test_cams), "resolution": train_cams.width,
        "heldout": evaluate(scene, test_images, test_cams, config.background),
        "train": evaluate(scene, train_images[:8], train_cams[:8], config.background),
    }
    return finish_run(run, summary, lambda: export_scene(scene, run.path, config.export))
