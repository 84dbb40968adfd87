"""Image -> 3D Gaussians with a trained DD3G student (Sec. III-E): the image, the teacher's kind of
cameras and fresh Gaussian noise go through PEPD once; no teacher is needed.

The student works in its own frame (``train.student_cameras``: the input camera's level frame, the
input camera at ``STUDENT_FRAME_DISTANCE``). ``predict_gaussians`` maps its Gaussians back into the
world frame of the given input camera. A user's image has no camera, so ``image_to_3d`` assumes one:
azimuth 0 (the object's front faces the photo), ``input_elevation``, ``distance`` and ``fovy`` of the
config; the output views are drawn as the teacher's groups from the seed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.configs import config_from_dict
from distill3d.data.quadruples import params_to_cameras
from distill3d.devices import pick_device
from distill3d.diffusion.cuda_graph import GraphedForward
from distill3d.errors import UserError
from distill3d.export.ply import write_gaussians_ply
from distill3d.export.video import render_frames, turntable_cameras, write_video
from distill3d.methods.dd3g.input_images import (
    ASSUMED_DISTANCE,
    ASSUMED_ELEVATION,
    ASSUMED_FOVY,
    assume_input_camera,
    image_files,
    read_input_image,
)
from distill3d.methods.dd3g.student import PEPDStudent
from distill3d.methods.dd3g.train import (
    DEFAULT_STUDENT,
    KIND,
    STUDENT_FRAME_DISTANCE,
    DD3GTrainConfig,
    student_cameras,
)
from distill3d.model_folder import WEIGHTS_FILE, load_weights, resolve_model_folder
from distill3d.render.splat import render_gaussian_batch
from distill3d.scene.gaussian_batch import GaussianBatch
from distill3d.world_models.multiview_cameras import (
    MultiViewGroupCameras,
    level_rotation,
    sample_multiview_groups,
    split_groups,
)


@dataclass
class ImageTo3DConfig:
    """Settings of ``distill3d image-to-3d``."""

    model: str = DEFAULT_STUDENT    # the shipped student, a `distill3d dd3g train` run folder or a model folder
    seed: int = 0                   # seed of the output cameras and the noise N
    input_elevation: float = ASSUMED_ELEVATION  # the assumed elevation of the image's camera, degrees
    distance: float = ASSUMED_DISTANCE          # the assumed camera distance in world units
    fovy: float = ASSUMED_FOVY                  # the assumed vertical field of view, degrees
    device: str = "auto"            # auto: cuda when available, else cpu
    turntable_frames: int = 48      # frames of turntable.gif / .mp4; 0: none
    cameras: MultiViewGroupCameras = field(default_factory=MultiViewGroupCameras)  # the teacher's group layout


def load_student(model: str | Path, device: torch.device) -> tuple[PEPDStudent, DD3GTrainConfig]:
    """The student of a run or model folder (its EMA weights), in eval mode on ``device``."""
    if not str(model):
        raise UserError(f"--model is needed: {DEFAULT_STUDENT!r} (shipped), a `distill3d dd3g train` run folder "
                        "or an exported model folder")
    folder, raw = resolve_model_folder(model, KIND)
    config = config_from_dict(DD3GTrainConfig, raw)
    student = PEPDStudent(config.student)
    load_weights(student, folder / WEIGHTS_FILE)
    return student.to(device).eval().requires_grad_(False), config


class GraphedStudent:
    """The student's forward replayed from a CUDA graph, one recording per batch size
    (``diffusion.cuda_graph.GraphedForward``): at batch 1 the eager student waits on the CPU launching its
    kernels (9-15 ms on an H200 against 3.2 ms replayed, benchmarks/RESULTS.md). Inference only; eager on
    the CPU; ``image_to_3d`` uses it on CUDA for a folder of images (a recording costs more than one call). Called like the
    student: ``GraphedStudent(student)(images, noise, cameras) -> GaussianBatch``.
    """

    FIELDS = (("means", 3), ("quats", 4), ("scales", 3), ("opacities", 1), ("colours", 3))

    def __init__(self, student: PEPDStudent):
        self.student, self.config = student, student.config
        self._graphed: dict[tuple[int, int], GraphedForward] = {}  # per camera size (not a tensor shape)

    def parameters(self):
        return self.student.parameters()

    def __call__(self, images: Tensor, noise: Tensor, cameras: Cameras) -> GaussianBatch:
        size = (cameras.width, cameras.height)
        if size not in self._graphed:
            self._graphed[size] = GraphedForward(lambda *x: self._packed(*x, size=size))
        packed = self._graphed[size](images, noise, cameras.c2w, cameras.K)  # [B, N, 14]
        parts = packed.split([width for _, width in self.FIELDS], dim=-1)
        values = {name: part[..., 0] if width == 1 else part for (name, width), part in zip(self.FIELDS, parts)}
        return GaussianBatch(**values)

    def _packed(self, images: Tensor, noise: Tensor, c2w: Tensor, K: Tensor, *, size: tuple[int, int]) -> Tensor:
        gaussians = self.student(images, noise, Cameras(c2w, K, *size))
        return torch.cat([getattr(gaussians, name) if width > 1 else getattr(gaussians, name)[..., None]
                          for name, width in self.FIELDS], dim=-1)


@torch.no_grad()
def predict_gaussians(student: PEPDStudent | GraphedStudent, images: Tensor, params: Tensor,
                      generator: torch.Generator) -> GaussianBatch:
    """Gaussians [B, N] in the world frame from images [B, R, R, 3] and camera parameters [B, 1 + K, 4]
    (the input camera, then the K output views; elevation, azimuth, distance, fovy); N from ``generator``."""
    config = student.config
    B, K, R = images.shape[0], config.num_views, config.noise_size
    device = next(student.parameters()).device
    inputs, targets = split_groups(params_to_cameras(params.reshape(-1, 4).cpu(), R), K)
    noise = torch.randn((B, K, config.noise_channels, R, R), generator=generator)
    gaussians = student(images.to(device), noise.to(device), student_cameras(inputs, targets).to(device))
    scale = params[:, 0, 2].to(device) / STUDENT_FRAME_DISTANCE  # back from the student's frame (train.py)
    return gaussians.transformed(level_rotation(inputs.c2w).to(device), scale)


def assumed_cameras(config: ImageTo3DConfig, resolution: int, generator: torch.Generator) -> Tensor:
    """Camera parameters [1, 1 + K, 4] for an image with no camera: the input at azimuth 0 and the config's
    elevation, distance and fovy; the K output views as the teacher's group layout draws them."""
    _, p = sample_multiview_groups(1, resolution, config.cameras, generator)
    azimuth = torch.remainder(p["azimuth"] - p["azimuth"][:, :1] + 180.0, 360.0) - 180.0
    params = torch.stack([p["elevation"], azimuth, p["distance"], p["fovy"]], dim=-1)
    return assume_input_camera(params, config.input_elevation, config.distance, config.fovy)


