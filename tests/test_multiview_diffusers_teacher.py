"""DiffusersMultiViewTeacher (ImageDream / MVDream from a diffusers folder) on tiny random models saved in
the layout of ashawkey's mvdream_diffusers (nothing downloaded)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from tiny_configs import write_tiny_tokenizer

from distill3d.cameras import orbit_cameras
from distill3d.cli import main
from distill3d.diffusion.guidance_cfg import apply_cfg
from distill3d.diffusion.multiview_diffusers import (
    DiffusersMultiViewTeacher,
    input_relative_mvdream_cameras,
    is_multiview_diffusers_folder,
)
from distill3d.diffusion.mv_unet import MultiViewUNet, MultiViewUNetConfig
from distill3d.errors import UserError
from distill3d.methods.dd3g.collect import load_multiview_teacher, verify_quadruples

torch.set_num_threads(1)

# a tiny unet: 2 levels, attention only at the 2x-downsampled level and in the middle
TINY_UNET = {"image_size": 4, "in_channels": 4, "out_channels": 4, "model_channels": 32,
             "attention_resolutions": [2], "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16,
             "transformer_depth": 1, "context_dim": 32, "camera_dim": 16,
             "use_checkpoint": False, "legacy": False}  # the last two: LDM keys the converter keeps
IP_TOKENS = 4


def write_folder(folder, image_conditioned: bool) -> None:
    """Save a tiny MVDream (text) or ImageDream (image prompt) pipeline as mvdream_diffusers does."""
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModel,
    )

    torch.manual_seed(0)
    write_tiny_tokenizer(folder / "tokenizer_src")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer_src", model_max_length=8)
    tokenizer.save_pretrained(folder / "tokenizer")
    CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=8, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(folder / "text_encoder")
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  norm_num_groups=8, sample_size=32).save_pretrained(folder / "vae")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                  clip_sample=False, set_alpha_to_one=False).save_pretrained(folder / "scheduler")
    unet_config = dict(TINY_UNET, **({"ip_dim": IP_TOKENS} if image_conditioned else {}))
    unet = MultiViewUNet(MultiViewUNetConfig.from_dict(unet_config))
    (folder / "unet").mkdir()
    (folder / "unet" / "config.json").write_text(json.dumps(
        {"_class_name": "MultiViewUNetModel", "_diffusers_version": "0.25.0", **unet_config}))
    save_file(unet.state_dict(), folder / "unet" / "diffusion_pytorch_model.safetensors")
    index = {"_class_name": ["pipeline_mvdream", "MVDreamPipeline"], "_diffusers_version": "0.25.0",
             "requires_safety_checker": False, "scheduler": ["diffusers", "DDIMScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["mv_unet", "MultiViewUNetModel"], "vae": ["diffusers", "AutoencoderKL"],
             "feature_extractor": [None, None], "image_encoder": [None, None]}
    if image_conditioned:  # CLIP ViT-H's width 1280 is fixed by the original Resampler
        CLIPVisionModel(CLIPVisionConfig(hidden_size=1280, intermediate_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, image_size=32, patch_size=16)
                        ).save_pretrained(folder / "image_encoder")
        CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
                           ).save_pretrained(folder / "feature_extractor")
        index.update(feature_extractor=["transformers", "CLIPImageProcessor"],
                     image_encoder=["transformers", "CLIPVisionModel"])
    (folder / "model_index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def imagedream_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imagedream") / "tiny-imagedream"
    folder.mkdir()
    write_folder(folder, image_conditioned=True)
    return folder


@pytest.fixture(scope="module")
def teacher(imagedream_folder):
    return load_multiview_teacher(str(imagedream_folder), torch.device("cpu"))


def group_cameras(B: int, K: int, resolution: int = 32, elevation: float = 20.0):
    """B input cameras at random azimuths and K targets each at input azimuth + 90 k + 30."""
    g = torch.Generator().manual_seed(3)
    az = torch.rand(B, generator=g) * 360 - 180
    inputs = orbit_cameras(elevation, az, 2.5, 40.0, resolution, resolution)
    t_az = (az[:, None] + 30 + 90 * torch.arange(K)).reshape(-1)
    targets = orbit_cameras(elevation, t_az, 2.5, 40.0, resolution, resolution)
    return inputs, targets


def condition(teacher, B: int = 1, K: int = 4):
    g = torch.Generator().manual_seed(4)
    images = torch.rand(B, 32, 32, 3, generator=g)
    return teacher.encode_condition(images, *group_cameras(B, K))


# ------------------------------------------------------------------------------------------- loading
def test_loads_through_dd3g_teacher_loader(teacher, imagedream_folder):
    assert is_multiview_diffusers_folder(imagedream_folder)
    assert isinstance(teacher, DiffusersMultiViewTeacher) and teacher.image_conditioned
    assert teacher.latent_channels == 4 and teacher.native_image_size == 32 and teacher.latent_size(32) == 4
    assert teacher.default_guidance_scale == 5.0 and teacher.device.type == "cpu"
    assert teacher.schedule.steps_offset == 1 and teacher.schedule.prediction_type == "epsilon"
    assert teacher.schedule.final_alpha_bar == pytest.approx(float(teacher.schedule.alphas_cumprod[0]))
    assert not any(p.requires_grad for p in teacher.unet.parameters())
    with pytest.raises(UserError, match="encode_condition"):
        teacher.encode_prompt(["a cube"])


def resblock(prefix: str, cin: int, cout: int) -> list[str]:
    names = ["in_layers.0", "in_layers.2", "emb_layers.1", "out_layers.0", "out_layers.3"]
    names += ["skip_connection"] if cin != cout else []
    return [f"{prefix}.{n}.{p}" for n in names for p in ("weight", "bias")]


def transformer(prefix: str, ip: bool) -> list[str]:
    keys = [f"{prefix}.{n}.{p}" for n in ("norm", "proj_in", "proj_out") for p in ("weight", "bias")]
    block = f"{prefix}.transformer_blocks.0"
    for attn in ("attn1", "attn2"):
        keys += [f"{block}.{attn}.to_{n}.weight" for n in ("q", "k", "v")]
        keys += [f"{block}.{attn}.to_out.0.{p}" for p in ("weight", "bias")]
    keys += [f"{block}.attn2.to_k_ip.weight", f"{block}.attn2.to_v_ip.weight"] if ip else []
    keys += [f"{block}.{n}.{p}" for n in ("ff.net.0.proj", "ff.net.2", "norm1", "norm2", "norm3")
             for p in ("weight", "bias")]
    return keys


def reference_keys(ip: bool) -> set[str]:
    """State-dict names of mvdream_diffusers' MultiViewUNetModel for TINY_UNET, written out block by block."""
    keys = [f"{m}.{i}.{p}" for m in ("time_embed", "camera_embed", "out") for i in (0, 2) for p in ("weight", "bias")]
    keys += ["input_blocks.0.0.weight", "input_blocks.0.0.bias", "input_blocks.2.0.op.weight",
             "input_blocks.2.0.op.bias", "output_blocks.1.2.conv.weight", "output_blocks.1.2.conv.bias"]
    keys += resblock("input_blocks.1.0", 32, 32) + resblock("input_blocks.3.0", 32, 64)
    keys += transformer("input_blocks.3.1", ip)
    keys += resblock("middle_block.0", 64, 64) + transformer("middle_block.1", ip) + resblock("middle_block.2", 64, 64)
    keys += resblock("output_blocks.0.0", 128, 64) + transformer("output_blocks.0.1", ip)
    keys += resblock("output_blocks.1.0", 96, 64) + transformer("output_blocks.1.1", ip)
    keys += resblock("output_blocks.2.0", 96, 32) + resblock("output_blocks.3.0", 64, 32)
    if ip:  # the Resampler: 4 layers of (PerceiverAttention, LayerNorm-Linear-GELU-Linear)
        keys += ["image_embed.latents"] + [f"image_embed.{n}.{p}" for n in ("proj_in", "proj_out", "norm_out")
                                           for p in ("weight", "bias")]
        for i in range(4):
            keys += [f"image_embed.layers.{i}.0.{n}.{p}" for n in ("norm1", "norm2") for p in ("weight", "bias")]
            keys += [f"image_embed.layers.{i}.0.{n}.weight" for n in ("to_q", "to_kv", "to_out")]
            keys += [f"image_embed.layers.{i}.1.0.weight", f"image_embed.layers.{i}.1.0.bias",
                     f"image_embed.layers.{i}.1.1.weight", f"image_embed.layers.{i}.1.3.weight"]
    return set(keys)


