"""One CDS step with a teacher of Stable Diffusion 2.1 (base)'s architecture, timed phase by phase.

The UNet and the VAE are built from SD 2.1-base's configurations with random weights (nothing is
downloaded; the cost of a network does not depend on its weights), in float16 on CUDA, and wrapped
by ``StableDiffusionTeacher`` exactly as a folder on disk would be. A text-to-3D step of the default
scene renders 12 views at 64x64, upsamples them to 512x512 (``at_teacher_resolution``), encodes them
with the VAE, makes CDS's two guided UNet calls (conditional and unconditional at once: batch 24)
and backpropagates through the VAE encoder into the scene. Each phase is timed with a CUDA
synchronisation after it (median of ``--steps`` steps after ``--warmup``), and so is the floor:
two UNet calls at batch 24 plus the VAE encoder's forward and backward at batch 12, measured alone.

    python benchmarks/bench_sd_cds_step.py --out benchmarks/results/sd_cds_step_h200.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.stable_diffusion import StableDiffusionTeacher
from distill3d.diffusion.teacher import TextCond
from distill3d.guidance import CDSConfig, CDSLoss

VIEWS = 12
TEXT_TOKENS, TEXT_WIDTH = 77, 1024  # SD 2.x's OpenCLIP-H text encoder output


def sd21_base_networks(dtype: torch.dtype, device: torch.device):
    """SD 2.1-base's UNet and VAE (their published configs) with random weights, and its DDIM scheduler."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
    )
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    return unet.to(device, dtype), vae.to(device, dtype), scheduler


class PhaseClock:
    """Wall time per named phase, with a CUDA synchronisation at each lap."""

    def __init__(self):
        self.times: dict[str, list[float]] = {}
        self.last = 0.0

    def start(self) -> None:
        torch.cuda.synchronize()
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        torch.cuda.synchronize()
        now = time.perf_counter()
        self.times.setdefault(name, []).append(now - self.last)
        self.last = now

    def medians_ms(self, skip: int) -> dict[str, float]:
        return {k: 1000 * statistics.median(v[skip:]) for k, v in self.times.items()}


class TimedTeacher:
    """A teacher that laps ``clock`` after encoding and after each denoiser call (its phases in a CDS step)."""

    def __init__(self, teacher: StableDiffusionTeacher, clock: PhaseClock):
        self.teacher, self.clock = teacher, clock
        self.schedule, self.native_image_size = teacher.schedule, teacher.native_image_size

    def encode_images(self, images):
        self.clock.lap("upsample")
        out = self.teacher.encode_images(images)
        self.clock.lap("vae_encode")
        return out

    def denoise(self, *args, **kwargs):
        out = self.teacher.denoise(*args, **kwargs)
        self.clock.lap("unet")
        return out


def scene_and_render(representation: str, device: torch.device):
    """The default text-to-3D scene of ``representation`` and a function rendering 12 training views."""
    from distill3d.camera_sampling import OrbitCameraConfig, sample_quadrant_cameras
    from distill3d.methods.consistent3d import Consistent3DConfig
    from distill3d.render.scene import render_scene
    from distill3d.scene.factory import build_scene, scene_optimizer

    config = Consistent3DConfig()
    scene_config = config.scene
    scene_config.representation = representation
    scene = build_scene(scene_config, device, seed=0)
    optimizer = scene_optimizer(scene, config.optim)
    generator = torch.Generator().manual_seed(0)
    cameras_config = OrbitCameraConfig(cameras_per_step=VIEWS, resolution=64)

    def render():
        cameras, _ = sample_quadrant_cameras(cameras_config, generator)
        return render_scene(scene, cameras.to(device), background=1.0, train=True).rgb

    return render, optimizer


def measure_floor(teacher: StableDiffusionTeacher, cond: TextCond, steps: int, warmup: int) -> dict[str, float]:
    """Two UNet calls at batch 2 x 12 and the VAE encoder's forward + backward at batch 12, alone."""
    clock = PhaseClock()
    device = teacher.device
    x = torch.randn(VIEWS, 4, 64, 64, device=device)
    t = torch.full((VIEWS,), 500.0, device=device)
    images = torch.rand(VIEWS, 512, 512, 3, device=device, requires_grad=True)
    for _ in range(warmup + steps):
        clock.start()
        with torch.no_grad():
            teacher.denoise(x, t, cond, 50.0)
            teacher.denoise(x, t, cond, 50.0)
        clock.lap("two_unet_calls")
        latents = teacher.encode_images(images)
        latents.square().sum().backward()
        clock.lap("vae_encode_forward_backward")
    out = clock.medians_ms(warmup)
    out["floor"] = out["two_unet_calls"] + out["vae_encode_forward_backward"]
    return out


def measure_step(teacher: StableDiffusionTeacher, cond: TextCond, representation: str, steps: int,
                 warmup: int) -> dict[str, float]:
    clock = PhaseClock()
    timed = TimedTeacher(teacher, clock)
    render, optimizer = scene_and_render(representation, teacher.device)
    loss_fn = CDSLoss(CDSConfig(), total_steps=10_000, seed=0)
    for i in range(warmup + steps):
        clock.start()
        images = render()
        clock.lap("render")
        loss, _ = loss_fn(images, timed, cond, i)
        clock.lap("loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock.lap("backward")
        optimizer.step()
        clock.lap("adam")
    out = clock.medians_ms(warmup)
    out["unet"] *= 2  # two calls per step, each timed on its own
    out["step"] = sum(v for k, v in out.items())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--representations", default="nerf,gaussians")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    device = torch.device("cuda")
    dtype = getattr(torch, args.dtype)
    unet, vae, scheduler = sd21_base_networks(dtype, device)
    teacher = StableDiffusionTeacher(unet, vae, torch.nn.Identity(), None, NoiseSchedule.from_diffusers(scheduler))
    generator = torch.Generator(device="cpu").manual_seed(0)
    embeddings = torch.randn(2, VIEWS, TEXT_TOKENS, TEXT_WIDTH, generator=generator).to(device, dtype)
    cond = TextCond(embeddings[0], embeddings[1])
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "dtype": args.dtype,
              "views": VIEWS, "render_resolution": 64, "teacher_resolution": teacher.native_image_size,
              "unet_parameters": sum(p.numel() for p in unet.parameters()),
              "vae_parameters": sum(p.numel() for p in vae.parameters())}
    torch.cuda.reset_peak_memory_stats()
    result["floor_ms"] = measure_floor(teacher, cond, args.steps, args.warmup)
    result["floor_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    for representation in args.representations.split(","):
        torch.cuda.reset_peak_memory_stats()
        step = measure_step(teacher, cond, representation, args.steps, args.warmup)
        result[representation] = {"step_ms": step, "step_over_floor": step["step"] / result["floor_ms"]["floor"],
                                  "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
