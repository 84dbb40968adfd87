"""ImageDream / MVDream from a local diffusers folder, behind the multi-view teacher interface.

The interface is ``WorldMultiViewTeacher``'s (``distill3d.world_models.teachers``), which DD3G's
collection, training and evaluation use: ``encode_condition(input images, input cameras, target
cameras)``, then ``denoise`` (x0 and eps of the K target views) and ``sample`` (DDIM). Teacher
space is VAE latents * scaling_factor, [B*K, 4, 32, 32] at 256 x 256, the K views of an object
consecutive.

Folder layout (ashawkey's mvdream_diffusers ``save_pretrained``)::

    model_index.json      _class_name MVDreamPipeline
    unet/                 config.json (MultiViewUNetModel) + diffusion_pytorch_model[.fp16].safetensors
    vae/ text_encoder/    AutoencoderKL, CLIPTextModel (SD 2.1's OpenCLIP ViT-H)
    tokenizer/ scheduler/ CLIPTokenizer, DDIMScheduler config
    image_encoder/ feature_extractor/   ImageDream only: CLIP ViT-H vision model + its image processor

Nothing is downloaded and only safetensors weights are read. ImageDream (``ip_dim`` > 0) is
image-conditioned and serves DD3G; MVDream (text only) loads too, conditioned by
``encode_text_condition(prompts, cameras)`` instead.

Camera convention (``mvdream_cameras``)
---------------------------------------
MVDream's camera of a frame is a camera-to-world 4x4 flattened row-major to [16]: OpenGL camera
axes (x right, y up, z backwards), world +Z up, the camera at distance 1 looking at the origin;
``get_camera`` puts azimuth a, elevation e at ``(cos e sin a, -cos e cos a, sin e)`` (azimuth 0
on -Y, growing counter-clockwise about +Z seen from above). ImageDream's input view is azimuth 0
and its own frame gets an all-zero camera. distill3d's world (``distill3d.cameras``) is also
right-handed with +Z up and azimuth counter-clockwise about +Z, but starts at +X, and its c2w
are OpenCV. So a group is converted by (1) turning the world about +Z through the origin by
``-90 - azimuth(input camera centre)`` degrees, which puts the input camera at MVDream azimuth 0
and keeps every elevation; (2) scaling each camera centre to distance 1; (3) flipping the camera
y and z axes (OpenCV -> OpenGL); (4) flattening row-major. A target at relative azimuth
``+d`` (counter-clockwise) from the input at elevation e gets exactly ``get_camera``'s matrix for
azimuth d, elevation e. Text-only MVDream uses reference azimuth 0 (the world's front, +X, maps to
MVDream's front view).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from distill3d.cameras import Cameras, opencv_to_opengl
from distill3d.devices import pick_device
from distill3d.diffusion.guidance_cfg import apply_cfg
from distill3d.diffusion.mv_unet import MultiViewUNet, MultiViewUNetConfig
from distill3d.diffusion.parameterization import x0_and_eps
from distill3d.diffusion.samplers import ddim_sample
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.stable_diffusion import _freeze, _listing, _weights_variant
from distill3d.diffusion.teacher import DenoiseOutput, batch_timesteps
from distill3d.errors import UserError

PIPELINE_CLASS = "MVDreamPipeline"
UNET_CLASS = "MultiViewUNetModel"
IMAGEDREAM_GUIDANCE_SCALE = 5.0  # ImageDream's run script and converter test
MVDREAM_GUIDANCE_SCALE = 7.5  # MVDream's converter test
TEXT_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
IMAGE_SUBFOLDERS = ("image_encoder", "feature_extractor")
IMAGE_ENCODER_CLASSES = ("CLIPVisionModel", "CLIPVisionModelWithProjection")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def is_multiview_diffusers_folder(path: str | Path) -> bool:
    """The folder holds an MVDream/ImageDream pipeline: model_index.json names ``MVDreamPipeline``
    or unet/config.json names ``MultiViewUNetModel``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    pipeline = _read_json(path / "model_index.json").get("_class_name")
    unet = _read_json(path / "unet" / "config.json").get("_class_name")
    names = pipeline if isinstance(pipeline, list) else [pipeline]
    return PIPELINE_CLASS in names or unet == UNET_CLASS


