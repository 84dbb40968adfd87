"""Consistent3D text-to-3D (coarse stage): a NeRF or 3D Gaussians distilled from a text-to-image
teacher with Consistency Distillation Sampling (``CDSLoss``) or SDS (``SDSLoss``).

One step: 12 orbit cameras whose azimuths walk the four quarters of the circle in turn (one
camera uniform inside each quarter, anti-Janus), each with its view-dependent prompt
(", front view", ", side view", ...); renders on white at 64x64, a share of them Lambertian-
shaded under a random light (NeRF only: Gaussians carry no normals); the guidance loss plus,
for the NeRF, the orientation loss and a 2D normal-smoothness loss; Adam.

Run folder (``RunDir``): config.json, checkpoint.safetensors (scene, Adam, camera generator
and the CDS fixed noise eps*), summary.json, the asset (gaussians.ply or mesh.glb) and a
turntable (turntable.mp4 / .gif).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.devices import pick_device
from distill3d.diffusion.guidance_cfg import CfgForm
from distill3d.errors import UserError
from distill3d.guidance import CDSConfig, CDSLoss, SDSConfig, SDSLoss
from distill3d.guidance.cds import JacobianSkip, TimestepSampling
from distill3d.guidance.timestep_schedules import linear_anneal
from distill3d.methods.fit_scenes import FitScene, build_fit_scene, scene_for_checkpoint
from distill3d.methods.step_timer import StepTimer
from distill3d.render.volume import render_volume_with_extras
from distill3d.run_dir import RunDir
from distill3d.world import AMBIENT, VIEW_BUCKETS, parse_prompt, view_bucket_index, view_suffix

Representation = Literal["nerf", "gaussians"]
Guidance = Literal["cds", "sds"]
WORLD_TEACHER = "world"
NUM_AZIMUTH_PARTS = 4  # Consistent3D Sec. B.1: azimuth range split into 4 parts (anti-Janus)
DEFAULT_STEPS = {"nerf": 10000, "gaussians": 2000}
"""Run length N when not given: threestudio's coarse-stage length for the NeRF; for Gaussians our
choice for the world's 64x64 teacher (a default run takes 66 s on one H100 with the teacher
replayed from CUDA graphs, benchmarks/RESULTS.md). The paper gives no step count for its
Gaussians variant (~15 min)."""


@dataclass
class Consistent3DConfig:
    """Settings of ``distill3d text-to-3d``; paper numbers cited, our choices marked as such.

    The guidance scales are the papers' (CDS 50 -> 20, SDS 100), chosen there for Stable
    Diffusion. CDS's gradient follows the paper's "reparameterize ... following Poole et al."
    (``skip_jacobian_of="eps"``, as the authors' code); the other reading of the Jacobian skip
    flips its sign and made every CDS result of our first table fail (guidance/cds.py,
    benchmarks/RESULTS.md). With the world teacher of commit d4f5a66 (since replaced), SDS beats
    CDS on both representations, and cameras at distance 2.5-3.0 (a world object fits the frame)
    lift Gaussians SDS from 0.27 to 0.43 R-precision; the defaults stay the paper's 1.5-2.0
    (benchmarks/RESULTS.md).
    """

    representation: Representation = "nerf"  # Sec. 4.3 coarse NeRF; "gaussians" = the 3DGS variant (Sec. B.3)
    guidance: Guidance = "cds"               # "sds": DreamFusion baseline
    teacher: str = WORLD_TEACHER             # "world" (shipped 64x64 teacher) or a model / diffusers folder
    steps: int | None = None                 # N (Eq. 12); None: DEFAULT_STEPS of the representation
    seed: int = 0
    device: str = "auto"
    # cameras (Sec. B.1; elevation as threestudio's random-camera default)
    cameras_per_step: int = 12               # Sec. B.1: 12 cameras per iteration
    resolution: int = 64                     # Sec. 4.3: 64x64 coarse renders
    fovy_min: float = 30.0                   # Sec. B.1: fovy in [30, 45]
    fovy_max: float = 45.0
    distance_min: float = 1.5                # Sec. B.1: distance in [1.5, 2.0]
    distance_max: float = 2.0
    elevation_min: float = -10.0             # threestudio random camera: elevation in [-10, 45]
    elevation_max: float = 45.0
    # CDS, coarse stage (Sec. 4.3, B.1)
    t_max: float = 0.7
    t_min: float = 0.1
    delta: float = 0.1
    Delta: float = 0.2
    cfg_start: float = 50.0                  # Sec. B.1: CFG 50 -> 20, linear
    cfg_end: float = 20.0
    # the paper's ablations (Sec. 4.4) and the public code's choices (see guidance/cds.py)
    t_sampling: TimestepSampling = "cds"     # Eq. 12; "random" = ablation (a), "predetermined" = (b)
    fixed_noise: bool = True                 # Algorithm 1: one eps* per run; off = ablation (c)
    cfg_form: CfgForm = "standard"           # Eq. 7 form; "code" = cond + s (cond - uncond)
    weight_by: Literal["t2", "t1"] = "t2"    # Eq. 10 lambda(t2); the public code weights by t1
    share_noise_across_views: bool = False   # public code: one noise image for all views
    skip_jacobian_of: JacobianSkip = "eps"   # Sec. 4.2 "follow Poole et al."; "x0" flips the sign (guidance/cds.py)
    sds_guidance_scale: float = 100.0        # DreamFusion Sec. 3 (only with --guidance sds)
    # shading augmentation (Magic3D / DreamFusion): albedo * (ambient + (1 - ambient) max(0, n.l))
    shaded_share: float = 0.8                # Sec. B.1 shading ablation: 80% shaded, 20% colour
    light_ambient: float = AMBIENT           # the world's own ambient term (world/reference_render.py)
    # regularisers (NeRF only; the paper names them without weights)
    orient_weight_start: float = 10.0        # threestudio Magic3D/DreamFusion lambda_orient [0, 10, 1000, 5000]
    orient_weight_end: float = 1000.0
    orient_ramp_steps: int = 5000
    normal_smooth_weight: float = 1000.0     # our choice (2D normal-smoothness; no paper value)
    # optimiser: the paper uses Adan (lr 0.05 grid, 0.005 rest, wd 2e-8); torch has no Adan, so Adam
    grid_lr: float = 0.05                    # Sec. B.1 (hash-grid table)
    mlp_lr: float = 0.005                    # Sec. B.1 (MLPs)
    weight_decay: float = 2e-8               # Sec. B.1
    gaussian_lr_scale: float = 1.0           # multiplies the 3DGS learning rates (Gaussians variant)
    # scene
    num_samples: int = 64                    # samples per ray (our choice, no occupancy grid)
    hash_levels: int = 16                    # threestudio ImplicitVolume (Instant-NGP)
    hash_log2_table: int = 19
    hash_max_resolution: int = 4096
    num_gaussians: int = 20000               # our choice
    # outputs
    profile: bool = False                    # synchronise each step to split its time (render / teacher / backward)
    checkpoint_every: int = 500
    turntable_frames: int = 48
    turntable_resolution: int = 128
    mesh_resolution: int = 128
    mesh_threshold: float = 5.0              # density level of the NeRF mesh (our choice; blob peak is ~10)

    def __post_init__(self) -> None:
        if self.representation not in ("nerf", "gaussians"):
            raise UserError(f"unknown representation '{self.representation}'; choose nerf or gaussians")
        if self.guidance not in ("cds", "sds"):
            raise UserError(f"unknown guidance '{self.guidance}'; choose cds or sds")
        if self.steps is None:
            self.steps = DEFAULT_STEPS[self.representation]
        for name in ("steps", "cameras_per_step", "resolution", "checkpoint_every", "num_samples", "num_gaussians"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive")
        if not 0.0 <= self.shaded_share <= 1.0:
            raise UserError("--shaded-share must lie in [0, 1]")


# ---------------------------------------------------------------------- prompts and teachers
def check_prompt(prompt: str, teacher: str) -> str:
    """The object prompt without a view suffix; raises UserError when the teacher cannot read it."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("empty prompt")
    if teacher != WORLD_TEACHER and not Path(teacher).exists():
        raise UserError(f"teacher {teacher!r} is neither 'world' nor an existing model folder")
    if not is_diffusers_folder(teacher):  # world teachers read only world prompts
        obj, view = parse_prompt(prompt)
        if view is not None:
            raise UserError(f"leave the view out of the prompt ({view!r}): views are added per camera")
        return obj.prompt
    return prompt.strip()


def is_diffusers_folder(teacher: str) -> bool:
    return teacher != WORLD_TEACHER and (Path(teacher) / "model_index.json").exists()


def load_teacher(teacher: str, device: torch.device):
    """The shipped world teacher, a world model folder, or a Stable Diffusion (diffusers) folder."""
    if teacher == WORLD_TEACHER:
        from distill3d.diffusion.world_teachers import DEFAULT_TEXT_TO_IMAGE, WorldTextToImageTeacher
        return WorldTextToImageTeacher.from_pretrained(DEFAULT_TEXT_TO_IMAGE, device=device)
    if is_diffusers_folder(teacher):
        from distill3d.diffusion.stable_diffusion import StableDiffusionTeacher
        return StableDiffusionTeacher.from_folder(teacher, device=device)
    from distill3d.diffusion.world_teachers import WorldTextToImageTeacher
    return WorldTextToImageTeacher.from_pretrained(teacher, device=device)


def view_prompts(prompt: str) -> list[str]:
    """One prompt per view bucket, in ``VIEW_BUCKETS`` order ("..., front view", ...)."""
    return [prompt + view_suffix(bucket) for bucket in VIEW_BUCKETS]


# ---------------------------------------------------------------------- cameras and light
def sample_quadrant_cameras(config: Consistent3DConfig, generator: torch.Generator,
                            resolution: int | None = None) -> tuple[Cameras, dict[str, Tensor]]:
    """``cameras_per_step`` orbit cameras; camera i lies uniformly inside azimuth part i mod 4.

    The parts are the quarters centred on the front (0 deg), the two sides and the back, i.e.
    part k covers [90 k - 45, 90 k + 45), so each part is one view bucket below 60 deg elevation.
    Returns the cameras and their parameters (elevation, azimuth, distance, fovy [B], degrees;
    part [B] long; bucket [B] index into ``VIEW_BUCKETS``).
    """
    n, c = config.cameras_per_step, config
    res = resolution or c.resolution
    part = torch.arange(n) % NUM_AZIMUTH_PARTS
    width = 360.0 / NUM_AZIMUTH_PARTS

    def uni(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    azimuth = part * width - width / 2 + uni(0.0, width)
    azimuth = torch.remainder(azimuth + 180.0, 360.0) - 180.0  # (-180, 180]
    elevation = uni(c.elevation_min, c.elevation_max)
    distance = uni(c.distance_min, c.distance_max)
    fovy = uni(c.fovy_min, c.fovy_max)
    cams = orbit_cameras(elevation, azimuth, distance, fovy, res, res)
    params = {"elevation": elevation, "azimuth": azimuth, "distance": distance, "fovy": fovy,
              "part": part, "bucket": view_bucket_index(azimuth, elevation)}
    return cams, params


def sample_light_directions(cameras: Cameras, generator: torch.Generator) -> Tensor:
    """[B, 3] unit light directions, uniform on the hemisphere on the camera's side of the object."""
    d = F.normalize(torch.randn(len(cameras), 3, generator=generator), dim=-1).to(cameras.c2w)
    towards_camera = F.normalize(cameras.centers, dim=-1)
    flip = (d * towards_camera).sum(-1, keepdim=True) < 0
    return torch.where(flip, -d, d)


def lambertian(albedo_premultiplied: Tensor, normal: Tensor, light: Tensor, ambient: float) -> Tensor:
    """albedo [B, H, W, 3] (times alpha) shaded by ambient + (1 - ambient) max(0, n . l); normal [B, H, W, 3], light [B, 3]."""
    cos = (normal * light[:, None, None, :]).sum(-1, keepdim=True).clamp_min(0.0)
    return albedo_premultiplied * (ambient + (1.0 - ambient) * cos)


# ---------------------------------------------------------------------- regularisers
def orientation_loss(weights: Tensor, normals: Tensor, dirs: Tensor) -> Tensor:
    """Ref-NeRF / DreamFusion orientation loss: mean over rays of sum_i sg(w_i) max(0, n_i . d)^2.

    weights [B, H, W, S], normals [B, H, W, S, 3] (outward), dirs [B, H, W, 3] (camera -> scene).
    """
    facing_away = (normals * dirs[..., None, :]).sum(-1).clamp_min(0.0)
    return (weights.detach() * facing_away.square()).sum(-1).mean()


def normal_smoothness_2d(normal: Tensor, alpha: Tensor) -> Tensor:
    """Mean squared difference of neighbouring rendered normals [B, H, W, 3] (alpha-weighted)."""
    n = normal * alpha
    dy = (n[:, 1:] - n[:, :-1]).square().mean()
    dx = (n[:, :, 1:] - n[:, :, :-1]).square().mean()
    return dx + dy


# ---------------------------------------------------------------------- one step
def build_guidance(config: Consistent3DConfig) -> CDSLoss | SDSLoss:
    if config.guidance == "cds":
        return CDSLoss(CDSConfig(t_max=config.t_max, t_min=config.t_min, delta=config.delta, Delta=config.Delta,
                                 total_steps=config.steps, cfg_start=config.cfg_start, cfg_end=config.cfg_end,
                                 cfg_form=config.cfg_form, weight_by=config.weight_by,
                                 t_sampling=config.t_sampling, fixed_noise=config.fixed_noise,
                                 share_noise_across_views=config.share_noise_across_views,
                                 skip_jacobian_of=config.skip_jacobian_of, seed=config.seed))
    return SDSLoss(SDSConfig(guidance_scale=config.sds_guidance_scale, total_steps=config.steps,
                             cfg_form=config.cfg_form, seed=config.seed))


def render_for_guidance(scene: FitScene, config: Consistent3DConfig, cameras: Cameras, step: int,
                        generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
    """Renders [B, H, W, 3] on white for the teacher, and the regulariser terms (NeRF only)."""
    if scene.is_gaussians:
        return scene.render(cameras, background=1.0, train=True).rgb, {}
    out, extras = render_volume_with_extras(scene.module, cameras, num_samples=scene.num_samples, background=0.0,
                                            stratified=True, generator=generator, compute_normals=True)
    light = sample_light_directions(cameras, generator)
    shaded = (torch.rand(len(cameras), generator=generator) < config.shaded_share).to(out.rgb)[:, None, None, None]
    lit = lambertian(out.rgb, out.normal, light, config.light_ambient)
    rgb = shaded * lit + (1 - shaded) * out.rgb + (1.0 - out.alpha)  # composite over white
    terms = {"orient": orientation_loss(extras.weights, extras.normals, extras.dirs),
             "normal_smooth": normal_smoothness_2d(out.normal, out.alpha)}
    return rgb, terms


def orientation_weight(config: Consistent3DConfig, step: int) -> float:
    return linear_anneal(config.orient_weight_start, config.orient_weight_end, min(step, config.orient_ramp_steps),
                         max(config.orient_ramp_steps, 1))


# ---------------------------------------------------------------------- the run
def text_to_3d(prompt: str, config: Consistent3DConfig, out_dir: str | Path, *, resume: bool = False,
               progress: bool = True) -> dict:
    """Distil ``prompt`` into a 3D asset in ``out_dir``; returns the summary (also summary.json)."""
    object_prompt = check_prompt(prompt, config.teacher)  # before any work or folder
    device = pick_device(config.device)
    teacher = load_teacher(config.teacher, device)
    run = RunDir(out_dir)
    run.prepare(config, resume=resume)
    torch.manual_seed(config.seed)
    resuming = resume and run.has_checkpoint()
    scene = scene_for_checkpoint(config, run, device) if resuming else build_fit_scene(config, device)
    optimizer = torch.optim.Adam(scene.param_groups(config), eps=1e-15, weight_decay=config.weight_decay)
    guidance = build_guidance(config)
    generator = torch.Generator().manual_seed(config.seed)  # cameras, lights, shading choice, ray jitter
    step, elapsed, loss_value = 0, 0.0, None
    if resuming:
        step, extra, tensors = run.load_checkpoint(scene.modules(), {"adam": optimizer}, device=device)
        elapsed, loss_value = float(extra.get("seconds", 0.0)), extra.get("loss")
        generator.set_state(tensors["generator"].cpu())
        if isinstance(guidance, CDSLoss) and "cds_fixed_noise" in tensors:
            guidance.fixed_noise_tensor = tensors["cds_fixed_noise"].cpu().float()
    conds = teacher.encode_prompt(view_prompts(object_prompt))  # one per view bucket
    bar = tqdm(total=config.steps, initial=step, desc=f"consistent3d {config.representation}/{config.guidance}",
               disable=not progress, dynamic_ncols=True)
    start = time.perf_counter() - elapsed
    stats: dict[str, float] = {}
    timer = StepTimer(device, config.profile)
    while step < config.steps:
        timer.start()
        cameras, params = sample_quadrant_cameras(config, generator)
        cameras = cameras.to(device)
        images, terms = render_for_guidance(scene, config, cameras, step, generator)
        timer.lap("render")
        cond = conds.select(params["bucket"].to(device))
        loss, stats = guidance(images, teacher, cond, step)
        timer.lap("teacher")
        if terms:
            loss = loss + orientation_weight(config, step) * terms["orient"] \
                + config.normal_smooth_weight * terms["normal_smooth"]
            stats.update({k: float(v.detach()) for k, v in terms.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timer.lap("backward")
        step += 1
        loss_value = float(loss.detach())
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4g}")
        if step % config.checkpoint_every == 0 or step == config.steps:
            save_checkpoint(run, step, scene, optimizer, generator, guidance,
                            {"seconds": time.perf_counter() - start, "loss": loss_value})
    bar.close()
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {
        "prompt": object_prompt, "representation": config.representation, "guidance": config.guidance,
        "teacher": config.teacher, "steps": step, "seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / max(step, 1), 4), "device": str(device), "final_loss": loss_value,
        "final_stats": stats, "view_prompts": view_prompts(object_prompt),
    }
    if config.profile:  # render: forward render; teacher: the guidance loss (teacher calls); backward: + Adam
        summary["seconds_per_step_split"] = timer.means()
    run.write_summary(summary)
    try:
        summary["outputs"] = {k: str(v) for k, v in export_asset(scene, config, run.path).items()}
    except UserError as err:  # e.g. a field with no surface yet: the run itself is kept
        summary["outputs"] = {"error": str(err)}
        print(f"distill3d: warning: export failed: {err}", file=sys.stderr)
    run.write_summary(summary)
    return summary


def export_asset(scene: FitScene, config: Consistent3DConfig, out_dir: Path) -> dict[str, Path]:
    """gaussians.ply, or mesh.glb at ``mesh_threshold``; then the turntable (FitScene's export)."""
    asset = "ply" if scene.is_gaussians else "glb"
    videos = ("mp4", "gif") if config.turntable_frames > 0 else ()
    return scene.export(out_dir, config, (asset,) + videos)


def save_checkpoint(run: RunDir, step: int, scene: FitScene, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, guidance: CDSLoss | SDSLoss, extra: dict) -> None:
    """Atomic checkpoint with the scene, Adam, the generator state and the CDS fixed noise eps*."""
    tensors = {"generator": generator.get_state()}
    if isinstance(guidance, CDSLoss) and guidance.fixed_noise_tensor is not None:
        tensors["cds_fixed_noise"] = guidance.fixed_noise_tensor
    run.save_checkpoint(step, scene.modules(), {"adam": optimizer}, extra_tensors=tensors, extra=extra)


__all__ = ["Consistent3DConfig", "text_to_3d", "check_prompt", "load_teacher", "view_prompts",
           "sample_quadrant_cameras", "sample_light_directions", "lambertian", "orientation_loss",
           "normal_smoothness_2d", "build_guidance",
           "is_diffusers_folder"]
