"""HoloFusion's distillation of super-resolved views into one finer grid (HoloFusion Sec. 3.3.2).

For a coarse sample (V_0 [d, S, S, S] and the decoder eta of the 3D model):

1. the fine grid V_0^H [d, S', S', S'] is the trilinear upsampling of V_0 and eta' a copy of eta
   ("V_0^H is initialized by trilinearly upsampling ... eta' is initialized using ... eta");
2. ``num_cameras`` cameras at uniform azimuths on the object's equator (elevation 0); each renders
   the coarse field at the low resolution h, and D_beta draws K = 5 super-resolved samples of every
   render: the bank I_C [n, K, H, W, 3] (H = scale h), drawn once and fixed for the whole run;
3. each step renders ``views_per_step`` of the cameras from the fine field at H x H and minimises the
   top-k patch-remix loss (Eq. 8 per 16x16 patch, ``distill3d.guidance.patch_remix``) with Adam,
   lr 2e-4, over V_0^H and eta'.

The ablations of Tab. 1 / Fig. 5 are switches of ``DistillConfig.loss``: ``mse`` (K = 1, the plain
photometric loss to one sample per camera) and ``sds`` (SDS from D_beta conditioned on the coarse
render of the camera, no bank). HoloDiffusion* (per-view D_beta output, not 3D consistent) is
``holodiffusion_star_views``.

The run is the shared per-scene loop (``training.scene_loop``): a run folder with config.json (the
config, the fine grid's ``SceneConfig`` and a checksum of the coarse sample), checkpoints holding the
fine field, Adam, the random streams and the bank (a resumed run does not redraw it), summary.json
and, at the end, the asset and a turntable (``export``), so that ``distill3d export RUN`` reads it
like any voxel run.
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.configs import config_to_dict
from distill3d.data.multiview import FOVY_DEG, FRAMING_DISTANCE
from distill3d.devices import pick_device
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.errors import UserError
from distill3d.export.scene import ExportConfig, export_scene
from distill3d.guidance.patch_remix import patch_remix_loss
from distill3d.guidance.sds import SDSConfig, SDSLoss
from distill3d.methods.holofusion.super_resolution import (
    SuperResolutionNet,
    SuperResolutionTeacher,
    super_resolve,
    to_model_space,
)
from distill3d.render.volume import render_volume
from distill3d.scene.factory import Scene, SceneConfig
from distill3d.scene.voxel_grid import VoxelRadianceField
from distill3d.training.run_dir import RunDir
from distill3d.training.scene_loop import LoopConfig, SceneJob, finish_run, run_loop

__all__ = [
    "METHOD",
    "PAPER_STEPS",
    "DistillConfig",
    "build_bank",
    "coarse_checksum",
    "distill_cameras",
    "distill_sample",
    "holodiffusion_star_views",
    "render_views",
]

METHOD = "holofusion-distill"
PAPER_STEPS = 25_000
"""HoloFusion Sec. 3.3.2: "Adam (lr = 2e-4) for 25K steps" (about 30 minutes per sample)."""

DistillLoss = Literal["patch_remix", "mse", "sds"]


@dataclass
class DistillConfig:
    """Settings of the distillation of one sample (HoloFusion Sec. 3.3.2; paper numbers cited, ours marked).

    ``steps``: the paper's 25K steps take ~30 minutes. At the defaults (S = 32 -> S' = 63, d = 32, 4 views of
    64 x 64 px, 64 samples a ray) a patch-remix step took 13.8 ms on one H200 and the bank of 32 x 5 samples
    1.4 s (benchmarks/RESULTS.md, HoloFusion speed), so the world default of 5000 steps (~71 s) keeps a
    sample under the target of 3 minutes with the export; in 2000 steps the bank loss fell from 1.8e-3 to
    3.9e-4 on a world object. ``--steps 25000`` is the paper's.
    """

    loss: DistillLoss = "patch_remix"   # patch_remix (HoloFusion), mse (K = 1 ablation) or sds (SDS from D_beta)
    bank_size: int = 5                  # K super-resolved samples per camera (HoloFusion Sec. 3.3.2: 5)
    patch_size: int = 16                # side of the remixed patches in pixels (HoloFusion Sec. 3.3.2: 16x16)
    # S' of the fine grid; none: 2 S - 1, which nests the coarse cells in the fine ones, so that the
    # trilinear upsampling is exactly the coarse field (the paper: S' > S, no value given)
    fine_resolution: int | None = None
    lr: float = 2e-4                    # Adam's learning rate on V_0^H and eta' (HoloFusion Sec. 3.3.2: 2e-4)
    steps: int = 5000                   # optimisation steps (HoloFusion Sec. 3.3.2: 25000; ours, see above)
    num_cameras: int = 32               # cameras at uniform azimuths (ours; the paper's example is ~100 views)
    elevation: float = 0.0              # camera elevation in degrees (HoloFusion Sec. 3.3.2: the object's equator)
    distance: float = FRAMING_DISTANCE  # camera distance (the world's data set framing)
    fovy: float = FOVY_DEG              # vertical field of view in degrees (the world's data set framing)
    low_resolution: int = 32            # size of the coarse renders fed to D_beta (the 3D model's image size)
    views_per_step: int = 4             # cameras rendered per step (ours; the paper does not say)
    num_samples: int = 64               # samples per ray of the volume renderer
    background: float = 1.0             # background grey level (world data sets are rendered on white)
    sampling_steps: int | None = None   # DDIM steps of D_beta for the bank; none: the model's sampling_steps
    sr_batch_size: int = 80             # images per D_beta call while drawing the bank
    # HoloFusion (SDS): DreamFusion's t range and weight; guidance 1 as D_beta has no unconditional mode
    sds: SDSConfig = field(default_factory=lambda: SDSConfig(guidance_scale=1.0))
    seed: int = 0                       # seed of the bank, the cameras of each step and the ray jitter
    device: str = "auto"                # auto: cuda when available, else cpu
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(checkpoint_every=500))
    export: ExportConfig = field(default_factory=ExportConfig)

    def __post_init__(self) -> None:
        if self.loss not in ("patch_remix", "mse", "sds"):
            raise UserError(f"unknown distillation loss '{self.loss}'; choose patch_remix, mse or sds")
        for name in ("bank_size", "patch_size", "steps", "num_cameras", "low_resolution", "views_per_step",
                     "num_samples", "sr_batch_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if self.lr <= 0:
            raise UserError("--lr must be positive")
        if self.fine_resolution is not None and self.fine_resolution < 2:
            raise UserError("--fine-resolution must be at least 2")

    @property
    def samples_per_camera(self) -> int:
        """K of the bank: ``bank_size``, 1 for the MSE ablation, 0 for SDS (no bank)."""
        return {"patch_remix": self.bank_size, "mse": 1, "sds": 0}[self.loss]


def distill_cameras(config: DistillConfig, resolution: int) -> Cameras:
    """``num_cameras`` cameras [n] at azimuths 360 i / n on the circle of ``elevation``, ``resolution`` pixels."""
    n = config.num_cameras
    azimuth = torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return orbit_cameras(config.elevation, azimuth, config.distance, config.fovy, resolution, resolution)


@torch.no_grad()
def render_views(field: VoxelRadianceField, cameras: Cameras, *, num_samples: int, background: float,
                 batch: int = 8) -> Tensor:
    """Evaluation renders (bin centres, no normals) of ``field`` -> rgb [N, H, W, 3] on its device."""
    device = field.features.device
    out = [render_volume(field, cameras[s:s + batch].to(device), num_samples=num_samples, background=background,
                         stratified=False, compute_normals=False).rgb for s in range(0, len(cameras), batch)]
    return torch.cat(out).clamp(0, 1)


def build_bank(low_res: Tensor, sr_net: SuperResolutionNet, schedule: NoiseSchedule, samples_per_camera: int, *,
               num_steps: int | None, generator: torch.Generator | None, batch_size: int | None = None) -> Tensor:
    """The bank I_C: K samples of D_beta for each low-res render [n, h, w, 3] -> [n, K, H, W, 3] in [0, 1]
    (HoloFusion Sec. 3.3.2). Sample k of camera i is row i K + k of one ``super_resolve`` call."""
    n, K = low_res.shape[0], samples_per_camera
    samples = super_resolve(sr_net, schedule, low_res.repeat_interleave(K, dim=0), num_steps, generator,
                            batch_size=batch_size)
    return samples.reshape(n, K, *samples.shape[1:])


def coarse_checksum(coarse: VoxelRadianceField) -> str:
    """sha256 (16 hex digits) of the coarse grid and decoder: a resumed run must start from the same sample."""
    digest = hashlib.sha256()
    tensors = {"features": coarse.features, **{f"decoder.{k}": v for k, v in coarse.decoder.state_dict().items()}}
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _fine_scene_config(coarse: VoxelRadianceField, config: DistillConfig, resolution: int) -> SceneConfig:
    """The ``SceneConfig`` of the fine field (written to config.json, so that ``load_run_scene`` rebuilds it)."""
    decoder = coarse.decoder
    voxels = replace(coarse.config, resolution=resolution, feature_dim=decoder.feature_dim,
                     density_bias=decoder.density_bias)
    return SceneConfig(representation="voxels", num_samples=config.num_samples, voxels=voxels)


def _frozen_copy(coarse: VoxelRadianceField, device: torch.device) -> VoxelRadianceField:
    """The coarse sample on ``device``, detached (the caller's field is not moved or changed)."""
    decoder = copy.deepcopy(coarse.decoder).to(device).requires_grad_(False)
    return VoxelRadianceField.from_features(coarse.features.detach().to(device), decoder, coarse.config)


def _fine_field(coarse: VoxelRadianceField, resolution: int, device: torch.device) -> VoxelRadianceField:
    """V_0^H = trilinear upsampling of V_0, eta' a trainable copy of eta (HoloFusion Sec. 3.3.2)."""
    fine = coarse.upsampled(resolution, copy_decoder=True).to(device)
    for parameter in fine.parameters():
        parameter.requires_grad_(True)
    return fine


def distill_sample(coarse: VoxelRadianceField, sr_net: SuperResolutionNet | None, schedule: NoiseSchedule | None,
                   config: DistillConfig, out_dir: str | Path | None = None, *, resume: bool = False,
                   bank: Tensor | None = None, progress: bool = True) -> VoxelRadianceField:
    """Distil one coarse sample into a finer grid (HoloFusion Sec. 3.3.2); returns the fine field (eval mode).

    coarse: the 3D model's sample (grid V_0 [d, S, S, S] and decoder eta), left unchanged.
    sr_net, schedule: D_beta and its ``sr_schedule`` (may be None when ``bank`` is given and the loss is
        not sds). The high resolution is ``low_resolution * sr_net.config.scale``.
    out_dir: the run folder (config, checkpoints, summary.json, export); None: a temporary folder,
        removed at the end, and no export.
    bank: [num_cameras, K, H, W, 3] in [0, 1] to use instead of drawing one from D_beta (K = 1 for mse).
    """
    if out_dir is None:
        with tempfile.TemporaryDirectory(prefix="holofusion-distill-") as tmp:
            return _distill(coarse, sr_net, schedule, config, Path(tmp), resume=False, bank=bank,
                            progress=progress, export=False)
    return _distill(coarse, sr_net, schedule, config, Path(out_dir), resume=resume, bank=bank, progress=progress,
                    export=True)


def _high_resolution(config: DistillConfig, sr_net: SuperResolutionNet | None, bank: Tensor | None) -> int:
    if sr_net is not None:
        return config.low_resolution * sr_net.config.scale
    if bank is None:
        raise UserError("distillation needs the super-resolution model or a bank of images")
    return int(bank.shape[2])


def _distill(coarse: VoxelRadianceField, sr_net: SuperResolutionNet | None, schedule: NoiseSchedule | None,
             config: DistillConfig, out_dir: Path, *, resume: bool, bank: Tensor | None, progress: bool,
             export: bool) -> VoxelRadianceField:
    K = config.samples_per_camera
    if (sr_net is None or schedule is None) and (bank is None or config.loss == "sds"):
        raise UserError(f"the {config.loss} distillation needs the super-resolution model and its schedule")
    resolution = _high_resolution(config, sr_net, bank)
    if bank is not None and tuple(bank.shape) != (config.num_cameras, K, resolution, resolution, 3):
        raise UserError(f"the bank must be [{config.num_cameras}, {K}, {resolution}, {resolution}, 3] for "
                        f"{config.loss}, got {list(bank.shape)}")
    S = coarse.config.resolution
    fine_resolution = config.fine_resolution or 2 * S - 1
    if fine_resolution < S:
        raise UserError(f"--fine-resolution {fine_resolution} is below the coarse grid's {S}")
    scene_config = _fine_scene_config(coarse, config, fine_resolution)

    run = RunDir(out_dir)
    record = {**config_to_dict(config), "scene": config_to_dict(scene_config), "coarse": coarse_checksum(coarse),
              "coarse_resolution": S, "resolution": resolution}
    resuming = run.prepare(record, method=METHOD, resume=resume)
    device = pick_device(config.device)
    coarse = _frozen_copy(coarse, device)
    fine = _fine_field(coarse, fine_resolution, device)

    cams_high = distill_cameras(config, resolution).to(device)
    cams_low = cams_high.resized(config.low_resolution, config.low_resolution)
    view_generator = torch.Generator().manual_seed(config.seed)                     # cameras of each step
    ray_generator = torch.Generator(device=device).manual_seed(config.seed + 1)    # stratified ray jitter
    state: dict[str, Tensor] = {}
    bank_seconds = 0.0

    low_res = render_views(coarse, cams_low, num_samples=config.num_samples, background=config.background)
    if K and not resuming:
        start = time.perf_counter()
        if bank is None:
            bank_generator = torch.Generator(device=device).manual_seed(config.seed + 2)
            bank = build_bank(low_res, sr_net, schedule, K, num_steps=config.sampling_steps,
                              generator=bank_generator, batch_size=config.sr_batch_size)
        state["bank"] = bank.to(device, torch.float32)
        bank_seconds = time.perf_counter() - start
    if "bank" in state:
        state["start_loss"] = torch.tensor(_bank_loss(fine, cams_high, state["bank"], config))

    sds, sr_teacher, low_cond = None, None, None
    if config.loss == "sds":
        sds = SDSLoss(config.sds, total_steps=config.steps, seed=config.seed)
        sr_teacher = SuperResolutionTeacher(sr_net, schedule, native_image_size=resolution)
        low_cond = to_model_space(low_res)                                          # [n, 3, h, w] in [-1, 1]
    optimizer = torch.optim.Adam(fine.parameters(), lr=config.lr)                   # HoloFusion Sec. 3.3.2

    def step(i: int, timer) -> tuple[Tensor, dict[str, float]]:
        idx = torch.randperm(config.num_cameras, generator=view_generator)[:config.views_per_step].to(device)
        render = render_volume(fine, cams_high[idx], num_samples=config.num_samples, background=config.background,
                               stratified=True, generator=ray_generator, compute_normals=False).rgb
        timer.lap("render")
        if sds is not None:
            return sds(render, sr_teacher, low_cond[idx], i)                         # HoloFusion (SDS)
        return patch_remix_loss(render, state["bank"][idx], config.patch_size)      # HoloFusion Eq. 8

    def state_tensors() -> dict[str, Tensor]:
        return {"view_generator": view_generator.get_state(), "ray_generator": ray_generator.get_state(), **state}

    def load_state_tensors(tensors: dict[str, Tensor]) -> None:
        view_generator.set_state(tensors["view_generator"].cpu())
        ray_generator.set_state(tensors["ray_generator"].cpu())
        state.update({k: tensors[k].to(device) for k in ("bank", "start_loss") if k in tensors})

    fine.train()
    job = SceneJob({"scene": fine}, optimizer, step, state_tensors, load_state_tensors)
    result = run_loop(run, job, steps=config.steps, config=config.loop, resuming=resuming, device=device,
                      desc=f"holofusion distill/{config.loss}", progress=progress)
    fine.eval()
    summary = {
        "loss": config.loss, "steps": result.step, "seconds": round(result.seconds, 2),
        "bank_seconds": round(bank_seconds, 2), "seconds_per_step": round(result.seconds / max(result.step, 1), 4),
        "device": str(device), "final_loss": result.loss, "final_stats": result.stats,
        "coarse_resolution": S, "fine_resolution": fine_resolution, "resolution": resolution,
        "cameras": config.num_cameras, "samples_per_camera": K,
        # the loss of Eq. 8 (per patch; MSE for K = 1) on every camera at bin centres, before and after
        "bank_loss_start": float(state["start_loss"]) if "start_loss" in state else None,
        "bank_loss_end": _bank_loss(fine, cams_high, state.get("bank"), config),
    }
    if export:
        finish_run(run, summary, lambda: export_scene(Scene(scene_config, fine), run.path, config.export))
    else:
        run.write_summary(summary)
    return fine


def _bank_loss(field: VoxelRadianceField, cameras: Cameras, bank: Tensor | None, config: DistillConfig) -> float | None:
    """Eq. 8 (patch remix, or MSE for K = 1) of the field's renders at every camera against the bank."""
    if bank is None:
        return None
    renders = render_views(field, cameras, num_samples=config.num_samples, background=config.background)
    return float(patch_remix_loss(renders, bank, config.patch_size)[0])


@torch.no_grad()
def holodiffusion_star_views(coarse: VoxelRadianceField, sr_net: SuperResolutionNet, schedule: NoiseSchedule,
                             cameras: Cameras, *, num_samples: int = 64, background: float = 1.0,
                             num_steps: int | None = None, generator: torch.Generator | None = None,
                             batch_size: int | None = None) -> Tensor:
    """HoloDiffusion* (HoloFusion Tab. 1): D_beta's output for each view of the coarse sample, drawn
    independently per view (not 3D consistent) -> [N, H, W, 3] in [0, 1].

    ``cameras`` [N] give the output size H x W; the coarse field is rendered at (H / scale, W / scale).
    """
    scale = sr_net.config.scale
    if cameras.width % scale or cameras.height % scale:
        raise UserError(f"HoloDiffusion* views of {cameras.width}x{cameras.height} are not a x{scale} upsampling")
    low = render_views(coarse, cameras.resized(cameras.width // scale, cameras.height // scale),
                       num_samples=num_samples, background=background)
    return super_resolve(sr_net, schedule, low, num_steps, generator, batch_size=batch_size)
