"""Sampling HoloFusion's 3D diffusion model: grids from noise, optionally conditioned on posed views,
written out as a grid, a turntable and a mesh.

``sample_grids`` runs the reverse process on V with the x0-predicting denoiser D_theta (HoloFusion
Eq. 3: ``x_{t-1} ~ N(sqrt(abar_{t-1}) D_theta(x_t, t), ...)``) as DDIM steps (``diffusion.samplers.
ddim_step``) over ``steps`` "trailing" timesteps, the first at T - 1: ``eta = 1`` draws fresh noise at
every step (ancestral, as HoloDiffusion's DDPM sampling; the default), ``eta = 0`` is deterministic
DDIM. Vbar is zeros (unconditional) unless source views are given (``read_condition``): then every
sample is conditioned on the same views, unprojected as in training.

A sample is a ``VoxelRadianceField``: its grid V_0 [d, S, S, S] and the shared decoder M_eta.
``write_sample`` writes into a folder::

    grid.safetensors   "features" [d, S, S, S] and the decoder's weights ("decoder.*"); the grid config in
                       the metadata (``read_sample_grid`` reads it back as a field)
    turntable.mp4/.gif the field rendered by R_eta around the object (48 frames by default)
    turntable_sr.mp4   with ``super_resolve``: every frame rendered at S and super-resolved by D_beta
                       (HoloFusion's HoloDiffusion*: per view, not 3D consistent)
    mesh.glb, mesh.ply marching cubes of the density at ``mesh_threshold`` (vertex colours)
    summary.json       what was sampled, the density range, the files and the seconds taken
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import trimesh
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from distill3d.atomic_files import (
    output_with_temporary,
    save_safetensors_atomic,
    write_json_atomic,
)
from distill3d.cameras import Cameras
from distill3d.configs import config_from_dict, config_to_dict
from distill3d.data.co3d import is_co3d_folder, open_multiview_dataset
from distill3d.data.layout import CAMERAS_FILE, META_FILE, read_cameras, read_image
from distill3d.diffusion.parameterization import eps_from_x0
from distill3d.diffusion.samplers import ddim_step, ddim_timesteps
from distill3d.errors import UserError
from distill3d.export.mesh import write_mesh
from distill3d.export.video import render_frames, turntable_cameras, write_video
from distill3d.methods.holofusion.super_resolution import super_resolve
from distill3d.methods.holofusion.train import (
    KIND,
    HoloFusionModel,
    HoloFusionTrainConfig,
    conditioning_grids,
)
from distill3d.methods.holofusion.unproject import FrozenImageEncoder, grid_points
from distill3d.model_folder import WEIGHTS_FILE, load_weights, resolve_model_folder
from distill3d.scene.mesh_extraction import DEFAULT_DENSITY_THRESHOLD, extract_mesh
from distill3d.scene.voxel_grid import VoxelDecoder, VoxelGridConfig, VoxelRadianceField

__all__ = [
    "TURNTABLE_DISTANCE",
    "load_holofusion",
    "read_condition",
    "read_sample_grid",
    "sample_grids",
    "write_sample",
]

TURNTABLE_DISTANCE = 2.7
"""Turntable camera distance: a world object (radius 0.9) framed at fovy 40, as the data sets' cameras."""


def load_holofusion(name_or_path: str | Path, device: torch.device | str = "cpu") -> HoloFusionModel:
    """A trained model (a run folder or an exported model folder: config.json + model.safetensors), in eval
    mode without gradients."""
    folder, raw = resolve_model_folder(name_or_path, KIND)
    model = HoloFusionModel(config_from_dict(HoloFusionTrainConfig, raw))
    load_weights(model, folder / WEIGHTS_FILE)
    return model.to(device).eval().requires_grad_(False)


