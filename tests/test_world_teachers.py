"""World teachers: text encoder, cameras, training loop, save/load, Teacher interface, CLI, eval."""

import json
from dataclasses import asdict, replace

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from distill3d.cameras import orbit_cameras
from distill3d.cli import main
from distill3d.diffusion.teacher import Teacher
from distill3d.diffusion.training_loss import diffusion_loss
from distill3d.errors import UserError
from distill3d.eval.teacher_quality import evaluate_text_to_image, figures_per_shape
from distill3d.model_folder import load_weights, save_weights
from distill3d.optim import OptimConfig, lr_at
from distill3d.training.network_trainer import RunOptions, run_training
from distill3d.training.run_dir import write_json_atomic
from distill3d.world import VIEW_BUCKETS, all_objects, render_reference, view_bucket_index
from distill3d.world.prompts import WorldObject
from distill3d.world_models.classifier import WorldClassifier
from distill3d.world_models.classifier_training import tiny_config as tiny_classifier
from distill3d.world_models.multiview_cameras import (MultiViewGroupCameras, multiview_rays, relative_cameras,
                                                   sample_multiview_groups, split_groups)
from distill3d.world_models.multiview_training import MultiViewTask, tiny_config as tiny_multiview
from distill3d.world_models.networks import WorldMultiViewNet, WorldTextToImageNet, camera_vectors
from distill3d.world_models.teachers import WorldMultiViewTeacher, WorldTextToImageTeacher
from distill3d.world_models.text_encoder import (NULL_TOKEN, TOKEN_ID, TextEncoderConfig, WorldTextEncoder,
                                                    object_tokens, tokenize_prompts, tokens_from_labels)
from distill3d.world_models.text_to_image_training import TextToImageTask, tiny_config as tiny_text_to_image


