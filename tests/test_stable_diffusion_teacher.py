"""StableDiffusionTeacher on a tiny pipeline built from configs (nothing downloaded)."""

import json
import shutil

import pytest
import torch
from tiny_configs import write_tiny_tokenizer

from distill3d.diffusion import (
    NoiseSchedule,
    PixelTeacher,
    Teacher,
    TextCond,
    apply_cfg,
    ddim_sample,
)
from distill3d.diffusion.stable_diffusion import StableDiffusionTeacher
from distill3d.errors import UserError


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_sd")
    write_tiny_tokenizer(root / "tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer_src", model_max_length=12)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=12, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, sample_size=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    folder = root / "sd"
    pipeline.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def teacher(tiny_sd_folder):
    return StableDiffusionTeacher.from_folder(tiny_sd_folder, device="cpu")


def test_loads_frozen_fp32_on_cpu(teacher):
    assert isinstance(teacher, Teacher)
    assert teacher.dtype == torch.float32 and teacher.device.type == "cpu"
    for module in (teacher.unet, teacher.vae, teacher.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
    assert teacher.latent_channels == 4 and teacher.latent_size(32) == 8 and teacher.native_image_size == 32
    assert teacher.schedule.prediction_type == "epsilon" and teacher.schedule.steps_offset == 1
    assert teacher.schedule.final_alpha_bar == pytest.approx(float(NoiseSchedule().alphas_cumprod[0]))


def test_sds_step_gives_image_gradient(teacher):
    cond = teacher.encode_prompt(["a red cube", "a blue ball"])
    assert isinstance(cond, TextCond) and cond.cond.shape == (2, 12, 32) and cond.uncond.shape == (2, 12, 32)
    assert not torch.allclose(cond.cond[0], cond.cond[1])

    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 32, 32, 3, generator=g).requires_grad_(True)
    latents = teacher.encode_images(images)
    assert latents.shape == (2, 4, 8, 8) and latents.dtype == torch.float32 and latents.requires_grad
    t = torch.tensor([500, 700])
    eps = torch.randn(latents.shape, generator=g)
    x_t = teacher.schedule.add_noise(latents, eps, t)
    with torch.no_grad():
        out = teacher.denoise(x_t, t, cond, guidance_scale=7.5)
    w = 1 - teacher.schedule.alpha_bar(t).view(-1, 1, 1, 1)
    target = (latents - w * (out.eps - eps)).detach()
    loss = 0.5 * (latents - target).square().sum()
    loss.backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_denoise_matches_manual_unet_cfg(teacher):
    cond = teacher.encode_prompt(["a red cube"])
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([10, 900])
    with torch.no_grad():
        out = teacher.denoise(x_t, t, cond, guidance_scale=7.5)
        e_c = teacher.unet(x_t, t, encoder_hidden_states=cond.cond.expand(2, -1, -1)).sample
        e_u = teacher.unet(x_t, t, encoder_hidden_states=cond.uncond.expand(2, -1, -1)).sample
    eps = apply_cfg(e_c, e_u, 7.5)
    abar = teacher.schedule.alpha_bar(t).view(-1, 1, 1, 1)
    torch.testing.assert_close(out.eps, eps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.x0, (x_t - (1 - abar).sqrt() * eps) / abar.sqrt(), atol=1e-4, rtol=1e-4)


def test_v_prediction_folder(tiny_sd_folder, tmp_path):
    folder = tmp_path / "sd_v"
    shutil.copytree(tiny_sd_folder, folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(prediction_type="v_prediction", timestep_spacing="trailing")
    config_path.write_text(json.dumps(config))
    teacher = StableDiffusionTeacher.from_folder(folder, device="cpu")
    assert teacher.schedule.prediction_type == "v_prediction" and teacher.schedule.timestep_spacing == "trailing"
    cond = teacher.encode_prompt(["a cube"])
    x_t, t = torch.randn(1, 4, 8, 8), torch.tensor([300])
    with torch.no_grad():
        out = teacher.denoise(x_t, t, cond)
        v = teacher.unet(x_t, t, encoder_hidden_states=cond.cond).sample
    abar = teacher.schedule.alpha_bar(t)
    torch.testing.assert_close(out.x0, abar.sqrt() * x_t - (1 - abar).sqrt() * v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.eps, (1 - abar).sqrt() * x_t + abar.sqrt() * v, atol=1e-5, rtol=1e-5)


def test_sample_and_decode(teacher):
    cond = teacher.encode_prompt(["a cube"])
    with torch.no_grad():
        latents = ddim_sample(teacher, (1, 4, 8, 8), cond, num_steps=3, guidance_scale=3.0,
                              generator=torch.Generator().manual_seed(0))
        images = teacher.decode(latents)
    assert images.shape == (1, 32, 32, 3) and images.min() >= 0 and images.max() <= 1


def test_missing_parts_raise_user_error(tiny_sd_folder, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        StableDiffusionTeacher.from_folder(tmp_path / "nowhere")
    no_unet = tmp_path / "no_unet"
    shutil.copytree(tiny_sd_folder, no_unet, ignore=lambda d, names: ["unet"] if d == str(tiny_sd_folder) else [])
    with pytest.raises(UserError, match="unet") as info:
        StableDiffusionTeacher.from_folder(no_unet, device="cpu")
    assert "vae/" in str(info.value)  # names what was found
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_sd_folder, no_weights)
    for weights in (no_weights / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(UserError, match="vae.*safetensors"):
        StableDiffusionTeacher.from_folder(no_weights, device="cpu")
    no_index = tmp_path / "no_index"
    shutil.copytree(tiny_sd_folder, no_index)
    (no_index / "model_index.json").unlink()
    with pytest.raises(UserError, match="model_index.json"):
        StableDiffusionTeacher.from_folder(no_index, device="cpu")


def test_pixel_teacher_wraps_a_diffusers_unet():
    """The pixel-space path a world teacher takes: a UNet2DConditionModel plus a text encoder."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=4, norm_num_groups=8,
    ).eval()
    table = torch.randn(5, 4, 8)
    teacher = PixelTeacher(unet, lambda prompts: table[[len(p) % 5 for p in prompts]], NoiseSchedule(), 8)
    assert isinstance(teacher, Teacher) and teacher.latent_size(8) == 8 and teacher.device.type == "cpu"
    images = torch.rand(2, 8, 8, 3)
    x0 = teacher.encode_images(images)
    assert x0.shape == (2, 3, 8, 8) and x0.min() >= -1 and x0.max() <= 1
    torch.testing.assert_close(teacher.decode(x0), images)
    cond = teacher.encode_prompt(["cube", "a ball"])
    t = torch.tensor([50, 950])
    x_t = teacher.schedule.add_noise(x0, torch.randn_like(x0), t)
    with torch.no_grad():
        out = teacher.denoise(x_t, t, cond, guidance_scale=4.0)
        e_c = unet(x_t, t, encoder_hidden_states=cond.cond).sample
        e_u = unet(x_t, t, encoder_hidden_states=cond.uncond).sample
    torch.testing.assert_close(out.eps, apply_cfg(e_c, e_u, 4.0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(teacher.schedule.add_noise(out.x0, out.eps, t), x_t, atol=1e-4, rtol=1e-4)