@pytest.mark.parametrize("ip", [False, True])
def test_state_dict_names_are_the_original_architecture_s(ip):
    unet = MultiViewUNet(MultiViewUNetConfig.from_dict(dict(TINY_UNET, ip_dim=IP_TOKENS if ip else 0)))
    state = unet.state_dict()
    assert set(state) == reference_keys(ip)
    assert state["input_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight"].shape == (2 * 4 * 64, 64)  # GEGLU
    assert state["camera_embed.0.weight"].shape == (128, 16) and state["out.2.weight"].shape == (4, 32, 3, 3)
    if ip:
        assert state["image_embed.proj_in.weight"].shape == (32, 1280)
        assert state["image_embed.layers.0.0.to_q.weight"].shape == (12 * 64, 32)  # 12 heads of 64 (original)


def test_config_keys_round_trip():
    config = MultiViewUNetConfig.from_dict({"_class_name": "MultiViewUNetModel", **TINY_UNET, "ip_dim": 16})
    assert config.num_res_blocks == (1, 1) and config.channel_mult == (1, 2) and config.ip_dim == 16
    written = config.to_dict()
    assert {k: written[k] for k in ("image_size", "model_channels", "context_dim", "camera_dim")} == \
        {k: TINY_UNET[k] for k in ("image_size", "model_channels", "context_dim", "camera_dim")}
    assert MultiViewUNetConfig.from_dict(written) == config
    with pytest.raises(UserError):
        MultiViewUNetConfig.from_dict({**TINY_UNET, "num_classes": 10})


