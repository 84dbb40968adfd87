"""The one interface every 2D diffusion teacher offers, and a pixel-space implementation.

A teacher answers one question: given a noisy sample ``x_t`` at timestep ``t`` and a prompt,
what are the clean estimate ``x0`` and the noise ``eps``? SDS, CDS, DDIM sampling and
quadruple collection only use ``Teacher.denoise`` plus the encode/decode helpers, so a
pixel-space world teacher and Stable Diffusion (latent) are interchangeable.

Teacher space: [-1, 1] pixels [B, 3, H, W] for pixel models, VAE latents * scaling_factor
[B, 4, H/8, W/8] for latent models. Images at the interface are [B, H, W, 3] in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.diffusion.guidance_cfg import guided_prediction
from distill3d.diffusion.parameterization import x0_and_eps
from distill3d.diffusion.schedule import NoiseSchedule


@dataclass
class DenoiseOutput:
    """The teacher's estimates at (x_t, t): both [B, C, h, w], dtype of x_t."""

    x0: Tensor
    eps: Tensor


@dataclass
class TextCond:
    """Prompt conditioning: conditional and unconditional (negative prompt) embeddings.

    cond, uncond: [N, L, D] with N = 1 (shared by the whole batch) or N = B.
    """

    cond: Tensor
    uncond: Tensor

    def select(self, index: Tensor | Sequence[int]) -> "TextCond":
        """Rows ``index`` [B] (e.g. one view-dependent prompt per camera)."""
        index = torch.as_tensor(index, device=self.cond.device, dtype=torch.long)
        return TextCond(self.cond[index], self.uncond[index])

    def for_batch(self, batch: int) -> tuple[Tensor, Tensor]:
        """(cond, uncond), each [batch, L, D], broadcasting a single prompt to the batch."""
        if self.cond.shape[0] == batch:
            return self.cond, self.uncond
        if self.cond.shape[0] == 1:
            expand = (batch, *self.cond.shape[1:])
            return self.cond.expand(expand), self.uncond.expand(expand)
        raise ValueError(f"conditioning holds {self.cond.shape[0]} prompts but the batch has {batch} samples")


@runtime_checkable
class Teacher(Protocol):
    """A frozen diffusion model seen through ``denoise`` (see the module docstring)."""

    schedule: NoiseSchedule
    latent_channels: int  # C of teacher space
    native_image_size: int  # image resolution the model was trained at (e.g. 512 for SD 1.5)
    device: torch.device

    def latent_size(self, image_size: int) -> int:
        """h (= w) of teacher space for square images of side ``image_size``."""

    def encode_prompt(self, prompts: list[str]) -> Any:
        """Conditioning for ``prompts`` (opaque to callers; ``TextCond`` for text teachers)."""

    def encode_images(self, images: Tensor) -> Tensor:
        """images [B, H, W, 3] in [0, 1] -> x0 [B, C, h, w] in teacher space; differentiable."""

    def decode(self, latents: Tensor) -> Tensor:
        """x0 [B, C, h, w] in teacher space -> images [B, H, W, 3] in [0, 1]."""

    def denoise(self, x_t: Tensor, t: Tensor | int | float, cond: Any, guidance_scale: float = 1.0) -> DenoiseOutput:
        """x0 and eps at (x_t [B, C, h, w], t [B] or scalar), with classifier-free guidance.

        guidance_scale is the standard form (1 = no guidance; see ``guidance_cfg``).
        """


def at_teacher_resolution(images: Tensor, teacher: Teacher) -> Tensor:
    """images [B, H, W, 3] resized (bilinear) to the teacher's native square size [B, S, S, 3], as threestudio
    upsamples 64x64 coarse renders to Stable Diffusion's 512 before the VAE; unchanged when already at S."""
    size = int(teacher.native_image_size)
    if images.shape[1] == size and images.shape[2] == size:
        return images
    resized = F.interpolate(images.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1)