def _unet_weights(sub: Path, variant: str | None) -> Path:
    name = "diffusion_pytorch_model" + (".fp16" if variant else "") + ".safetensors"
    if not (sub / name).is_file():
        raise UserError(f"{sub} needs {name} (sharded weights are not supported; found: {_listing(sub)})")
    return sub / name


def check_multiview_folder(path: Path) -> tuple[MultiViewUNetConfig, dict[str, str | None]]:
    """The UNet config and the weights variant of each model sub-folder; UserError naming what is missing."""
    if not path.is_dir():
        raise UserError(f"multi-view teacher folder {path} does not exist")
    unet_raw = _read_json(path / "unet" / "config.json")
    if not unet_raw:
        raise UserError(f"{path} has no readable unet/config.json (found: {_listing(path)})")
    config = MultiViewUNetConfig.from_dict(unet_raw)
    needed = TEXT_SUBFOLDERS + (IMAGE_SUBFOLDERS if config.ip_dim > 0 else ())
    missing = [name for name in needed if not (path / name).is_dir()]
    if missing:
        raise UserError(f"{path} lacks sub-folder(s) {', '.join(m + '/' for m in missing)} "
                        f"(found: {_listing(path)})")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise UserError(f"{path / 'scheduler'} has no scheduler_config.json")
    models = ("unet", "vae", "text_encoder") + (("image_encoder",) if config.ip_dim > 0 else ())
    return config, {name: _weights_variant(path / name) for name in models}


