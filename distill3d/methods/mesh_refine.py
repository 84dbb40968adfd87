"""Consistent3D's mesh refinement stage (Sec. 4.3): the coarse NeRF of a ``text-to-3d`` run becomes a
DMTet mesh, refined by guidance at the teacher's resolution and exported as a textured mesh.

"We convert the neural field into Signed Distance Field (SDF) by subtracting it with a fixed
threshold and then optimizing a high-resolution DMTet. We also initialize the volume texture field
directly with the color field from the coarse stage. In addition, we use normal consistency loss
and Laplacian smoothness loss. In the refinement stage, we render 512x512 images and set
t_max = 0.5, t_min = 0.02, delta = 0.1, and Delta = 0.1."

- Geometry: ``DMTet.init_from_density`` sets SDF = threshold - density of the coarse field at the
  grid's vertices; marching tetrahedra gives a mesh differentiable in the SDF and the offsets.
- Texture: the coarse NeRF itself, queried at the visible surface points (its hash grid and MLP go
  on learning at the coarse stage's rates).
- Each step renders ``cameras_per_step`` views at the teacher's native resolution (the paper's 512
  for Stable Diffusion, 64 for the world's teacher), a share of them Lambertian-shaded under a
  random light, and adds the guidance loss (the coarse run's kind: CDS with Sec. 4.3's refinement
  times, or SDS with t in [0.02, 0.5]) and the mesh regularisers (the authors' refine config:
  normal consistency 100, Laplacian smoothness 100).
- The run folder holds config.json (with the coarse run's folder and prompt), checkpoints,
  summary.json, mesh.glb and mesh.obj (+ .mtl, .png: UV-unwrapped by xatlas, the colour field baked
  into a texture) and a turntable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
from torch import Tensor

from distill3d.camera_sampling import OrbitCameraConfig, sample_quadrant_cameras, view_prompts
from distill3d.configs import config_from_dict, config_to_dict
from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.export.scene import TURNTABLE_DISTANCE
from distill3d.export.textured_mesh import textured_mesh, write_textured_mesh
from distill3d.export.video import render_frames, turntable_cameras, write_video
from distill3d.guidance import CDSConfig, SDSConfig
from distill3d.guidance.factory import build_guidance, guidance_state, load_guidance_state
from distill3d.render.mesh import render_mesh
from distill3d.render.shading import ShadingConfig, shade_and_composite
from distill3d.scene.dmtet import DMTet, DMTetConfig
from distill3d.scene.mesh_losses import MeshRegularisersConfig, mesh_regularisers
from distill3d.teacher_loading import load_teacher
from distill3d.training.run_dir import SUMMARY_NAME, RunDir
from distill3d.training.run_scene import load_run_scene
from distill3d.training.scene_loop import LoopConfig, SceneJob, finish_run, run_loop

METHOD = "text-to-3d-refine"
COARSE_METHOD = "text-to-3d"


@dataclass
class MeshRefineConfig:
    """Settings of ``distill3d text-to-3d-refine``: Consistent3D Sec. 4.3's numbers, the authors' refine config's
    where the paper gives none."""

    guidance: Literal["coarse", "cds", "sds"] = "coarse"  # cds, sds, or coarse: the coarse run's
    steps: int = 1000                     # refinement steps (the authors' refine config: 3000 at 512x512)
    seed: int = 0                         # seed of the cameras, lights and noise
    device: str = "auto"                  # auto: cuda when available, else cpu
    resolution: int | None = None         # render size; none: the teacher's native size (Sec. 4.3: 512 for SD)
    # the density level that becomes the surface (SDF = threshold - density): the coarse run's mesh level
    threshold: float = 5.0
    dmtet: DMTetConfig = field(default_factory=DMTetConfig)
    cameras: OrbitCameraConfig = field(default_factory=OrbitCameraConfig)
    # Sec. 4.3 refinement: t2 from 0.5 to 0.02, delta = Delta = 0.1 (the authors' gap reading, guidance/cds.py)
    cds: CDSConfig = field(default_factory=lambda: CDSConfig(t_max=0.5, t_min=0.02, gap_min=0.1, gap_max=0.1,
                                                              gap_form="code"))
    sds: SDSConfig = field(default_factory=lambda: SDSConfig(t_min=0.02, t_max=0.5))  # Magic3D's fine stage range
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    regularisers: MeshRegularisersConfig = field(default_factory=MeshRegularisersConfig)
    geometry_lr: float = 0.01             # Adam on the SDF values and offsets (the authors' refine config: 0.01)
    texture_grid_lr: float = 0.05         # the colour field's hash grid (the coarse stage's rate)
    texture_mlp_lr: float = 0.005         # the colour field's MLPs
    texture_size: int = 1024              # side of the exported texture image
    turntable_frames: int = 48            # frames of turntable.mp4 / .gif; 0: no turntable
    loop: LoopConfig = field(default_factory=LoopConfig)

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise UserError("--steps must be positive")
        if self.resolution is not None and self.resolution <= 0:
            raise UserError("--resolution must be positive")
        if self.texture_size < 16 or self.turntable_frames < 0:
            raise UserError("--texture-size must be at least 16 and --turntable-frames not negative")


def read_coarse_run(path: str | Path) -> tuple[RunDir, dict, str]:
    """The coarse run (a finished NeRF ``text-to-3d`` folder), its config and its prompt; UserError otherwise."""
    run = RunDir(path)
    if not run.path.is_dir() or not (run.path / "config.json").is_file():
        raise UserError(f"{run.path} is not a run folder (expected a finished `distill3d text-to-3d` NeRF run)")
    config = run.read_config()
    if config.get("method") != COARSE_METHOD:
        raise UserError(f"{run.path} is a `distill3d {config.get('method', 'unknown')}` run, not a text-to-3d run")
    if config.get("scene", {}).get("representation") != "nerf":
        raise UserError(f"{run.path} optimised {config['scene'].get('representation')}; mesh refinement starts "
                        "from a NeRF run (--representation nerf)")
    summary = run.path / SUMMARY_NAME
    if run.usable_checkpoint() is None or not summary.is_file():
        raise UserError(f"{run.path} has not finished; resume it first (distill3d text-to-3d ... --resume)")
    return run, config, config["prompt"]


def refine_mesh(coarse_dir: str | Path, config: MeshRefineConfig, out_dir: str | Path, *, resume: bool = False,
                progress: bool = True) -> dict:
    """Refine the coarse NeRF of ``coarse_dir`` into a textured mesh in ``out_dir``; returns the summary."""
    coarse, coarse_config, prompt = read_coarse_run(coarse_dir)  # before any work or folder
    kind = coarse_config.get("guidance", "sds") if config.guidance == "coarse" else config.guidance
    run = RunDir(out_dir)
    resuming = run.prepare({"coarse_run": str(Path(coarse_dir).resolve()), "prompt": prompt,
                            **config_to_dict(config)}, method=METHOD, resume=resume)
    device = pick_device(config.device)
    teacher = load_teacher(coarse_config.get("teacher", "world"), device)
    texture = load_run_scene(coarse, device).module.train().requires_grad_(True)
    dmtet = DMTet(config.dmtet).to(device)
    if not resuming:
        dmtet.init_from_density(texture, config.threshold)
    resolution = config.resolution or int(teacher.native_image_size)
    optimizer = torch.optim.Adam([
        {"params": list(dmtet.parameters()), "lr": config.geometry_lr, "name": "geometry"},
        {"params": [texture.encoding.table], "lr": config.texture_grid_lr, "name": "texture_grid"},
        {"params": [p for n, p in texture.named_parameters() if not n.startswith("encoding.")],
         "lr": config.texture_mlp_lr, "name": "texture_mlp"}], eps=1e-15)
    guidance = build_guidance(kind, config.cds, config.sds, total_steps=config.steps, seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    conds = teacher.encode_prompt(view_prompts(prompt))
    weights = config.regularisers

    def colour(points: Tensor) -> Tensor:
        return texture.query(points)[1]

    def step(i: int, timer) -> tuple[Tensor, dict[str, float]]:
        cameras, params = sample_quadrant_cameras(config.cameras, generator, resolution=resolution)
        cameras = cameras.to(device)
        verts, faces = dmtet.mesh()
        if faces.shape[0] == 0:
            raise UserError(f"the mesh of the coarse run at density {config.threshold} is empty; lower --threshold")
        out = render_mesh(verts, faces, cameras, color_fn=colour, background=0.0)
        images = shade_and_composite(out, cameras, config.shading, generator, background=1.0)  # over white
        timer.lap("render")
        loss, stats = guidance(images, teacher, conds.select(params["bucket"].to(device)), i)
        timer.lap("teacher")
        terms = mesh_regularisers(verts, faces)
        loss = loss + weights.normal_consistency * terms["normal_consistency"] \
            + weights.laplacian_smoothness * terms["laplacian_smoothness"]
        stats.update({k: float(v.detach()) for k, v in terms.items()}, faces=float(faces.shape[0]))
        return loss, stats

    def state_tensors() -> dict[str, Tensor]:
        return {"generator": generator.get_state(), **guidance_state(guidance)}

    def load_state_tensors(tensors: dict[str, Tensor]) -> None:
        generator.set_state(tensors["generator"].cpu())
        load_guidance_state(guidance, tensors)

    job = SceneJob({"dmtet": dmtet, "texture": texture}, optimizer, step, state_tensors, load_state_tensors)
    result = run_loop(run, job, steps=config.steps, config=config.loop, resuming=resuming, device=device,
                      desc=f"refine mesh/{kind}", progress=progress)
    summary = {"prompt": prompt, "coarse_run": str(coarse.path), "guidance": kind, "resolution": resolution,
               "steps": result.step, "seconds": round(result.seconds, 2), "device": str(device),
               "final_loss": result.loss, "final_stats": result.stats}
    return finish_run(run, summary, lambda: export_refined(dmtet, colour, run.path, config))


def load_refined(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor, Callable]:
    """The refined mesh of a ``text-to-3d-refine`` run at its last checkpoint: vertices [V, 3], faces [F, 3]
    and its colour field (points [N, 3] -> rgb [N, 3]); the coarse run must still be where it was."""
    run = RunDir(run_dir)
    saved = run.read_config()
    if saved.get("method") != METHOD:
        raise UserError(f"{run.path} is not a `distill3d {METHOD}` run")
    if run.usable_checkpoint() is None:
        raise UserError(f"{run.path} has no checkpoint yet")
    config = config_from_dict(MeshRefineConfig, saved)
    coarse, _, _ = read_coarse_run(saved["coarse_run"])
    texture = load_run_scene(coarse, device).module
    dmtet = DMTet(config.dmtet).to(device)
    run.load_checkpoint({"dmtet": dmtet, "texture": texture}, device=device)
    with torch.no_grad():
        verts, faces = dmtet.mesh()
    return verts, faces, lambda points: texture.query(points)[1]


@torch.no_grad()
def export_refined(dmtet: DMTet, colour, out_dir: Path, config: MeshRefineConfig) -> dict[str, Path]:
    """mesh.glb, mesh.obj (+ .mtl, .png) with the colour field baked into a texture, and the turntable."""
    verts, faces = dmtet.mesh()
    if faces.shape[0] == 0:
        raise UserError("the refined mesh is empty; nothing to export")
    mesh = textured_mesh(verts.detach().cpu(), faces.cpu(), lambda p: colour(p.to(verts.device)).cpu(),
                         texture_size=config.texture_size)
    written = {fmt: write_textured_mesh(out_dir / f"mesh.{fmt}", mesh) for fmt in ("glb", "obj")}
    if config.turntable_frames:
        cams = turntable_cameras(config.turntable_frames, resolution=128, distance=TURNTABLE_DISTANCE)
        frames = render_frames(lambda c: render_mesh(verts, faces, c.to(verts.device), color_fn=colour), cams)
        written.update({fmt: write_video(out_dir / f"turntable.{fmt}", frames, fps=24) for fmt in ("mp4", "gif")})
    return written
