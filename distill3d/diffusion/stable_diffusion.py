"""Stable Diffusion (1.x / 2.x, eps- or v-prediction) as a frozen latent-space ``Teacher``.

Loaded from a local diffusers folder (the ``save_pretrained`` layout)::

    model_index.json
    unet/          config.json + diffusion_pytorch_model[.fp16].safetensors
    vae/           config.json + diffusion_pytorch_model[.fp16].safetensors
    text_encoder/  config.json + model[.fp16].safetensors
    tokenizer/     tokenizer.json, or vocab.json + merges.txt
    scheduler/     scheduler_config.json

Nothing is downloaded (``local_files_only``) and only safetensors weights are read (no
pickles). Teacher space is VAE latents * scaling_factor, [B, 4, H/8, W/8].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from distill3d.devices import pick_device
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.teacher import DenoiseOutput, TextCond, denoise_with_network
from distill3d.errors import UserError

MODEL_SUBFOLDERS = ("unet", "vae", "text_encoder")
ALL_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names) if names else "nothing"


def _weights_variant(sub: Path) -> str | None:
    """None for plain ``*.safetensors`` weights, "fp16" when only ``*.fp16.safetensors`` exist."""
    if not (sub / "config.json").is_file():
        raise UserError(f"{sub} has no config.json (found: {_listing(sub)})")
    weights = [p.name for p in sub.iterdir() if p.name.endswith(".safetensors") or p.name.endswith(".safetensors.index.json")]
    if not weights:
        raise UserError(
            f"{sub} holds no safetensors weights (expected e.g. diffusion_pytorch_model.safetensors or "
            f"model.safetensors; found: {_listing(sub)}). Pickled .bin weights are not loaded; convert them "
            "with diffusers' save_pretrained(safe_serialization=True)."
        )
    if all(".fp16." in name for name in weights):
        return "fp16"
    return None


def check_stable_diffusion_folder(path: Path) -> dict[str, str | None]:
    """Raise UserError naming what is missing; return the weights variant of each model sub-folder."""
    if not path.is_dir():
        raise UserError(f"Stable Diffusion folder {path} does not exist (expected a local diffusers folder with model_index.json)")
    found = _listing(path)
    if not (path / "model_index.json").is_file():
        raise UserError(f"{path} has no model_index.json, so it is not a diffusers pipeline folder (found: {found})")
    missing = [name for name in ALL_SUBFOLDERS if not (path / name).is_dir()]
    if missing:
        raise UserError(
            f"{path} lacks sub-folder(s) {', '.join(m + '/' for m in missing)} (expected "
            f"{', '.join(n + '/' for n in ALL_SUBFOLDERS)}; found: {found})"
        )
    tok = path / "tokenizer"
    if not ((tok / "tokenizer.json").is_file() or ((tok / "vocab.json").is_file() and (tok / "merges.txt").is_file())):
        raise UserError(f"{tok} needs tokenizer.json or vocab.json + merges.txt (found: {_listing(tok)})")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise UserError(f"{path / 'scheduler'} has no scheduler_config.json (found: {_listing(path / 'scheduler')})")
    return {name: _weights_variant(path / name) for name in MODEL_SUBFOLDERS}


def _freeze(module: torch.nn.Module) -> torch.nn.Module:
    module.requires_grad_(False)
    return module.eval()


class StableDiffusionTeacher:
    """Frozen UNet + VAE + CLIP text encoder behind the ``Teacher`` interface.

    Build with ``from_folder``; the constructor takes already-loaded diffusers/transformers
    modules. Latents and estimates are returned in float32 whatever the model dtype.
    """

    latent_channels = 4

    def __init__(self, unet, vae, text_encoder, tokenizer, schedule: NoiseSchedule):
        self.unet = _freeze(unet)
        self.vae = _freeze(vae)
        self.text_encoder = _freeze(text_encoder)
        self.tokenizer = tokenizer
        self.device = self.unet.device
        self.dtype = self.unet.dtype
        self.schedule = schedule.to(self.device)
        self.latent_channels = int(unet.config.in_channels)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.native_image_size = int(unet.config.sample_size) * self.vae_scale_factor

    @classmethod
    def from_folder(
        cls, path: str | Path, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> "StableDiffusionTeacher":
        """Load a local diffusers Stable Diffusion folder (see the module docstring).

        device: CUDA when available, else CPU. dtype: float16 on CUDA, float32 on CPU
        (torch.bfloat16 is a good choice on recent GPUs). Prediction type (eps or v) and
        timestep spacing come from scheduler/scheduler_config.json.
        """
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = Path(path).expanduser()
        variants = check_stable_diffusion_folder(path)
        device = pick_device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        common = dict(local_files_only=True, use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(
            path, subfolder="unet", variant=variants["unet"], torch_dtype=dtype, **common
        )
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", variant=variants["vae"], torch_dtype=dtype, **common)
        text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", variant=variants["text_encoder"], **common
        )
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        scheduler = DDIMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
        return cls(
            unet.to(device),
            vae.to(device),
            text_encoder.to(device=device, dtype=dtype),
            tokenizer,
            NoiseSchedule.from_diffusers(scheduler),
        )

    def latent_size(self, image_size: int) -> int:
        """Latent side h for images of side ``image_size`` (image_size / 8 for SD)."""
        return image_size // self.vae_scale_factor

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> Tensor:
        tokens = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device))[0]

    def encode_prompt(self, prompts: list[str], negative_prompt: str = "") -> TextCond:
        """TextCond: CLIP last hidden states [N, 77, D] for the prompts and the negative prompt."""
        prompts = list(prompts)
        return TextCond(self._embed(prompts), self._embed([negative_prompt] * len(prompts)))

    def encode_images(self, images: Tensor, sample: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """images [B, H, W, 3] in [0, 1] -> latents [B, 4, H/8, W/8] (float32), differentiable.

        Uses the posterior mean (deterministic) unless ``sample``; latents are scaled by the
        VAE's scaling_factor (after subtracting shift_factor where the VAE defines one).
        """
        x = (images.permute(0, 3, 1, 2) * 2 - 1).to(device=self.device, dtype=self.vae.dtype)
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample(generator) if sample else posterior.mean
        shift = self.vae.config.get("shift_factor") or 0.0
        return ((z.float() - shift) * self.vae.config.scaling_factor)

    def decode(self, latents: Tensor) -> Tensor:
        """latents [B, 4, h, w] -> images [B, 8h, 8w, 3] in [0, 1] (float32, clamped)."""
        shift = self.vae.config.get("shift_factor") or 0.0
        z = latents.float() / self.vae.config.scaling_factor + shift
        images = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        return ((images + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    def _predict(self, x_t: Tensor, t: Tensor, emb: Tensor) -> Tensor:
        return self.unet(x_t.to(self.dtype), t, encoder_hidden_states=emb.to(self.dtype)).sample

    def denoise(self, x_t: Tensor, t: Tensor | int | float, cond: TextCond, guidance_scale: float = 1.0) -> DenoiseOutput:
        """x0, eps [B, 4, h, w] (dtype of x_t) at (x_t, t) with classifier-free guidance."""
        return denoise_with_network(self._predict, self.schedule, x_t, t, cond, guidance_scale)
