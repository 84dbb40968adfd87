"""The world's diffusion teachers behind the ``Teacher`` interface.

- ``WorldTextToImageTeacher``: prompt -> 64x64 RGB on white, e.g.
  ``"a red striped torus, front view"`` (the Stable Diffusion stand-in of Consistent3D).
- ``WorldMultiViewTeacher``: an input view + K target cameras -> the K target views, denoised
  jointly (the ImageDream stand-in of DD3G). Teacher space is the K views of each object as
  consecutive rows, [B*K, 3, H, W] in [-1, 1]; the conditioning comes from
  ``encode_condition`` (input image + cameras) instead of ``encode_prompt``.

Both load from a model folder (``config.json`` + ``model.safetensors``) or a shipped name
(``DEFAULT_TEXT_TO_IMAGE``, ``DEFAULT_MULTIVIEW``); networks and schedules are described in
``networks``. On CUDA the networks run under bf16 autocast (as they were trained) with
float32 weights, and the text-to-image network's forward pass is replayed from a CUDA graph
(``cuda_graph``; ``cuda_graphs=False`` runs it eagerly); estimates are returned in the dtype
of ``x_t``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.cameras import Cameras
from distill3d.configs import config_from_dict
from distill3d.devices import pick_device
from distill3d.diffusion.cuda_graph import GraphedForward
from distill3d.diffusion.guidance_cfg import apply_cfg
from distill3d.diffusion.parameterization import x0_and_eps
from distill3d.diffusion.samplers import ddim_sample
from distill3d.diffusion.teacher import DenoiseOutput, PixelTeacher, batch_timesteps
from distill3d.errors import UserError
from distill3d.model_folder import WEIGHTS_FILE, load_weights, resolve_model_folder
from distill3d.world_models.multiview_cameras import multiview_rays
from distill3d.world_models.multiview_training import KIND as MULTIVIEW_KIND, MultiViewTrainConfig
from distill3d.world_models.networks import WorldMultiViewNet, WorldTextToImageNet
from distill3d.world_models.text_to_image_training import KIND as TEXT_TO_IMAGE_KIND, TextToImageTrainConfig

DEFAULT_TEXT_TO_IMAGE = "world-text-to-image"
DEFAULT_MULTIVIEW = "world-multiview"


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _frozen(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return module.to(device).eval().requires_grad_(False)


def resize_images(images: Tensor, size: int) -> Tensor:
    """[B, H, W, 3] -> [B, size, size, 3] (antialiased bilinear; unchanged when already that size)."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    x = F.interpolate(images.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", antialias=True,
                      align_corners=False)
    return x.permute(0, 2, 3, 1)