def batch_timesteps(t: Tensor | int | float, batch: int, device: torch.device) -> Tensor:
    """t as a tensor [batch] on ``device`` (integer t stays integer, float stays float)."""
    t = torch.as_tensor(t, device=device)
    if t.ndim == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
    return t


def denoise_with_network(
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: Tensor | int | float,
    cond: TextCond,
    guidance_scale: float = 1.0,
) -> DenoiseOutput:
    """``Teacher.denoise`` for any network ``predict(x [N,C,h,w], t [N], emb [N,L,D]) -> pred``.

    Batches conditional and unconditional passes, applies guidance to the raw prediction
    (equivalent to guiding x0 or eps, see ``guidance_cfg``), then converts the prediction
    (``schedule.prediction_type``) to x0 and eps in x_t's dtype.
    """
    batch = x_t.shape[0]
    t = batch_timesteps(t, batch, x_t.device)
    cond_emb, uncond_emb = cond.for_batch(batch)
    prediction = guided_prediction(predict, x_t, t, cond_emb, uncond_emb, guidance_scale)
    x0, eps = x0_and_eps(prediction, x_t, schedule.alpha_bar(t), schedule.prediction_type)
    return DenoiseOutput(x0=x0, eps=eps)


class PixelTeacher:
    """A pixel-space teacher from a network and a text encoder ([-1, 1] RGB is teacher space).

    network: ``(x_t [N, 3, H, W], t [N], emb [N, L, D]) -> prediction`` of kind
    ``schedule.prediction_type``; a module returning an object with ``.sample`` (a diffusers
    ``UNet2DConditionModel``) is unwrapped, and a module's inputs are cast to its parameter
    dtype (estimates come back in x_t's dtype). encode_text: ``list[str] -> emb [N, L, D]``;
    the unconditional embedding is ``encode_text`` of the negative prompt ("" by default, the
    prompt-dropout token of CFG training).
    """

    latent_channels = 3

    def __init__(
        self,
        network: Callable[..., Any],
        encode_text: Callable[[list[str]], Tensor],
        schedule: NoiseSchedule,
        native_image_size: int,
        device: torch.device | str | None = None,
    ):
        self.network = network
        self.encode_text = encode_text
        self.native_image_size = native_image_size
        self.dtype: torch.dtype | None = None
        if isinstance(network, torch.nn.Module):
            parameter = next(network.parameters(), None)
            if parameter is not None:
                device = device or parameter.device
                self.dtype = parameter.dtype
        self.device = torch.device(device or "cpu")
        self.schedule = schedule.to(self.device)

    def latent_size(self, image_size: int) -> int:
        """Pixel teachers work at the image resolution itself."""
        return image_size

    def encode_prompt(self, prompts: list[str], negative_prompt: str = "") -> TextCond:
        """TextCond with cond [N, L, D] for ``prompts`` and uncond for the negative prompt."""
        return TextCond(self.encode_text(list(prompts)), self.encode_text([negative_prompt] * len(prompts)))

    def encode_images(self, images: Tensor) -> Tensor:
        """images [B, H, W, 3] in [0, 1] -> [B, 3, H, W] in [-1, 1] (differentiable)."""
        return images.permute(0, 3, 1, 2) * 2 - 1

    def decode(self, latents: Tensor) -> Tensor:
        """[B, 3, H, W] in [-1, 1] -> images [B, H, W, 3] in [0, 1] (clamped)."""
        return ((latents + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    def _predict(self, x_t: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        if self.dtype is not None:
            x_t, emb = x_t.to(self.dtype), emb.to(self.dtype)
        out = self.network(x_t, t, emb)
        return out.sample if hasattr(out, "sample") else out

    def denoise(self, x_t: Tensor, t: Tensor | int | float, cond: TextCond, guidance_scale: float = 1.0) -> DenoiseOutput:
        """x0, eps [B, 3, H, W] at (x_t, t) with classifier-free guidance (standard form)."""
        return denoise_with_network(self._predict, self.schedule, x_t, t, cond, guidance_scale)