def image_to_3d(source: str | Path, config: ImageTo3DConfig, out_dir: str | Path) -> list[dict]:
    """Gaussians for an image or every image of a folder: ``out_dir/<image name>/`` holds gaussians.ply,
    input.png (what the student saw), the turntable and summary.json; returns the summaries."""
    files = image_files(source)
    device = pick_device(config.device)
    student, _ = load_student(config.model, device)
    R = student.config.image_size
    images = [read_input_image(f, R) for f in files]  # every file checked before any output
    if device.type == "cuda" and len(files) > 1:
        student = GraphedStudent(student)  # recorded on the first image, replayed for the others
    out_root = Path(out_dir)
    summaries = []
    for file, image in zip(files, images):
        out = out_root / file.stem if len(files) > 1 else out_root
        out.mkdir(parents=True, exist_ok=True)
        generator = torch.Generator().manual_seed(config.seed)
        params = assumed_cameras(config, R, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        gaussians = predict_gaussians(student, image[None], params, generator)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        Image.fromarray((image.numpy() * 255 + 0.5).astype(np.uint8)).save(out / "input.png")
        outputs = {"ply": str(write_gaussians_ply(out / "gaussians.ply", gaussians.scene(0)))}
        if config.turntable_frames:
            cams = turntable_cameras(config.turntable_frames, resolution=128, elevation=config.input_elevation,
                                     distance=config.distance, fovy=config.fovy)
            frames = render_frames(lambda c: render_gaussian_batch(gaussians, c.to(device)), cams)
            outputs["gif"] = str(write_video(out / "turntable.gif", frames, fps=24))
        summary = {"image": str(file), "model": str(config.model), "seed": config.seed,
                   "gaussians": gaussians.num_gaussians, "inference_seconds": round(seconds, 4),
                   "device": str(device), "outputs": outputs}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        summaries.append(summary)
    return summaries


__all__ = ["GraphedStudent", "ImageTo3DConfig", "assumed_cameras", "image_to_3d", "load_student", "predict_gaussians"]