class WorldTextToImageTeacher(PixelTeacher):
    """The world text-to-image teacher (pixel space, v-prediction, cosine schedule)."""

    def __init__(self, net: WorldTextToImageNet, config: TextToImageTrainConfig,
                 device: torch.device | str | None = None, autocast: bool = True, cuda_graphs: bool = True):
        device = pick_device(device)
        self.net = _frozen(net, device)
        self.config = config
        self.autocast = autocast
        self._forward = GraphedForward(self._eager_forward) if cuda_graphs else self._eager_forward
        self.default_guidance_scale = config.default_guidance_scale
        super().__init__(self._network, self._encode_text, config.schedule.noise_schedule().to(device),
                         native_image_size=config.net.resolution, device=device)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_TEXT_TO_IMAGE, *,
                        device: torch.device | str | None = None, autocast: bool = True,
                        cuda_graphs: bool = True) -> "WorldTextToImageTeacher":
        """Load from a model folder or a shipped name (no network access)."""
        folder, raw = resolve_model_folder(name_or_path, TEXT_TO_IMAGE_KIND)
        config = config_from_dict(TextToImageTrainConfig, raw)
        net = WorldTextToImageNet(config.net)
        load_weights(net, folder / WEIGHTS_FILE)
        return cls(net, config, device=device, autocast=autocast, cuda_graphs=cuda_graphs)

    def _eager_forward(self, x_t: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        with _autocast(self.device, self.autocast):
            return self.net.predict(x_t, t, emb).float()

    def _network(self, x_t: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return self._forward(x_t.float(), t, emb.float())

    @torch.no_grad()
    def _encode_text(self, prompts: list[str]) -> Tensor:
        return self.net.text_encoder.encode(prompts).float()

    @torch.no_grad()
    def sample(self, prompts: Sequence[str], *, num_steps: int = 50, guidance_scale: float | None = None,
               generator: torch.Generator | None = None, noise: Tensor | None = None,
               progress: bool = False) -> Tensor:
        """Deterministic DDIM samples of the prompts: images [B, R, R, 3] in [0, 1]."""
        prompts = list(prompts)
        R = self.native_image_size
        scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        x0 = ddim_sample(self, (len(prompts), 3, R, R), self.encode_prompt(prompts), num_steps, scale,
                         generator=generator, noise=noise, progress=progress)
        return self.decode(x0)


@dataclass
class MultiViewCond:
    """Conditioning of the multi-view teacher for B objects with K target views each.

    input_image [B, 3, H, W] in [-1, 1]; input_rays [B, 6, H, W] and target_rays
    [B*K, 6, H, W]: Pluecker rays relative to the input camera (``multiview_cameras``).
    """

    input_image: Tensor
    input_rays: Tensor
    target_rays: Tensor

    @property
    def num_objects(self) -> int:
        return self.input_image.shape[0]

    @property
    def num_views(self) -> int:
        return self.target_rays.shape[0] // self.input_image.shape[0]


class WorldMultiViewTeacher:
    """The world multi-view teacher (see the module docstring); satisfies ``Teacher``."""

    latent_channels = 3

    def __init__(self, net: WorldMultiViewNet, config: MultiViewTrainConfig,
                 device: torch.device | str | None = None, autocast: bool = True):
        self.device = pick_device(device)
        self.net = _frozen(net, self.device)
        self.config = config
        self.autocast = autocast
        self.schedule = config.schedule.noise_schedule().to(self.device)
        self.native_image_size = config.net.resolution
        self.num_views = config.net.num_views
        self.default_guidance_scale = config.default_guidance_scale

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MULTIVIEW, *,
                        device: torch.device | str | None = None, autocast: bool = True) -> "WorldMultiViewTeacher":
        """Load from a model folder or a shipped name (no network access)."""
        folder, raw = resolve_model_folder(name_or_path, MULTIVIEW_KIND)
        config = config_from_dict(MultiViewTrainConfig, raw)
        net = WorldMultiViewNet(config.net)
        load_weights(net, folder / WEIGHTS_FILE)
        return cls(net, config, device=device, autocast=autocast)

    def latent_size(self, image_size: int) -> int:
        return image_size

    def encode_prompt(self, prompts: list[str]):
        raise UserError("the multi-view teacher is conditioned on an input image and cameras, not on a prompt; "
                        "use encode_condition(input_images, input_cameras, target_cameras)")

    def encode_images(self, images: Tensor) -> Tensor:
        """images [N, H, W, 3] in [0, 1] -> [N, 3, H, W] in [-1, 1] (differentiable)."""
        return images.permute(0, 3, 1, 2) * 2 - 1

    def decode(self, latents: Tensor) -> Tensor:
        """[N, 3, H, W] in [-1, 1] -> images [N, H, W, 3] in [0, 1] (clamped)."""
        return ((latents + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    def encode_condition(self, input_images: Tensor, input_cameras: Cameras, target_cameras: Cameras) -> MultiViewCond:
        """Conditioning from input images [B, H, W, 3] in [0, 1] (white background), their cameras
        [B] and the target cameras [B*K] (K consecutive per object; any K, trained with 4).

        Images are resized and cameras rescaled to the teacher's resolution. Only the cameras'
        poses relative to the input camera and, for a teacher in the level frame, to the world's
        up axis (+Z, ``distill3d.cameras``) matter (``multiview_cameras``).
        """
        R = self.native_image_size
        image = self.encode_images(resize_images(input_images.to(self.device).float(), R))
        in_cams = input_cameras.to(self.device).resized(R, R)
        tgt_cams = target_cameras.to(self.device).resized(R, R)
        input_rays, target_rays = multiview_rays(in_cams, tgt_cams, self.config.net.camera_frame)
        return MultiViewCond(image, input_rays, target_rays)

    def _predict(self, x_t: Tensor, t: Tensor, image: Tensor, cond: MultiViewCond, repeat: int) -> Tensor:
        with _autocast(self.device, self.autocast):
            out = self.net(x_t.float(), t, image, cond.input_rays.repeat(repeat, 1, 1, 1),
                           cond.target_rays.repeat(repeat, 1, 1, 1))
        return out.float()

    def denoise(self, x_t: Tensor, t: Tensor | int | float, cond: MultiViewCond,
                guidance_scale: float = 1.0) -> DenoiseOutput:
        """x0, eps [B*K, 3, H, W] at (x_t [B*K, 3, H, W], t [B*K] or scalar), CFG on the input image."""
        BK = x_t.shape[0]
        if BK != cond.target_rays.shape[0]:
            raise ValueError(f"x_t holds {BK} views but the conditioning has {cond.target_rays.shape[0]} target cameras")
        t = batch_timesteps(t, BK, x_t.device)
        if guidance_scale == 1.0:
            prediction = self._predict(x_t, t, cond.input_image, cond, 1)
        else:
            both = self._predict(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                 torch.cat([torch.zeros_like(cond.input_image), cond.input_image]), cond, 2)
            uncond, conditional = both.chunk(2)
            prediction = apply_cfg(conditional, uncond, guidance_scale)
        x0, eps = x0_and_eps(prediction, x_t, self.schedule.alpha_bar(t), self.schedule.prediction_type)
        return DenoiseOutput(x0=x0, eps=eps)

    @torch.no_grad()
    def sample(self, cond: MultiViewCond, *, num_steps: int = 50, guidance_scale: float | None = None,
               generator: torch.Generator | None = None, noise: Tensor | None = None,
               progress: bool = False) -> Tensor:
        """Deterministic DDIM of the K target views: images [B, K, H, W, 3] in [0, 1].

        ``noise`` [B*K, 3, H, W] fixes the initial noise (DD3G's N); otherwise it is drawn from
        ``generator``. The same (noise, cameras, input image) always give the same views.
        """
        R = self.native_image_size
        scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        x0 = ddim_sample(self, (cond.target_rays.shape[0], 3, R, R), cond, num_steps, scale,
                         generator=generator, noise=noise, progress=progress)
        return self.decode(x0).reshape(cond.num_objects, cond.num_views, R, R, 3)