def read_condition(folder: str | Path) -> tuple[Tensor, Cameras]:
    """Posed source views from a folder: one sequence of a multi-view data set (``frames/NNN.png`` and
    ``cameras.json``), a data set folder or a CO3D folder (its first sequence). Returns images [V, H, W, 3] in [0, 1]
    (over white) and their cameras [V]."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--condition {folder}: no such folder")
    if (folder / META_FILE).is_file() or is_co3d_folder(folder):
        item = open_multiview_dataset(folder, background=1.0)[0]
        return item["images"][..., :3], Cameras(item["c2w"], item["K"], item["images"].shape[2],
                                                item["images"].shape[1])
    if not (folder / CAMERAS_FILE).is_file():
        raise UserError(f"--condition {folder}: expected a multi-view sequence (frames/*.png and {CAMERAS_FILE}) "
                        f"or a multi-view data set folder ({META_FILE})")
    try:
        cameras, _ = read_cameras(folder / CAMERAS_FILE)
        images = torch.stack([read_image(folder / "frames" / f"{v:03d}.png", 1.0)[..., :3] for v in range(len(cameras))])
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"--condition {folder}: cannot read its frames and cameras ({error})") from None
    if images.shape[1:3] != (cameras.height, cameras.width):
        raise UserError(f"--condition {folder}: frames are {images.shape[2]}x{images.shape[1]}, cameras "
                        f"{cameras.width}x{cameras.height}")
    return images, cameras


@torch.no_grad()
def conditioning_for(model: HoloFusionModel, count: int, condition: tuple[Tensor, Cameras] | None,
                     max_views: int | None = None) -> Tensor:
    """Vbar [count, c, S, S, S]: zeros, or the unprojection of (images [V, H, W, 3], cameras [V]) (at most
    ``max_views``: the training's source views)."""
    cfg, device = model.config, next(model.parameters()).device
    S = cfg.grid.resolution
    if condition is None:
        channels = model.denoiser.cond_channels
        return torch.zeros(count, channels, S, S, S, device=device)
    images, cameras = condition
    V = min(len(cameras), max_views or cfg.views.source_views)
    encoder = FrozenImageEncoder(cfg.conditioning, device)
    mask = torch.ones(1, V, dtype=torch.bool, device=device)
    v_bar, = conditioning_grids(encoder, images[None, :V].to(device), cameras[:V].to(device), [mask], S,
                                cfg.grid.bound)
    return v_bar.expand(count, *v_bar.shape[1:])


@torch.no_grad()
def sample_grids(model: HoloFusionModel, count: int, *, steps: int = 100, eta: float = 1.0,
                 condition: tuple[Tensor, Cameras] | None = None, generator: torch.Generator | None = None,
                 batch_size: int = 8) -> Tensor:
    """``count`` grids V_0 [count, d, S, S, S] from noise (module docstring). generator: on the model's device."""
    cfg = model.config
    T = cfg.diffusion.num_train_timesteps
    if not 1 <= steps <= T:
        raise UserError(f"--steps must be in 1..{T}, got {steps}")
    device = next(model.parameters()).device
    schedule = model.schedule.to(device)
    timesteps = ddim_timesteps(steps, T, "trailing").tolist()
    d, S = cfg.grid.feature_dim, cfg.grid.resolution
    shared = conditioning_for(model, 1, condition)  # once: the same views condition every sample
    out = []
    for start in range(0, count, batch_size):
        b = min(batch_size, count - start)
        v_bar = shared.expand(b, *shared.shape[1:])
        x = torch.randn(b, d, S, S, S, generator=generator, device=device)
        for i, t in enumerate(timesteps):
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            tt = torch.full((b,), t, device=device, dtype=torch.long)
            x0 = model.denoiser(x, v_bar, tt).float()                         # x0-prediction (HoloFusion Eq. 3)
            if t_prev < 0:
                x = x0
                break
            eps = eps_from_x0(x, x0, schedule.alpha_bar(tt))
            noise = torch.randn(x.shape, generator=generator, device=device) if eta > 0 else None
            x = ddim_step(x, x0, eps, t, t_prev, schedule, eta=eta, noise=noise)
        out.append(x)
    return torch.cat(out)


def read_sample_grid(path: str | Path, device: torch.device | str = "cpu") -> VoxelRadianceField:
    """The field of a ``grid.safetensors`` written by ``write_sample`` (its grid and its decoder)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no grid file {path}")
    with safe_open(str(path), framework="pt") as f:
        config = config_from_dict(VoxelGridConfig, json.loads((f.metadata() or {})["grid"]))
    tensors = load_file(str(path), device=str(device))
    decoder = VoxelDecoder(config.feature_dim, config.hidden_dim, config.num_hidden_layers, config.density_bias)
    decoder.load_state_dict({k[len("decoder."):]: v for k, v in tensors.items() if k.startswith("decoder.")})
    return VoxelRadianceField.from_features(tensors["features"], decoder.to(device), config)


def _write_ply(path: Path, mesh: trimesh.Trimesh) -> Path:
    path, _, tmp = output_with_temporary(path, ("ply",), "mesh")
    mesh.export(str(tmp), file_type="ply")
    tmp.replace(path)
    return path


@torch.no_grad()
def write_sample(out_dir: str | Path, features: Tensor, model: HoloFusionModel, *, turntable_frames: int = 48,
                 turntable_resolution: int = 128, mesh_resolution: int = 64, mesh_threshold: float | None = None,
                 super_resolve_frames: bool = False, generator: torch.Generator | None = None,
                 extra: dict | None = None) -> dict:
    """Write one sample V_0 [d, S, S, S] (module docstring); returns its summary (also summary.json)."""
    started = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    features = features.detach().float()
    field = VoxelRadianceField.from_features(features, model.decoder, cfg.grid)
    files: dict[str, str] = {}
    tensors = {"features": features.cpu().contiguous(),
               **{f"decoder.{k}": v.detach().float().cpu().contiguous() for k, v in model.decoder.state_dict().items()}}
    files["grid"] = str(save_safetensors_atomic(tensors, out / "grid.safetensors",
                                                {"grid": json.dumps(config_to_dict(field.config))}))

    def render(cams: Cameras):
        return model.render(features[None], cams.to(features.device), stratified=False)

    if turntable_frames > 0:
        cams = turntable_cameras(turntable_frames, resolution=turntable_resolution, distance=TURNTABLE_DISTANCE)
        frames = render_frames(render, cams)
        for fmt in ("mp4", "gif"):
            files[f"turntable_{fmt}"] = str(write_video(out / f"turntable.{fmt}", frames, fps=24))
        if super_resolve_frames and model.super_resolution is not None:
            low = turntable_cameras(turntable_frames, resolution=cfg.render_resolution, distance=TURNTABLE_DISTANCE)
            low_frames = torch.from_numpy(render_frames(render, low)).float().div(255.0).to(features.device)
            high = super_resolve(model.super_resolution, model.sr_schedule, low_frames, generator=generator,
                                 batch_size=16)
            sr_frames = (high.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
            files["turntable_sr_mp4"] = str(write_video(out / "turntable_sr.mp4", sr_frames, fps=24))

    density = field.query(grid_points(cfg.grid.resolution, cfg.grid.bound, features.device))[0]
    threshold = DEFAULT_DENSITY_THRESHOLD if mesh_threshold is None else float(mesh_threshold)
    mesh_note = None
    try:
        mesh = extract_mesh(field, resolution=mesh_resolution, threshold=threshold)
        files["mesh_glb"] = str(write_mesh(out / "mesh.glb", mesh))
        files["mesh_ply"] = str(_write_ply(out / "mesh.ply", mesh))
    except UserError as error:  # no surface at this density: the grid is still written
        mesh_note = str(error)
        print(f"distill3d: {out}: no mesh written: {error}")
    summary = {**(extra or {}), "grid_resolution": cfg.grid.resolution, "feature_dim": cfg.grid.feature_dim,
               "density_min": float(density.min()), "density_max": float(density.max()),
               "mesh_threshold": threshold, "mesh": mesh_note or "written", "files": files,
               "write_seconds": time.monotonic() - started}
    write_json_atomic(out / "summary.json", summary)
    return summary