# ------------------------------------------------------------------------------------------- cameras
def get_camera_reference(elevation: float, azimuths) -> torch.Tensor:
    """mvdream_diffusers' get_camera (blender_coord): kiui's orbit_camera(-elevation, azimuth, radius 1), an
    OpenGL look-at with +Y up, then world rows (x, y, z) -> (x, -z, y); flattened row-major. [K, 16]."""
    out = []
    for az in azimuths:
        e, a = math.radians(-elevation), math.radians(az)
        pos = torch.tensor([math.cos(e) * math.sin(a), -math.sin(e), math.cos(e) * math.cos(a)], dtype=torch.float64)
        forward = pos / pos.norm()
        right = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), forward)
        right = right / right.norm()
        up = torch.linalg.cross(forward, right)
        pose = torch.eye(4, dtype=torch.float64)
        pose[:3, :3] = torch.stack([right, up, forward], dim=1)
        pose[:3, 3] = pos
        pose[2] *= -1
        pose = pose[[0, 2, 1, 3]]
        out.append(pose.flatten())
    return torch.stack(out).float()


@pytest.mark.parametrize("elevation", [0.0, 15.0, 40.0])
def test_camera_conversion_matches_get_camera_on_the_canonical_orbit(elevation):
    """Input at any azimuth and distance, targets at its azimuth + 0/90/180/270: their get_camera(4, elevation)."""
    for input_azimuth, distance in ((0.0, 1.0), (-123.0, 2.7), (77.0, 1.8)):
        inputs = orbit_cameras(elevation, input_azimuth, distance, 40.0, 32, 32)
        targets = orbit_cameras(elevation, torch.tensor([0.0, 90.0, 180.0, 270.0]) + input_azimuth, distance, 40.0,
                                32, 32)
        converted = input_relative_mvdream_cameras(inputs, targets)
        torch.testing.assert_close(converted, get_camera_reference(elevation, [0, 90, 180, 270]), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------- the network
def unet_inputs(teacher, frames: int = 3, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 4, 4, 4, generator=g)
    cam = torch.randn(frames, 16, generator=g)
    ctx = torch.randn(1, 8, 32, generator=g).expand(frames, -1, -1)
    ip = torch.randn(1, 5, 1280, generator=g).expand(frames, -1, -1)
    return x, cam, ctx, ip, torch.randn(1, 4, 4, 4, generator=g)


def test_3d_attention_mixes_views_and_camera_matters(teacher):
    x, cam, ctx, ip, ip_img = unet_inputs(teacher)
    t = torch.full((3,), 500)
    unet = teacher.unet
    with torch.no_grad():
        base = unet(x, t, ctx, cam, num_frames=3, ip=ip, ip_img=ip_img)
        x2 = x.clone()
        x2[1] += 1.0  # change view 1 only
        moved = unet(x2, t, ctx, cam, num_frames=3, ip=ip, ip_img=ip_img)
        cam2 = cam.clone()
        cam2[0] += 1.0
        recam = unet(x, t, ctx, cam2, num_frames=3, ip=ip, ip_img=ip_img)
        # frames as separate objects: no attention between them, so view 0 must not move
        alone = unet(x, t, ctx, cam, num_frames=1, ip=ip, ip_img=ip_img.expand(3, -1, -1, -1))
        alone2 = unet(x2, t, ctx, cam, num_frames=1, ip=ip, ip_img=ip_img.expand(3, -1, -1, -1))
    assert (moved[0] - base[0]).abs().max() > 1e-4  # view 0 sees view 1
    torch.testing.assert_close(alone2[0], alone[0])
    assert (recam[0] - base[0]).abs().max() > 1e-4
    # the last frame's input is replaced by ip_img (ImageDream's input view)
    x3 = x.clone()
    x3[2] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(unet(x3, t, ctx, cam, num_frames=3, ip=ip, ip_img=ip_img), base)


def test_denoise_is_the_pipeline_s_guided_unet_call(teacher):
    """x0/eps from a hand-built call laid out as MVDreamPipeline does (B = 1, input frame last)."""
    cond = condition(teacher, B=1, K=4)
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(4, 4, 4, 4, generator=g)
    eps = torch.randn(4, 4, 4, 4, generator=g)
    t = 600
    x_t = teacher.schedule.add_noise(x0, eps, t)
    with torch.no_grad():
        out = teacher.denoise(x_t, t, cond, guidance_scale=5.0)
        F_ = 5
        latents = torch.cat([x_t, torch.zeros(1, 4, 4, 4)])
        camera = torch.cat([cond.camera, torch.zeros(1, 16)])
        pred = teacher.unet(torch.cat([latents] * 2), torch.full((2 * F_,), t),
                            torch.cat([cond.uncond_text] * F_ + [cond.text] * F_), torch.cat([camera] * 2),
                            num_frames=F_, ip=torch.cat([torch.zeros_like(cond.image_tokens)] * F_ + [cond.image_tokens] * F_),
                            ip_img=torch.cat([torch.zeros_like(cond.image_latent), cond.image_latent]))
    uncond, conditional = pred[:F_ - 1], pred[F_:2 * F_ - 1]
    expected_eps = apply_cfg(conditional, uncond, 5.0)
    torch.testing.assert_close(out.eps, expected_eps, atol=1e-5, rtol=1e-5)
    abar = teacher.schedule.alpha_bar(t)
    torch.testing.assert_close(abar.sqrt() * out.x0 + (1 - abar).sqrt() * out.eps, x_t, atol=1e-5, rtol=1e-5)
    # guidance 1 is the conditional branch alone; a timestep per view is accepted
    with torch.no_grad():
        plain = teacher.denoise(x_t, torch.full((4,), t), cond, guidance_scale=1.0)
    torch.testing.assert_close(plain.eps, conditional, atol=1e-5, rtol=1e-5)


def test_condition_shapes_and_camera_frame(teacher):
    inputs, targets = group_cameras(2, 4)
    cond = teacher.encode_condition(torch.rand(2, 48, 48, 3), inputs, targets)  # resized to 32 inside
    assert cond.num_objects == 2 and cond.num_views == 4
    assert cond.text.shape == (2, 8, 32) and cond.image_tokens.shape == (2, 5, 1280)
    assert cond.image_latent.shape == (2, 4, 4, 4) and cond.camera.shape == (8, 16)
    # targets at input azimuth + 30 + 90 k: MVDream azimuths 30 + 90 k whatever the input azimuth
    torch.testing.assert_close(cond.camera, get_camera_reference(20.0, [30, 120, 210, 300]).repeat(2, 1),
                               atol=1e-5, rtol=0)


def test_sample_is_deterministic_for_fixed_noise(teacher):
    cond = condition(teacher, B=2, K=4)
    noise = torch.randn(8, 4, 4, 4, generator=torch.Generator().manual_seed(7))
    a = teacher.sample(cond, num_steps=2, noise=noise)
    b = teacher.sample(cond, num_steps=2, noise=noise)
    c = teacher.sample(cond, num_steps=2, noise=noise + 0.5)
    assert a.shape == (2, 4, 32, 32, 3) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    latents = teacher.encode_images(a[0])
    assert latents.shape == (4, 4, 4, 4)
    torch.testing.assert_close(teacher.decode(latents).shape, a[0].shape)


# ------------------------------------------------------------------------------------------- MVDream
def test_text_only_mvdream_folder(tmp_path):
    folder = tmp_path / "tiny-mvdream"
    folder.mkdir()
    write_folder(folder, image_conditioned=False)
    teacher = load_multiview_teacher(str(folder), torch.device("cpu"))
    assert not teacher.image_conditioned and teacher.default_guidance_scale == 7.5
    inputs, targets = group_cameras(1, 4)
    with pytest.raises(UserError, match="ImageDream"):
        teacher.encode_condition(torch.rand(1, 32, 32, 3), inputs, targets)
    cond = teacher.encode_text_condition(["a red cube"], targets)
    views = teacher.sample(cond, num_steps=2, generator=torch.Generator().manual_seed(0))
    assert views.shape == (1, 4, 32, 32, 3)
    # world azimuth 0 (+X, the front) is MVDream's azimuth 0
    front = orbit_cameras(10.0, torch.tensor([0.0, 90.0]), 2.0, 40.0, 32, 32)
    torch.testing.assert_close(teacher.encode_text_condition(["a"], front).camera,
                               get_camera_reference(10.0, [0, 90]), atol=1e-5, rtol=0)


def test_missing_image_encoder_is_a_user_error(imagedream_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(imagedream_folder, broken)
    shutil.rmtree(broken / "image_encoder")
    with pytest.raises(UserError, match="image_encoder"):
        load_multiview_teacher(str(broken), torch.device("cpu"))


# ------------------------------------------------------------------------------------------- DD3G collect
def test_dd3g_collect_and_verify_with_the_folder(imagedream_folder, tmp_path):
    out = tmp_path / "quadruples"
    assert main(["dd3g", "collect", "--out", str(out), "--teacher", str(imagedream_folder), "--count", "2",
                 "--ddim-steps", "2", "--shard-size", "2", "--batch-size", "2", "--device", "cpu"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["resolution"] == 32 and meta["noise_channels"] == 4 and meta["noise_size"] == 4
    result = verify_quadruples(out, items=2, device="cpu")
    assert result["reproduced"] and result["output_max_abs_diff_uint8"] == 0
    # a student trains on it: shaped from the collection (32 px images, N of [4, 4, 4]), the folder as verifier
    run = tmp_path / "student"
    assert main(["dd3g", "train", "--data", str(out), "--out", str(run), "--tiny", "--steps", "2", "--batch-size", "2",
                 "--device", "cpu", "--set", "objective.explicit_supervision=false",  # IV only: the teacher runs
                 "--set", "student.pattern.channels=8,16"]) == 0  # N of 4 x 4 takes one halving, not the tiny three
    config = json.loads((run / "config.json").read_text())
    student = config["student"]
    assert (student["image_size"], student["noise_channels"], student["noise_size"]) == (32, 4, 4)
    assert config["teacher"] == str(imagedream_folder)
    assert main(["dd3g", "train", "--data", str(out), "--out", str(tmp_path / "x"), "--pattern-from-teacher",
                 "--device", "cpu"]) == 2  # the world teacher's encoder only: a one-line error