def _folder(tmp_path, name, net, config, dtype=torch.float16):
    folder = tmp_path / name
    folder.mkdir()
    write_json_atomic(folder / "config.json", asdict(config))
    save_weights(net, folder / "model.safetensors", dtype)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained tiny text-to-image, multi-view and classifier folders."""
    tmp = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    t2i, mv, cls = tiny_text_to_image(), tiny_multiview(), tiny_classifier()
    return {"t2i": _folder(tmp, "t2i", WorldTextToImageNet(t2i.net), t2i),
            "mv": _folder(tmp, "mv", WorldMultiViewNet(mv.net), mv),
            "classifier": _folder(tmp, "cls", WorldClassifier(cls.net), cls, torch.float32)}


# ---------------------------------------------------------------------- text encoder
def test_text_encoder_gives_distinct_embeddings_and_rejects_unknown_words():
    torch.manual_seed(0)
    encoder = WorldTextEncoder(TextEncoderConfig(dim=32, num_layers=1, num_heads=2)).eval()
    prompts = ["a red striped torus", "a red striped torus, front view", "a blue striped torus, front view",
               "a red checkered torus, front view", "a red striped mug, front view", "a red striped mug, back view", ""]
    with torch.no_grad():
        emb = encoder.encode(prompts)
    assert emb.shape == (len(prompts), 4, 32)
    flat = emb.flatten(1)
    distances = torch.cdist(flat, flat) + torch.eye(len(prompts)) * 1e3
    assert distances.min() > 1e-3
    assert tokenize_prompts([""]).tolist() == [[TOKEN_ID[NULL_TOKEN]] * 4]
    assert torch.equal(tokenize_prompts(["A Red  Torus"]), tokenize_prompts(["a red plain torus"]))
    for bad in ("a red striped teapot", "a magenta torus", "a red torus, top view"):
        with pytest.raises(UserError):
            encoder.encode([bad])


def test_tokens_from_labels_match_the_prompts():
    objects = all_objects()[::7]
    views = torch.arange(len(objects)) % (len(VIEW_BUCKETS) + 1) - 1  # -1 = no view suffix
    prompts = [o.prompt + ("" if v < 0 else f", {VIEW_BUCKETS[v]} view") for o, v in zip(objects, views.tolist())]
    expected = tokenize_prompts(prompts)
    assert torch.equal(tokens_from_labels(torch.tensor([o.index for o in objects]), views), expected)
    words = [None if v < 0 else VIEW_BUCKETS[v] for v in views.tolist()]
    assert torch.equal(object_tokens(objects, words), expected)


# ---------------------------------------------------------------------- multi-view cameras
def test_relative_cameras_are_canonical_and_invariant_to_the_world_pose():
    layout = MultiViewGroupCameras(num_views=3)
    cams, params = sample_multiview_groups(4, 8, layout, torch.Generator().manual_seed(0))
    inputs, targets = split_groups(cams, 3)
    rel_in, rel_t = relative_cameras(inputs, targets)
    assert torch.allclose(rel_in.c2w[:, :3, :3], torch.eye(3).expand(4, 3, 3), atol=1e-5)
    assert torch.allclose(rel_in.c2w[:, :3, 3], torch.tensor([0.0, 0.0, -1.0]).expand(4, 3), atol=1e-5)
    # the same group turned about the up axis and moved closer has the same relative rays
    turned = orbit_cameras(params["elevation"].reshape(-1), params["azimuth"].reshape(-1) + 40.0,
                           params["distance"].reshape(-1) * 0.8, params["fovy"].reshape(-1), 8, 8)
    inputs2, targets2 = split_groups(turned, 3)
    for a, b in zip(multiview_rays(inputs, targets), multiview_rays(inputs2, targets2)):
        assert torch.allclose(a, b, atol=1e-4)
    # target azimuths are 360 / K apart
    step = torch.remainder(params["azimuth"][:, 2] - params["azimuth"][:, 1], 360.0)
    assert torch.allclose(step, torch.full((4,), 120.0), atol=1e-3)


def test_level_frame_keeps_the_up_axis_and_the_input_elevation():
    layout = MultiViewGroupCameras(num_views=2)
    cams, params = sample_multiview_groups(5, 8, layout, torch.Generator().manual_seed(3))
    inputs, targets = split_groups(cams, 2)
    rel_in, rel_t = relative_cameras(inputs, targets, "level")
    el = torch.deg2rad(params["elevation"][:, 0])
    centre = torch.stack([torch.zeros_like(el), -torch.sin(el), -torch.cos(el)], dim=-1)
    assert torch.allclose(rel_in.c2w[:, :3, 3], centre, atol=1e-5)
    # up is -y in the level frame: the targets, all at one elevation, have one height -y
    t_el = torch.deg2rad(params["elevation"][:, 1])
    heights = -rel_t.c2w[:, 1, 3].reshape(5, 2) * params["distance"][:, :1]
    assert torch.allclose(heights, (params["distance"][:, 1] * torch.sin(t_el))[:, None].expand(5, 2), atol=1e-4)
    # turned about the up axis and moved closer: the same rays; level inputs: the input frame's
    turned = orbit_cameras(params["elevation"].reshape(-1), params["azimuth"].reshape(-1) - 75.0,
                           params["distance"].reshape(-1) * 1.3, params["fovy"].reshape(-1), 8, 8)
    for a, b in zip(multiview_rays(inputs, targets, "level"), multiview_rays(*split_groups(turned, 2), "level")):
        assert torch.allclose(a, b, atol=1e-4)
    level = orbit_cameras(torch.zeros(15), params["azimuth"].reshape(-1), params["distance"].reshape(-1),
                          params["fovy"].reshape(-1), 8, 8)
    for a, b in zip(multiview_rays(*split_groups(level, 2), "level"), multiview_rays(*split_groups(level, 2))):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="camera frame"):
        relative_cameras(inputs, targets, "world")


def test_targets_share_the_input_framing_unless_asked_not_to():
    gen = torch.Generator().manual_seed(1)
    _, shared = sample_multiview_groups(64, 8, MultiViewGroupCameras(num_views=4), gen)
    _, free = sample_multiview_groups(64, 8, MultiViewGroupCameras(num_views=4, targets_share_input_framing=False), gen)
    for key in ("distance", "fovy"):
        assert torch.equal(shared[key][:, 1:], shared[key][:, :1].expand(64, 4))
        assert not torch.allclose(free[key][:, 1], free[key][:, 0])  # independent draws differ
        assert torch.equal(free[key][:, 1:], free[key][:, 1:2].expand(64, 4))  # targets share one framing


# ---------------------------------------------------------------------- training
def test_render_pool_entries_match_their_labels():
    task = MultiViewTask(tiny_multiview())
    pool = task.build_source(torch.device("cpu"))
    pool.fill(torch.Generator().manual_seed(3), progress=False)
    objects = all_objects()
    for i in (0, len(pool) - 1):
        cams = pool.cameras(torch.tensor([i]), slice(None))
        again = render_reference(objects[int(pool.object_index[i])], cams, supersample=1).rgb
        stored = pool.images_float(torch.tensor([i]))[0].permute(0, 2, 3, 1) * 0.5 + 0.5
        assert (again - stored).abs().max() < 1.0 / 255
        expected = view_bucket_index(pool.azimuth[i], pool.elevation[i])
        assert torch.equal(pool.bucket[i], expected)


def test_shape_repeats_give_a_shape_its_share_of_the_pool_and_keep_the_rest_balanced():
    from distill3d.world_models.render_pool import RenderPool, RenderPoolConfig
    from distill3d.world.split import train_objects

    config = RenderPoolConfig(size=4, shape_repeats={"cube": 3, "house": 2})
    pool = RenderPool(config, 1, lambda n, r, g: None)
    objects = train_objects()
    count = {shape: sum(o.shape == shape for o in objects) for shape in ("cube", "house", "sphere")}
    drawn = pool.next_objects(len(pool.objects), torch.Generator().manual_seed(0))  # one permutation
    assert len(pool.objects) == len(objects) + 2 * count["cube"] + count["house"]
    for shape, copies in (("cube", 3), ("house", 2), ("sphere", 1)):
        assert sum(o.shape == shape for o in drawn) == copies * count[shape]
    cubes = [o for o in drawn if o.shape == "cube"]
    assert all(cubes.count(o) == 3 for o in cubes)  # every cube, not only some, three times
    for bad in ({"cuboid": 2}, {"cube": 0}, {"cube": 1.5}):
        with pytest.raises(ValueError, match="shape_repeats"):
            RenderPoolConfig(shape_repeats=bad)


def test_cli_shape_repeats_reach_the_run_config_and_reject_bad_items(tmp_path, capsys):
    args = ["teacher", "train", "multiview", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "r"), "--shape-repeats", "cube=2,house=3"]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["pool"]["shape_repeats"] == {"cube": 2, "house": 3}
    for bad in ("cube", "cube=0", "cuboid=2", "cube=two"):
        capsys.readouterr()
        assert main(args + ["--out", str(tmp_path / "bad"), "--shape-repeats", bad]) == 2
        assert "--shape-repeats" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_diffusion_loss_is_zero_at_the_target():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    abar = torch.tensor([0.9, 0.5, 0.01])
    v = abar.sqrt()[:, None, None, None] * eps - (1 - abar).sqrt()[:, None, None, None] * x0
    assert diffusion_loss(v, x0, eps, abar, "v_prediction") < 1e-10
    assert diffusion_loss(eps, x0, eps, abar, "epsilon") < 1e-10
    # the plain loss: every sample weighs 1; Min-SNR-5 on v: weight min(snr, 5) / (snr + 1)
    assert torch.isclose(diffusion_loss(v + 1.0, x0, eps, abar, "v_prediction"), torch.tensor(1.0))
    loss = diffusion_loss(v + 1.0, x0, eps, abar, "v_prediction", min_snr_gamma=5.0)
    snr = abar / (1 - abar)
    assert torch.isclose(loss, (snr.clamp(max=5.0) / (snr + 1)).mean(), atol=1e-5)


def test_tiny_text_to_image_teacher_loss_goes_down_on_a_fixed_batch():
    config = tiny_text_to_image()
    task = TextToImageTask(config)
    torch.manual_seed(0)
    net = task.build_model()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    tokens = tokenize_prompts(["a red torus, front view", "a blue cube", "a green striped mug, back view", ""])
    t = torch.tensor([100, 300, 500, 700])
    eps = torch.randn(x0.shape, generator=g)
    x_t = task.schedule.add_noise(x0, eps, t)
    v = task.schedule.alpha_bar(t).sqrt()[:, None, None, None] * eps - (1 - task.schedule.alpha_bar(t)).sqrt()[:, None, None, None] * x0
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = (net(x_t, t, tokens) - v).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_resume_continues_with_the_same_next_step(tmp_path):
    config = replace(tiny_text_to_image(), steps=3)
    straight = run_training(TextToImageTask(config), RunOptions(out=tmp_path / "a", progress=False))
    assert straight["finished"] and straight["step"] == 3
    first = replace(config, steps=2)
    part = run_training(TextToImageTask(first), RunOptions(out=tmp_path / "b", progress=False))
    assert part["step"] == 2
    with pytest.raises(UserError):  # a folder with a run is not overwritten without --resume
        run_training(TextToImageTask(config), RunOptions(out=tmp_path / "b", progress=False))
    resumed = run_training(TextToImageTask(config), RunOptions(out=tmp_path / "b", resume=True, progress=False))
    assert resumed["step"] == 3 and resumed["steps_this_run"] == 1
    a, b = load_file(str(tmp_path / "a" / "checkpoint.safetensors")), load_file(str(tmp_path / "b" / "checkpoint.safetensors"))
    for key in a:
        if key.startswith(("module.", "optim.")):
            assert torch.equal(a[key], b[key]), key
    lines = (tmp_path / "b" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 3]
    assert (tmp_path / "b" / "model.safetensors").is_file()


def test_multiview_training_exports_a_loadable_teacher(tmp_path):
    config = replace(tiny_multiview(), steps=2)
    summary = run_training(MultiViewTask(config), RunOptions(out=tmp_path / "run", export_to=tmp_path / "shipped",
                                                             progress=False))
    assert summary["finished"]
    assert sorted(p.name for p in (tmp_path / "shipped").iterdir()) == ["config.json", "model.safetensors"]
    teacher = WorldMultiViewTeacher.from_pretrained(tmp_path / "shipped", device="cpu")
    assert load_file(str(tmp_path / "shipped" / "model.safetensors"))["unet.conv_in.weight"].dtype == torch.float16
    assert teacher.num_views == 2


def _multiview_inputs(net_config, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    layout = MultiViewGroupCameras(num_views=net_config.num_views)
    cams, _ = sample_multiview_groups(batch, net_config.resolution, layout, g)
    R, K = net_config.resolution, net_config.num_views
    input_rays, target_rays = multiview_rays(*split_groups(cams, K))
    x_t = torch.randn(batch * K, 3, R, R, generator=g)
    image = torch.rand(batch, 3, R, R, generator=g) * 2 - 1
    return x_t, torch.full((batch * K,), 500), image, input_rays, target_rays


def test_camera_embedding_starts_as_a_no_op_and_learns(tmp_path):
    """--init-from weights without the camera MLP: the same outputs at first, and the MLP gets gradients."""
    config = tiny_multiview()
    torch.manual_seed(0)
    old = WorldMultiViewNet(replace(config.net, camera_grid=0)).eval()
    save_weights(old, tmp_path / "old.safetensors", torch.float32)
    new = WorldMultiViewNet(config.net).eval()
    with pytest.raises(UserError, match="missing"):
        load_weights(new, tmp_path / "old.safetensors")
    load_weights(new, tmp_path / "old.safetensors", allow_missing=True)
    x_t, t, image, input_rays, target_rays = _multiview_inputs(config.net)
    with torch.no_grad():
        assert torch.equal(new(x_t, t, image, input_rays, target_rays), old(x_t, t, image, input_rays, target_rays))
    new(x_t, t, image, input_rays, target_rays).square().mean().backward()
    assert new.unet.class_embedding.linear_2.weight.grad.abs().max() > 0


def test_cli_min_snr_gamma_sets_the_loss_weighting_of_teachers_only(tmp_path, capsys):
    args = ["teacher", "train", "multiview", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "plain"), "--min-snr-gamma", "0"]) == 0
    assert main(args + ["--out", str(tmp_path / "snr"), "--min-snr-gamma", "5"]) == 0
    assert json.loads((tmp_path / "plain" / "config.json").read_text())["min_snr_gamma"] is None
    assert json.loads((tmp_path / "snr" / "config.json").read_text())["min_snr_gamma"] == 5.0
    capsys.readouterr()
    assert main(["teacher", "train", "classifier", "--tiny", "--out", str(tmp_path / "c"), "--min-snr-gamma", "5"]) == 2
    assert "diffusion teachers" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cli_camera_frame_sets_the_multiview_frame_only(tmp_path, capsys):
    args = ["teacher", "train", "multiview", "--tiny", "--steps", "1", "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "default")]) == 0
    assert main(args + ["--out", str(tmp_path / "input"), "--camera-frame", "input"]) == 0
    assert json.loads((tmp_path / "default" / "config.json").read_text())["net"]["camera_frame"] == "level"
    assert json.loads((tmp_path / "input" / "config.json").read_text())["net"]["camera_frame"] == "input"
    capsys.readouterr()
    classifier = ["teacher", "train", "classifier", "--tiny", "--out", str(tmp_path / "c")]
    assert main(classifier + ["--camera-frame", "level"]) == 2
    assert "multi-view teacher" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_multiview_folder_from_before_the_camera_mlp_and_level_frame_still_loads(tmp_path):
    config = tiny_multiview()
    old_config = replace(config, net=replace(config.net, camera_grid=0))
    folder = _folder(tmp_path, "old", WorldMultiViewNet(old_config.net), old_config)
    raw = json.loads((folder / "config.json").read_text())
    del raw["net"]["camera_grid"], raw["net"]["camera_frame"]  # written before the fields existed
    (folder / "config.json").write_text(json.dumps(raw))
    teacher = WorldMultiViewTeacher.from_pretrained(folder, device="cpu")
    assert teacher.num_views == 2 and teacher.config.net.camera_frame == "input"


def test_camera_vectors_average_the_rays_per_cell():
    rays = torch.randn(3, 6, 8, 8)
    expected = rays.reshape(3, 6, 2, 4, 2, 4).mean(dim=(3, 5)).flatten(1)
    assert torch.allclose(camera_vectors(rays, 2), expected, atol=1e-6)


# ---------------------------------------------------------------------- teachers
def test_save_load_round_trip_gives_identical_outputs(models):
    config = tiny_text_to_image()
    torch.manual_seed(0)
    net = WorldTextToImageNet(config.net).half().float().eval()  # the fixture saved these weights in float16
    teacher = WorldTextToImageTeacher.from_pretrained(models["t2i"], device="cpu")
    x = torch.randn(2, 3, 16, 16)
    cond = teacher.encode_prompt(["a red torus, side view", "a blue mug"])
    with torch.no_grad():
        expected = net.predict(x, torch.tensor([10, 900]), cond.cond)
    got = teacher._predict(x, torch.tensor([10, 900]), cond.cond)
    assert torch.equal(got, expected)
    with pytest.raises(UserError):  # a multi-view folder is not a text-to-image teacher
        WorldTextToImageTeacher.from_pretrained(models["mv"], device="cpu")
    with pytest.raises(UserError):
        WorldTextToImageTeacher.from_pretrained("no-such-model", device="cpu")


def _check_denoise(teacher, x_t, t, cond, scale):
    out = teacher.denoise(x_t, t, cond, guidance_scale=scale)
    abar = teacher.schedule.alpha_bar(torch.as_tensor(t)).reshape(-1, 1, 1, 1)
    assert out.x0.shape == x_t.shape and out.eps.shape == x_t.shape
    assert torch.allclose(abar.sqrt() * out.x0 + (1 - abar).sqrt() * out.eps, x_t, atol=1e-4)


def test_teachers_satisfy_the_teacher_interface(models):
    t2i = WorldTextToImageTeacher.from_pretrained(models["t2i"], device="cpu")
    assert isinstance(t2i, Teacher) and t2i.latent_channels == 3 and t2i.native_image_size == 16
    x_t = torch.randn(2, 3, 16, 16)
    cond = t2i.encode_prompt(["a red torus, front view", "a yellow checkered house, overhead view"])
    for scale in (1.0, 4.0):
        _check_denoise(t2i, x_t, torch.tensor([50, 800]), cond, scale)

    mv = WorldMultiViewTeacher.from_pretrained(models["mv"], device="cpu")
    assert isinstance(mv, Teacher) and mv.num_views == 2
    cams, _ = sample_multiview_groups(2, 16, mv.config.cameras, torch.Generator().manual_seed(0))
    inputs, targets = split_groups(cams, 2)
    mv_cond = mv.encode_condition(torch.rand(2, 32, 32, 3), inputs, targets.resized(32, 32))
    assert mv_cond.num_views == 2 and mv_cond.input_image.shape == (2, 3, 16, 16)
    for scale in (1.0, 3.0):
        _check_denoise(mv, torch.randn(4, 3, 16, 16), 400, mv_cond, scale)
    noise = torch.randn(4, 3, 16, 16)
    views = mv.sample(mv_cond, num_steps=2, noise=noise)
    assert views.shape == (2, 2, 16, 16, 3)
    assert torch.equal(views, mv.sample(mv_cond, num_steps=2, noise=noise))  # deterministic given the noise
    with pytest.raises(UserError):
        mv.encode_prompt(["a red torus"])


def test_multiview_eval_groups_of_shapes_are_the_evaluations_groups_of_those_shapes(models):
    from distill3d.eval.teacher_quality import multiview_eval_groups, multiview_eval_groups_of_shapes

    mv = WorldMultiViewTeacher.from_pretrained(models["mv"], device="cpu")
    objects, cams = multiview_eval_groups(mv, 256, 0)
    chosen, chosen_cams = multiview_eval_groups_of_shapes(mv, ("cube", "mug"), 5)
    first = [i for i, o in enumerate(objects) if o.shape in ("cube", "mug")][:5]
    assert chosen == [objects[i] for i in first] and len(chosen) == 5
    for n, i in enumerate(first):
        assert torch.equal(chosen_cams.c2w[n * 3:n * 3 + 3], cams.c2w[i * 3:i * 3 + 3])  # 1 input + 2 targets


def test_cli_sample_writes_a_png(models, tmp_path):
    out = tmp_path / "samples.png"
    assert main(["teacher", "sample", "--prompt", "a red striped torus, front view", "--teacher", str(models["t2i"]),
                 "--count", "2", "--steps", "2", "--device", "cpu", "--out", str(out)]) == 0
    assert Image.open(out).size == (32, 16)
    assert main(["teacher", "sample", "--prompt", "a red teapot", "--teacher", str(models["t2i"]),
                 "--device", "cpu", "--out", str(out)]) == 2


def test_eval_of_untrained_tiny_teachers_returns_the_metrics(models, tmp_path):
    classifier = WorldClassifier.from_pretrained(models["classifier"], device="cpu")
    t2i = WorldTextToImageTeacher.from_pretrained(models["t2i"], device="cpu")
    metrics = evaluate_text_to_image(t2i, classifier, count=4, num_steps=2, progress=False)
    for key in ("shape_accuracy", "colour_accuracy", "pattern_accuracy", "bucket_accuracy_front_shapes",
                "reference_shape_accuracy", "passed"):
        assert key in metrics
    assert 0.0 <= metrics["shape_accuracy"] <= 1.0
    out = tmp_path / "mv.json"
    assert main(["teacher", "eval", "multiview", "--teacher", str(models["mv"]), "--count", "2", "--steps", "2",
                 "--device", "cpu", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert {"psnr", "ssim", "psnr_per_view", "passed"} <= set(metrics) and len(metrics["psnr_per_view"]) == 2
    assert set(metrics["psnr_per_shape"]) == {"sphere"}  # the first two held-out objects
    assert metrics["psnr_per_shape"]["sphere"] == pytest.approx(metrics["psnr"])


def test_multiview_figures_per_shape_average_each_shapes_groups():
    objects = [WorldObject("red", "plain", "cube"), WorldObject("red", "plain", "sphere"),
               WorldObject("blue", "striped", "cube")]
    psnrs = torch.tensor([[10.0, 12.0], [30.0, 30.0], [20.0, 22.0]])
    figures = figures_per_shape(objects, psnrs, psnrs / 100)
    assert figures["psnr_per_shape"] == {"cube": pytest.approx(16.0), "sphere": pytest.approx(30.0)}
    assert figures["ssim_per_shape"]["cube"] == pytest.approx(0.16)


def test_learning_rate_warms_up_then_anneals_to_zero_at_the_last_step():
    constant = OptimConfig(lr=1e-3, warmup_steps=10)
    assert lr_at(constant, 0, 100) == pytest.approx(1e-4)
    assert lr_at(constant, 9, 100) == lr_at(constant, 99, 100) == pytest.approx(1e-3)
    annealed = replace(constant, anneal_steps=40)
    assert lr_at(annealed, 59, 100) == pytest.approx(1e-3)
    assert lr_at(annealed, 80, 100) == pytest.approx(0.5e-3)
    assert lr_at(annealed, 99, 100) == pytest.approx(1e-3 / 40)
    assert lr_at(annealed, 100, 100) == 0.0
