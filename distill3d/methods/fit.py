"""Multi-view reconstruction: fit a voxel grid, hash-grid NeRF or 3D Gaussians to posed images.

The plainest use of the scene and render parts, and the building block that HoloFusion's
distillation and Consistent3D's refinement reuse: photometric loss between renders and
images at their cameras, Adam, periodic atomic checkpoints, ``resume``, held-out evaluation.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from distill3d.cameras import Cameras
from distill3d.data.layout import sample_cameras
from distill3d.data.multiview import MultiviewDataset
from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.eval.metrics import mask_iou, psnr, ssim
from distill3d.methods.fit_scenes import REPRESENTATIONS, FitScene, build_fit_scene, scene_for_checkpoint
from distill3d.run_dir import RunDir
from distill3d.scene.mesh_extraction import DEFAULT_DENSITY_THRESHOLD

Representation = Literal["voxels", "nerf", "gaussians"]


@dataclass
class FitConfig:
    """Settings of ``distill3d fit`` (our defaults for 64x64 world objects; none comes from a paper)."""

    data: str                                # a multi-view data set (``distill3d world dataset multiview``)
    representation: Representation = "gaussians"
    item: int = 0                            # which sequence of the data set
    heldout_views: int = 8                   # the last frames are never trained on
    steps: int = 2000
    views_per_step: int = 4
    seed: int = 0
    device: str = "auto"                     # auto: cuda when available
    background: float = 1.0                  # world data sets are rendered on white
    alpha_weight: float = 0.1                # weight of the mask (alpha) MSE beside the colour MSE
    checkpoint_every: int = 250
    # volume scenes
    num_samples: int = 96                    # samples per ray inside the scene box
    voxel_resolution: int = 48
    voxel_features: int = 16
    hash_levels: int = 12
    hash_log2_table: int = 16
    hash_max_resolution: int = 512
    grid_lr: float = 1e-2                    # voxel features / hash table
    mlp_lr: float = 1e-3
    # Gaussians
    num_gaussians: int = 20000
    gaussian_lr_scale: float = 1.0           # multiplies the 3DGS learning rates
    # outputs
    turntable_frames: int = 48               # 0: no turntable videos
    turntable_resolution: int = 128
    mesh_resolution: int = 128
    mesh_threshold: float = DEFAULT_DENSITY_THRESHOLD  # density level of the exported surface

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise UserError(f"unknown representation '{self.representation}'; choose one of "
                            f"{', '.join(REPRESENTATIONS)}")
        for name in ("steps", "views_per_step", "checkpoint_every", "num_samples", "num_gaussians"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")


def load_views(config: FitConfig) -> tuple[torch.Tensor, Cameras, torch.Tensor, Cameras, str]:
    """Training and held-out RGBA images [V, H, W, 4] with their cameras, and the item's prompt/name."""
    data = Path(config.data)
    if not data.exists():
        raise UserError(f"data set {data} does not exist; write one with "
                        "'distill3d world dataset multiview --out DIR --count 1 --views 40'")
    dataset = MultiviewDataset(data, background=config.background)
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
def evaluate(scene: FitScene, images: torch.Tensor, cameras: Cameras, background: float,
             batch: int = 4) -> dict[str, float]:
    """PSNR / SSIM of rgb and IoU of alpha on the given views (no stochastic sampling)."""
    if len(cameras) == 0:
        return {}
    device = scene.device
    rgb, alpha = [], []
    for s in range(0, len(cameras), batch):
        out = scene.render(cameras[s:s + batch].to(device), background=background, train=False)
        rgb.append(out.rgb.float().cpu())
        alpha.append(out.alpha.float().cpu())
    rgb, alpha = torch.cat(rgb).clamp(0, 1), torch.cat(alpha)
    return {"psnr": psnr(rgb, images[..., :3]).mean().item(),
            "ssim": ssim(rgb, images[..., :3]).mean().item(),
            "mask_iou": mask_iou(alpha, images[..., 3:]).mean().item()}


def fit(config: FitConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Run a reconstruction into ``out_dir``; returns the summary (also written to summary.json)."""
    run = RunDir(out_dir)
    train_images, train_cams, test_images, test_cams, label = load_views(config)
    run.prepare(config, resume=resume)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    resuming = resume and run.has_checkpoint()
    scene = scene_for_checkpoint(config, run, device) if resuming else build_fit_scene(config, device)
    optimizer = torch.optim.Adam(scene.param_groups(config), eps=1e-15)
    step, elapsed = 0, 0.0
    generator = torch.Generator().manual_seed(config.seed)  # picks the training views of each step
    if resuming:
        step, extra, tensors = run.load_checkpoint(scene.modules(), {"adam": optimizer}, device=device)
        elapsed = float(extra.get("seconds", 0.0))
        generator.set_state(tensors["view_generator"].cpu())
    images_dev = train_images.to(device)
    cams_dev = train_cams.to(device)
    bar = tqdm(total=config.steps, initial=step, desc=f"fit {config.representation}", disable=not progress,
               dynamic_ncols=True)
    start = time.perf_counter() - elapsed
    loss_value = extra.get("loss") if resuming else None
    while step < config.steps:
        idx = torch.randperm(len(cams_dev), generator=generator)[:config.views_per_step].to(device)
        target = images_dev[idx]
        out = scene.render(cams_dev[idx], background=config.background, train=True)
        loss = torch.nn.functional.mse_loss(out.rgb, target[..., :3]) \
            + config.alpha_weight * torch.nn.functional.mse_loss(out.alpha, target[..., 3:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        loss_value = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            run.save_checkpoint(step, scene.modules(), {"adam": optimizer},
                                extra_tensors={"view_generator": generator.get_state()},
                                extra={"seconds": time.perf_counter() - start, "loss": loss_value})
    bar.close()
    seconds = time.perf_counter() - start

    summary = {
        "label": label, "representation": config.representation, "steps": step,
        "seconds": round(seconds, 2), "device": str(device), "final_loss": loss_value,
        "train_views": len(train_cams), "heldout_views": len(test_cams), "resolution": train_cams.width,
        "heldout": evaluate(scene, test_images, test_cams, config.background),
        "train": evaluate(scene, train_images[:8], train_cams[:8], config.background),
    }
    run.write_summary(summary)
    try:
        summary["outputs"] = {k: str(v) for k, v in scene.export(run.path, config).items()}
    except UserError as err:  # e.g. a field with no surface yet: the run itself is kept
        summary["outputs"] = {"error": str(err)}
        print(f"distill3d: warning: export failed: {err}", file=sys.stderr)
    run.write_summary(summary)
    return summary