# ---------------------------------------------------------------------------------------------- cameras
def _turn_about_up(c2w: Tensor, degrees: Tensor) -> Tensor:
    """c2w [N, 4, 4] turned about the world's +Z axis through the origin by ``degrees`` [N]."""
    a = torch.deg2rad(degrees.to(c2w.dtype))
    turn = torch.eye(4, dtype=c2w.dtype, device=c2w.device).repeat(len(a), 1, 1)
    turn[:, 0, 0], turn[:, 0, 1], turn[:, 1, 0], turn[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    return turn @ c2w


def mvdream_cameras(cameras: Cameras, reference_azimuth: Tensor) -> Tensor:
    """MVDream camera inputs [N, 16] of distill3d cameras [N] whose reference azimuth (degrees, [N]) becomes
    MVDream's azimuth 0 (module docstring). Every camera must look at the origin."""
    c2w = _turn_about_up(cameras.c2w.float(), -90.0 - reference_azimuth.float().to(cameras.device))
    centre = c2w[:, :3, 3]
    c2w[:, :3, 3] = centre / centre.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return opencv_to_opengl(c2w).flatten(1)


def input_relative_mvdream_cameras(input_cameras: Cameras, target_cameras: Cameras) -> Tensor:
    """MVDream cameras [B*K, 16] of the targets [B*K] relative to the input cameras [B] (ImageDream:
    the input camera at azimuth 0; each object's elevations kept)."""
    B, BK = len(input_cameras), len(target_cameras)
    if BK % B:
        raise UserError(f"{BK} target cameras for {B} input cameras: give the same number of targets per input")
    centre = input_cameras.centers.float()
    azimuth = torch.rad2deg(torch.atan2(centre[:, 1], centre[:, 0]))  # [B]
    return mvdream_cameras(target_cameras, azimuth.repeat_interleave(BK // B))


# ---------------------------------------------------------------------------------------------- teacher
@dataclass
class MultiViewDreamCond:
    """Conditioning of B objects with K target views each.

    text, uncond_text [B, L, D]: CLIP text tokens of the prompt and the negative prompt; camera
    [B*K, 16] (``mvdream_cameras``); ImageDream only: image_tokens [B, N, 1280] (CLIP penultimate
    hidden states of the input image) and image_latent [B, 4, h, w] (its VAE latent), else None.
    """

    text: Tensor
    uncond_text: Tensor
    camera: Tensor
    image_tokens: Tensor | None = None
    image_latent: Tensor | None = None

    @property
    def num_objects(self) -> int:
        return self.text.shape[0]

    @property
    def num_views(self) -> int:
        return self.camera.shape[0] // self.text.shape[0]


class DiffusersMultiViewTeacher:
    """Frozen MVDream / ImageDream (module docstring) with ``WorldMultiViewTeacher``'s interface.

    Build with ``from_pretrained``. ``prompt`` / ``negative_prompt``: the text that goes with every
    input image (ImageDream's default is "" for both). Estimates are returned in float32.
    """

    latent_channels = 4

    def __init__(self, unet: MultiViewUNet, vae, text_encoder, tokenizer, schedule: NoiseSchedule,
                 image_encoder=None, feature_extractor=None, *, prompt: str = "", negative_prompt: str = "",
                 num_views: int = 4):
        self.unet, self.vae, self.text_encoder = _freeze(unet), _freeze(vae), _freeze(text_encoder)
        self.image_encoder = None if image_encoder is None else _freeze(image_encoder)
        self.tokenizer, self.feature_extractor = tokenizer, feature_extractor
        self.device = next(unet.parameters()).device
        self.dtype = next(unet.parameters()).dtype
        self.schedule = schedule.to(self.device)
        self.prompt, self.negative_prompt, self.num_views = prompt, negative_prompt, num_views
        self.image_conditioned = unet.config.ip_dim > 0
        if self.image_conditioned and (image_encoder is None or feature_extractor is None):
            raise UserError("an ImageDream UNet (ip_dim > 0) needs image_encoder/ and feature_extractor/")
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.native_image_size = int(unet.config.image_size) * self.vae_scale_factor
        self.default_guidance_scale = IMAGEDREAM_GUIDANCE_SCALE if self.image_conditioned else MVDREAM_GUIDANCE_SCALE

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None, prompt: str = "",
                        negative_prompt: str = "") -> DiffusersMultiViewTeacher:
        """Load a local MVDream / ImageDream diffusers folder (no network). dtype: float16 on CUDA, float32 on CPU."""
        import transformers
        from diffusers import AutoencoderKL, DDIMScheduler
        from safetensors.torch import load_file

        path = Path(folder).expanduser()
        config, variants = check_multiview_folder(path)
        device = pick_device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        unet = MultiViewUNet(config)
        try:
            unet.load_state_dict(load_file(_unet_weights(path / "unet", variants["unet"])), strict=True)
        except RuntimeError as error:
            raise UserError(f"{path / 'unet'} does not match its config.json: {str(error).splitlines()[1]}") from None
        common = {"local_files_only": True, "use_safetensors": True}
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", variant=variants["vae"], torch_dtype=dtype,
                                            **common)
        text_encoder = transformers.CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", variant=variants["text_encoder"], **common)
        tokenizer = transformers.CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
        scheduler = DDIMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
        image_encoder = feature_extractor = None
        if config.ip_dim > 0:
            entry = _read_json(path / "model_index.json").get("image_encoder") or [None, "CLIPVisionModel"]
            name = entry[-1] if entry[-1] in IMAGE_ENCODER_CLASSES else "CLIPVisionModel"
            image_encoder = getattr(transformers, name).from_pretrained(
                path, subfolder="image_encoder", variant=variants["image_encoder"], **common)
            feature_extractor = transformers.CLIPImageProcessor.from_pretrained(
                path, subfolder="feature_extractor", local_files_only=True)
            image_encoder = image_encoder.to(device=device, dtype=dtype)
        return cls(unet.to(device=device, dtype=dtype), vae.to(device=device, dtype=dtype),
                   text_encoder.to(device=device, dtype=dtype), tokenizer, NoiseSchedule.from_diffusers(scheduler),
                   image_encoder, feature_extractor, prompt=prompt, negative_prompt=negative_prompt)

    def latent_size(self, image_size: int) -> int:
        """Latent side h for images of side ``image_size`` (image_size / 8)."""
        return image_size // self.vae_scale_factor

    def encode_prompt(self, prompts: list[str]):
        raise UserError("the multi-view teacher is conditioned on cameras too: use encode_condition(input_images, "
                        "input_cameras, target_cameras) (ImageDream) or encode_text_condition(prompts, cameras) (MVDream)")

    # ------------------------------------------------------------------------------ images <-> latents
    def encode_images(self, images: Tensor) -> Tensor:
        """images [N, H, W, 3] in [0, 1] -> latents [N, 4, H/8, W/8] * scaling_factor (posterior mean; differentiable)."""
        x = (images.permute(0, 3, 1, 2) * 2 - 1).to(device=self.device, dtype=self.vae.dtype)
        return self.vae.encode(x).latent_dist.mean.float() * self.vae.config.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """latents [N, 4, h, w] -> images [N, 8h, 8w, 3] in [0, 1] (float32, clamped)."""
        z = (latents.float() / self.vae.config.scaling_factor).to(self.vae.dtype)
        return ((self.vae.decode(z).sample.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    # ------------------------------------------------------------------------------ conditioning
    @torch.no_grad()
    def _embed_text(self, prompts: list[str]) -> Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device))[0].float()

    def _text(self, batch: int, prompts: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
        prompts = [self.prompt] * batch if prompts is None else list(prompts)
        return self._embed_text(prompts), self._embed_text([self.negative_prompt]).expand(batch, -1, -1)

    @torch.no_grad()
    def _image_tokens(self, images: Tensor) -> Tensor:
        """CLIP penultimate hidden states [B, N, 1280] of images [B, H, W, 3] in [0, 1], preprocessed as the
        pipeline does (to uint8 by truncation, then the feature extractor)."""
        pixels = (images.detach().float().cpu() * 255).to(torch.uint8).numpy()
        values = self.feature_extractor(list(pixels), return_tensors="pt").pixel_values
        image_dtype = next(self.image_encoder.parameters()).dtype
        out = self.image_encoder(values.to(device=self.device, dtype=image_dtype), output_hidden_states=True)
        return out.hidden_states[-2].float()

    @torch.no_grad()
    def encode_condition(self, input_images: Tensor, input_cameras: Cameras,
                         target_cameras: Cameras) -> MultiViewDreamCond:
        """ImageDream conditioning from input images [B, H, W, 3] in [0, 1] (white background), their cameras [B]
        and the target cameras [B*K] (K consecutive per object), in distill3d's world (module docstring)."""
        if not self.image_conditioned:
            raise UserError("this is a text-only MVDream folder; image-conditioned use (DD3G) needs an ImageDream "
                            "folder (unet ip_dim > 0); MVDream takes encode_text_condition(prompts, cameras)")
        B = input_images.shape[0]
        if len(input_cameras) != B:
            raise UserError(f"{B} input images but {len(input_cameras)} input cameras")
        R = self.native_image_size
        x = input_images.to(self.device).float().permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(R, R), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        text, uncond = self._text(B)
        camera = input_relative_mvdream_cameras(input_cameras.to(self.device), target_cameras.to(self.device))
        return MultiViewDreamCond(text, uncond, camera, self._image_tokens(input_images), self.encode_images(x))

    @torch.no_grad()
    def encode_text_condition(self, prompts: Sequence[str], target_cameras: Cameras) -> MultiViewDreamCond:
        """MVDream conditioning: one prompt per object [B] and its cameras [B*K] in distill3d's world
        (azimuth 0, the world's +X, is MVDream's front view)."""
        if self.image_conditioned:
            raise UserError("an ImageDream folder is conditioned on an input image: use encode_condition")
        text, uncond = self._text(len(prompts), prompts)
        if len(target_cameras) % len(prompts):
            raise UserError(f"{len(target_cameras)} cameras for {len(prompts)} prompts")
        zero = torch.zeros(len(target_cameras), device=self.device)
        return MultiViewDreamCond(text, uncond, mvdream_cameras(target_cameras.to(self.device), zero))

    # ------------------------------------------------------------------------------ denoising
    def _predict(self, x_t: Tensor, t: Tensor, cond: MultiViewDreamCond, branches: Sequence[bool]) -> Tensor:
        """UNet predictions [len(branches) * B*K, 4, h, w] for the conditional (True) / unconditional
        (False) branches; ImageDream's input frame is appended to every object and dropped again."""
        B, K = cond.num_objects, cond.num_views
        frames, cams, steps = x_t.unflatten(0, (B, K)), cond.camera.unflatten(0, (B, K)), t.unflatten(0, (B, K))
        extra = int(self.image_conditioned)
        if extra:
            frames = torch.cat([frames, torch.zeros_like(frames[:, :1])], dim=1)
            cams = torch.cat([cams, torch.zeros_like(cams[:, :1])], dim=1)
            steps = torch.cat([steps, steps[:, :1]], dim=1)
        Fr, n = K + extra, len(branches)
        text = torch.cat([cond.text if c else cond.uncond_text for c in branches])  # [n*B, L, D]
        inputs = {"x": frames.flatten(0, 1).repeat(n, 1, 1, 1), "timesteps": steps.flatten().repeat(n),
                  "context": text.repeat_interleave(Fr, dim=0), "camera": cams.flatten(0, 1).repeat(n, 1),
                  "num_frames": Fr}
        if extra:
            tokens = torch.cat([cond.image_tokens if c else torch.zeros_like(cond.image_tokens) for c in branches])
            latent = torch.cat([cond.image_latent if c else torch.zeros_like(cond.image_latent) for c in branches])
            inputs.update(ip=tokens.repeat_interleave(Fr, dim=0), ip_img=latent)
        inputs = {k: v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v
                  for k, v in inputs.items()}
        out = self.unet(**inputs).float().unflatten(0, (n * B, Fr))[:, :K]
        return out.flatten(0, 1)

    def denoise(self, x_t: Tensor, t: Tensor | float, cond: MultiViewDreamCond,
                guidance_scale: float = 1.0) -> DenoiseOutput:
        """x0, eps [B*K, 4, h, w] at (x_t [B*K, 4, h, w], t [B*K] or scalar), CFG on text + image prompt."""
        BK = x_t.shape[0]
        if BK != cond.camera.shape[0]:
            raise ValueError(f"x_t holds {BK} views but the conditioning has {cond.camera.shape[0]} target cameras")
        t = batch_timesteps(t, BK, x_t.device)
        if guidance_scale == 1.0:
            prediction = self._predict(x_t, t, cond, (True,))
        else:
            uncond, conditional = self._predict(x_t, t, cond, (False, True)).chunk(2)
            prediction = apply_cfg(conditional, uncond, guidance_scale)
        x0, eps = x0_and_eps(prediction, x_t.float(), self.schedule.alpha_bar(t), self.schedule.prediction_type)
        return DenoiseOutput(x0=x0.to(x_t.dtype), eps=eps.to(x_t.dtype))

    @torch.no_grad()
    def sample(self, cond: MultiViewDreamCond, *, num_steps: int = 50, guidance_scale: float | None = None,
               generator: torch.Generator | None = None, noise: Tensor | None = None,
               progress: bool = False) -> Tensor:
        """Deterministic DDIM of the K target views: images [B, K, H, W, 3] in [0, 1].

        ``noise`` [B*K, 4, H/8, W/8] fixes the initial latents (DD3G's N); otherwise drawn from ``generator``.
        """
        R, h = self.native_image_size, self.latent_size(self.native_image_size)
        scale = self.default_guidance_scale if guidance_scale is None else guidance_scale
        x0 = ddim_sample(self, (cond.camera.shape[0], self.latent_channels, h, h), cond, num_steps, scale,
                         generator=generator, noise=noise, progress=progress)
        return self.decode(x0).reshape(cond.num_objects, cond.num_views, R, R, 3)
