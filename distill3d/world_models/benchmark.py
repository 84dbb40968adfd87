"""Speed of the world teachers and classifier (``distill3d teacher benchmark``).

Per model: parameters and weight-file size (float16 / float32 as exported); one ``denoise``
call at batch 8 and 64 (views), with and without classifier-free guidance (for the text-to-image
teacher also replayed from CUDA graphs, keys ``graphed_*``); 50-step DDIM
throughput; training throughput (bf16 autocast on CUDA, AdamW, batch of the training config)
and the reference renderer's throughput when filling a render pool. Weights are random:
speed does not depend on them.
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import replace
from typing import Callable

import torch

from distill3d.devices import pick_device
from distill3d.random_streams import Generators
from distill3d.world_models.networks import WorldMultiViewNet, WorldTextToImageNet, count_parameters


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Mean seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def _training(task, device: torch.device, steps: int, pool_entries: int) -> dict:
    """Fill a small pool (renderer speed), then time ``steps`` optimiser steps."""
    config = task.config
    pool_cfg = replace(config.pool, size=max(pool_entries, config.pool.block_size))
    task.config = replace(config, pool=pool_cfg)
    pool = task.build_source(device)
    generators = Generators.seeded(0, 0, device)
    start = time.perf_counter()
    pool.fill(generators.data, progress=False)
    _sync(device)
    render_s = time.perf_counter() - start
    views = len(pool) * pool.views
    model = task.build_model().to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch = config.optim.batch_size

    def step():
        with _autocast(device):
            loss = task.loss(model, pool, batch, generators)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = _seconds(step, device, steps, warmup=2)
    task.config = config
    return {"batch_size": batch, "views_per_entry": pool.views, "seconds_per_step": seconds,
            "entries_per_second": batch / seconds, "images_per_second": batch * pool.views / seconds,
            "render_images_per_second": views / render_s, "render_images": views}


def _size(module: torch.nn.Module, bytes_per_param: int) -> dict:
    n = count_parameters(module)
    return {"parameters": n, "weights_mib": n * bytes_per_param / 2 ** 20}


@torch.no_grad()
def _denoise_times(teacher, make_inputs, device: torch.device, repeats: int, prefix: str = "") -> dict:
    out = {}
    for batch in (8, 64):
        x, t, cond = make_inputs(batch)
        for scale, name in ((1.0, "no_cfg"), (teacher.default_guidance_scale if teacher.default_guidance_scale != 1.0
                                              else 3.0, "cfg")):
            out[f"{prefix}denoise_batch{batch}_{name}_ms"] = 1000 * _seconds(lambda: teacher.denoise(x, t, cond, scale),
                                                                     device, repeats)
    return out


def benchmark_text_to_image(tiny: bool, device: torch.device) -> dict:
    from distill3d.world_models.text_to_image_training import TextToImageTask, TextToImageTrainConfig, tiny_config
    from distill3d.world_models.teachers import WorldTextToImageTeacher

    config = tiny_config() if tiny else TextToImageTrainConfig()
    net = WorldTextToImageNet(config.net)
    teacher = WorldTextToImageTeacher(net, config, device=device, cuda_graphs=False)
    graphed = WorldTextToImageTeacher(net, config, device=device, cuda_graphs=True)
    R = teacher.native_image_size
    prompts = ["a red striped torus, front view"]

    def inputs(batch):
        cond = teacher.encode_prompt(prompts * batch)
        return torch.randn(batch, 3, R, R, device=device), torch.full((batch,), 500, device=device), cond

    repeats = 2 if tiny else 20
    result = {**_size(teacher.net, 2), **_denoise_times(teacher, inputs, device, repeats),
              **_denoise_times(graphed, inputs, device, repeats, prefix="graphed_")}
    steps, batch = (2, 4) if tiny else (50, 64)
    for name, model in (("", teacher), ("graphed_", graphed)):
        seconds = _seconds(lambda: model.sample(prompts * batch, num_steps=steps), device, 1, warmup=1)
        result[f"{name}sample_images_per_second"] = batch / seconds
    result.update({"sample_steps": steps, "sample_batch": batch})
    task = TextToImageTask(config)
    result["training"] = _training(task, device, 3 if tiny else 30, 16 if tiny else 2048)
    return result


def benchmark_multiview(tiny: bool, device: torch.device) -> dict:
    from distill3d.world_models.multiview_cameras import sample_multiview_groups, split_groups
    from distill3d.world_models.multiview_training import MultiViewTask, MultiViewTrainConfig, tiny_config
    from distill3d.world_models.teachers import WorldMultiViewTeacher

    config = tiny_config() if tiny else MultiViewTrainConfig()
    teacher = WorldMultiViewTeacher(WorldMultiViewNet(config.net), config, device=device)
    R, K = teacher.native_image_size, teacher.num_views

    def cond_for(objects: int):
        cams, _ = sample_multiview_groups(objects, R, config.cameras, torch.Generator().manual_seed(0))
        inputs, targets = split_groups(cams, K)
        return teacher.encode_condition(torch.ones(objects, R, R, 3, device=device), inputs, targets)

    def inputs(views):
        objects = max(1, views // K)
        return (torch.randn(objects * K, 3, R, R, device=device), torch.full((objects * K,), 500, device=device),
                cond_for(objects))

    result = {**_size(teacher.net, 2), "num_views": K,
              **_denoise_times(teacher, inputs, device, 2 if tiny else 20)}
    steps, objects = (2, 2) if tiny else (50, 16)
    cond = cond_for(objects)
    seconds = _seconds(lambda: teacher.sample(cond, num_steps=steps), device, 1, warmup=1)
    result.update({"sample_steps": steps, "sample_objects": objects, "sample_groups_per_second": objects / seconds,
                   "sample_views_per_second": objects * K / seconds})
    result["training"] = _training(MultiViewTask(config), device, 3 if tiny else 30, 8 if tiny else 384)
    return result


def benchmark_classifier(tiny: bool, device: torch.device) -> dict:
    from distill3d.world_models.classifier_training import ClassifierTask, ClassifierTrainConfig, tiny_config
    from distill3d.world_models.classifier import WorldClassifier

    config = tiny_config() if tiny else ClassifierTrainConfig()
    model = WorldClassifier(config.net).to(device).eval()
    images = torch.rand(256, config.net.resolution, config.net.resolution, 3, device=device)
    seconds = _seconds(lambda: model.log_probs(images), device, 2 if tiny else 10)
    result = {**_size(model, 4), "inference_images_per_second": 256 / seconds}
    result["training"] = _training(ClassifierTask(config), device, 3 if tiny else 30, 16 if tiny else 2048)
    return result


def run_benchmark(tiny: bool = False, device: torch.device | str | None = None) -> dict:
    """All timings as one JSON-ready dict."""
    device = pick_device(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"device": name, "torch": torch.__version__, "tiny": tiny,
            "text_to_image": benchmark_text_to_image(tiny, device),
            "multiview": benchmark_multiview(tiny, device),
            "classifier": benchmark_classifier(tiny, device)}
