"""``distill3d teacher``: train, sample, evaluate and time the world teachers and classifier.

    distill3d teacher train {text-to-image,multiview,classifier} --out DIR [--resume] [--max-minutes M]
                            [--steps N] [--batch-size B] [--lr LR] [--seed S] [--device D] [--tiny]
                            [--warmup-steps W] [--anneal-steps A]
                            [--export-to distill3d/weights/NAME] [--init-from DIR] [--set FIELD=VALUE ...]
    distill3d teacher sample --prompt P [--teacher NAME|PATH] [--seed S] [--count N] --out PNG
    distill3d teacher sample-multiview (--prompt P | --image PNG) [--teacher NAME|PATH] --out PNG
    distill3d teacher eval {classifier,text-to-image,multiview} [--teacher NAME|PATH] [--count N] --out JSON
    distill3d teacher benchmark [--tiny] --out JSON
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distill3d.errors import UserError

TRAINABLE = ("text-to-image", "multiview", "classifier")


def register(subparsers, help_text: str) -> None:
    from distill3d.world_models.multiview_cameras import CAMERA_FRAMES

    teacher = subparsers.add_parser("teacher", help=help_text,
                                    description="The world's text-to-image and multi-view teachers and its classifier.")
    commands = teacher.add_subparsers(dest="teacher_command", metavar="COMMAND", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    p = commands.add_parser("train", help="train a world teacher or the classifier", formatter_class=fmt,
                            description="Train on reference renders made on the fly; resumable, time-boxed.")
    p.add_argument("model", choices=TRAINABLE)
    p.add_argument("--out", type=Path, required=True, help="run folder (config, checkpoint, weights, log)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out if it has a checkpoint")
    p.add_argument("--max-minutes", type=float, default=None, help="save and stop before this many minutes")
    p.add_argument("--steps", type=int, default=None, help="total training steps (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None, help="batch per process (default: the config's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the config's)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear lr warm-up (default: the config's)")
    p.add_argument("--anneal-steps", type=int, default=None,
                   help="decay lr linearly to 0 over the last N of --steps (default: the config's, 0 = constant)")
    p.add_argument("--pool-size", type=int, default=None, help="render pool entries (default: the config's)")
    p.add_argument("--shape-repeats", default=None, metavar="SHAPE=N,...",
                   help="draw every training object of these shapes N times as often, e.g. cube=2,house=2")
    p.add_argument("--min-snr-gamma", type=float, default=None,
                   help="diffusion teachers: Min-SNR gamma of the loss weights, 0 for the plain loss "
                        "(default: the config's)")
    p.add_argument("--camera-frame", choices=CAMERA_FRAMES, default=None,
                   help="multi-view teacher: frame of its relative cameras (default: the config's, level)")
    p.add_argument("--recolour", choices=("permute", "mix"), default=None,
                   help="classifier: show part of each batch with its RGB channels permuted, or in random "
                        "colours by mixing them (default: the config's, mix)")
    p.add_argument("--recolour-fraction", type=float, default=None,
                   help="classifier: share of each batch shown in other colours (default: the config's, 0.75)")
    p.add_argument("--recolour-guard", choices=("pattern", "shape"), default=None,
                   help="classifier, --recolour mix: keep random colours away from held-out objects of the same "
                        "shape and pattern, or of the same shape whatever the pattern (default: the config's, shape)")
    p.add_argument("--skip-heldout-colour-shapes", action="store_true", default=None,
                   help="classifier: train on no object that shares shape and colour with a held-out object")
    p.add_argument("--pattern-labels", choices=("all", "off-heldout-looks", "recoloured"), default=None,
                   help="classifier: images that carry their pattern label: all; all but those, in their own "
                        "colours, of an object sharing shape and colour with a held-out one; only the recoloured "
                        "ones (default: the config's, off-heldout-looks)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="any other field of the training config (config.json), after the options above; dots "
                        "walk into nested settings; repeatable, e.g. --set blur_probability=0.1 "
                        "--set pool.refresh_every=25")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tiny", action="store_true", help="tiny sizes for CPU tests")
    p.add_argument("--export-to", type=Path, default=None, help="also copy config.json + model.safetensors here")
    p.add_argument("--init-from", type=Path, default=None, help="start from the weights of this model folder")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.set_defaults(run=_train)

    p = commands.add_parser("sample", help="sample the text-to-image teacher", formatter_class=fmt)
    p.add_argument("--prompt", required=True, help="e.g. 'a red striped torus, front view'")
    p.add_argument("--teacher", default=None, help="model folder or shipped name (default: world-text-to-image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1, help="samples, written side by side")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance-scale", type=float, default=None, help="CFG scale (default: the teacher's)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="PNG file")
    p.set_defaults(run=_sample)

    p = commands.add_parser("sample-multiview", help="sample the multi-view teacher", formatter_class=fmt,
                            description="Target views around an input view: a world object rendered from "
                                        "--elevation/--azimuth (--prompt), or an RGBA/RGB image (--image).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="world object whose reference render is the input view")
    source.add_argument("--image", type=Path, help="input image (alpha is composited over white)")
    p.add_argument("--teacher", default=None, help="model folder or shipped name (default: world-multiview)")
    p.add_argument("--elevation", type=float, default=15.0, help="input view elevation (degrees)")
    p.add_argument("--azimuth", type=float, default=30.0, help="input view azimuth (degrees)")
    p.add_argument("--distance", type=float, default=2.6)
    p.add_argument("--fovy", type=float, default=40.0)
    p.add_argument("--target-elevation", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="PNG: input view, then the target views")
    p.set_defaults(run=_sample_multiview)

    p = commands.add_parser("eval", help="measure quality on held-out objects", formatter_class=fmt)
    p.add_argument("model", choices=TRAINABLE)
    p.add_argument("--teacher", default=None, help="model folder or shipped name of the model evaluated")
    p.add_argument("--classifier", default=None, help="classifier that reads text-to-image samples")
    p.add_argument("--count", type=int, default=None, help="images (groups for multiview)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--guidance-scale", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--samples", type=Path, default=None, help="also write a PNG grid of samples")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="JSON file")
    p.set_defaults(run=_eval)

    p = commands.add_parser("benchmark", help="time the teachers (denoise, sampling, training)", formatter_class=fmt)
    p.add_argument("--tiny", action="store_true", help="tiny networks (CPU smoke test)")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None, help="JSON file (printed either way)")
    p.set_defaults(run=_benchmark)


# ---------------------------------------------------------------------- train
def _trainer(model: str):
    if model == "text-to-image":
        from distill3d.world_models import text_to_image_training as m
        return m.TextToImageTrainConfig, m.tiny_config, m.TextToImageTask
    if model == "multiview":
        from distill3d.world_models import multiview_training as m
        return m.MultiViewTrainConfig, m.tiny_config, m.MultiViewTask
    from distill3d.world_models import classifier_training as m
    return m.ClassifierTrainConfig, m.tiny_config, m.ClassifierTask


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distill3d.cli.config_overrides import apply_overrides
    from distill3d.configs import config_from_dict
    from distill3d.training.network_trainer import RunOptions, run_training
    from distill3d.training.run_dir import RunDir

    config_cls, tiny, task_cls = _trainer(args.model)
    run = RunDir(args.out)
    run.check(method=f"teacher train {args.model}", resume=args.resume)  # the folder, before any work
    if args.resume and run.config_path.exists():
        config = config_from_dict(config_cls, run.read_config())
    else:
        config = tiny() if args.tiny else config_cls()
    optim = config.optim
    for name in ("batch_size", "lr", "seed", "warmup_steps", "anneal_steps"):
        if getattr(args, name) is not None:
            optim = replace(optim, **{name: getattr(args, name)})
    config = replace(config, optim=optim)
    if args.steps is not None:
        config = replace(config, steps=args.steps)
    if args.pool_size is not None:
        config = replace(config, pool=replace(config.pool, size=args.pool_size))
    if args.shape_repeats is not None:
        repeats = _shape_repeats(args.shape_repeats)
        try:  # RenderPoolConfig checks the shapes and counts
            config = replace(config, pool=replace(config.pool, shape_repeats=repeats))
        except ValueError as error:
            raise UserError(f"--shape-repeats: {error}") from None
    if args.min_snr_gamma is not None:
        if not hasattr(config, "min_snr_gamma"):
            raise UserError(f"--min-snr-gamma is for the diffusion teachers, not the {args.model}")
        if args.min_snr_gamma < 0:
            raise UserError("--min-snr-gamma must be 0 (plain loss) or positive")
        config = replace(config, min_snr_gamma=args.min_snr_gamma or None)
    if args.camera_frame is not None:
        if not hasattr(config.net, "camera_frame"):
            raise UserError(f"--camera-frame is for the multi-view teacher, not the {args.model}")
        config = replace(config, net=replace(config.net, camera_frame=args.camera_frame))
    for name in ("recolour", "recolour_fraction", "recolour_guard", "skip_heldout_colour_shapes", "pattern_labels"):
        if getattr(args, name) is not None:
            if not hasattr(config, name):
                raise UserError(f"--{name.replace('_', '-')} is for the classifier, not the {args.model}")
            try:
                config = replace(config, **{name: getattr(args, name)})
            except ValueError as error:
                raise UserError(f"--{name.replace('_', '-')}: {error}") from None
    config = apply_overrides(config, args.overrides)
    options = RunOptions(out=args.out, method=f"teacher train {args.model}", resume=args.resume,
                         max_minutes=args.max_minutes, device=args.device, export_to=args.export_to,
                         init_from=args.init_from, log_every=args.log_every, compile=args.compile)
    try:
        task = task_cls(config)
    except ValueError as error:  # settings that each read well but do not fit together
        raise UserError(f"the {args.model} training config does not hold together: {error}") from None
    summary = run_training(task, options)
    state = "finished" if summary["finished"] else "stopped (resume with --resume)"
    if summary["main_process"]:
        print(f"{args.model}: step {summary['step']}/{summary['steps']} {state}; run folder {summary['out']}")
    return 0


def _shape_repeats(text: str) -> dict[str, int]:
    """'cube=2,house=3' -> {'cube': 2, 'house': 3}; '' -> {} (every shape once). Only the form is
    checked here; ``RenderPoolConfig`` checks the shapes and counts."""
    repeats = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        shape, _, count = item.partition("=")
        if not count.isdigit():
            raise UserError(f"--shape-repeats takes SHAPE=N items, e.g. cube=2,house=3; got {item!r}")
        repeats[shape] = int(count)
    return repeats


# ---------------------------------------------------------------------- sample
def _at_least_one(args: argparse.Namespace, *names: str) -> None:
    """A ``UserError`` for an option below 1 (options left at None are not checked)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "guidance_scale", None) is not None and args.guidance_scale < 0:
        raise UserError(f"--guidance-scale must not be negative, got {args.guidance_scale}")


def _sample(args: argparse.Namespace) -> int:
    import torch

    from distill3d.eval.teacher_quality import save_grid
    from distill3d.world_models.teachers import DEFAULT_TEXT_TO_IMAGE, WorldTextToImageTeacher

    _png(args.out)
    _at_least_one(args, "count", "steps")
    teacher = WorldTextToImageTeacher.from_pretrained(args.teacher or DEFAULT_TEXT_TO_IMAGE, device=args.device)
    teacher.encode_prompt([args.prompt])  # rejects unknown words before any work
    generator = torch.Generator(device=teacher.device).manual_seed(args.seed)
    images = teacher.sample([args.prompt] * args.count, num_steps=args.steps, guidance_scale=args.guidance_scale,
                            generator=generator, progress=True)
    path = save_grid(images, args.out, columns=args.count)
    print(f"wrote {path}")
    return 0


def _png(path: Path) -> Path:
    if path.suffix.lower() != ".png":
        raise UserError(f"--out must be a .png file, got {path}")
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a .png file")
    return path


def _json_out(path: Path) -> Path:
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a .json file")
    return path


def _load_input_image(path: Path, size: int) -> torch.Tensor:
    import numpy as np
    import torch
    from PIL import Image

    if not path.is_file():
        raise UserError(f"no image file {path}")
    image = Image.open(path).convert("RGBA").resize((size, size), Image.LANCZOS)
    rgba = torch.from_numpy(np.asarray(image).copy()).float() / 255.0
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    return rgb[None]


def _sample_multiview(args: argparse.Namespace) -> int:
    import torch

    from distill3d.cameras import orbit_cameras
    from distill3d.eval.teacher_quality import save_grid
    from distill3d.world.prompts import parse_prompt
    from distill3d.world.reference_render import render_reference
    from distill3d.world_models.teachers import DEFAULT_MULTIVIEW, WorldMultiViewTeacher

    _png(args.out)
    _at_least_one(args, "steps")
    teacher = WorldMultiViewTeacher.from_pretrained(args.teacher or DEFAULT_MULTIVIEW, device=args.device)
    R, K = teacher.native_image_size, teacher.num_views
    input_cam = orbit_cameras(args.elevation, args.azimuth, args.distance, args.fovy, R, R).to(teacher.device)
    az = args.azimuth + torch.arange(K, dtype=torch.float32) * (360.0 / K)
    targets = orbit_cameras(args.target_elevation, az, args.distance, args.fovy, R, R).to(teacher.device)
    if args.prompt is not None:
        obj, _ = parse_prompt(args.prompt)
        image = render_reference(obj, input_cam).rgb
    else:
        image = _load_input_image(args.image, R).to(teacher.device)
    cond = teacher.encode_condition(image, input_cam, targets)
    generator = torch.Generator(device=teacher.device).manual_seed(args.seed)
    views = teacher.sample(cond, num_steps=args.steps, guidance_scale=args.guidance_scale, generator=generator,
                           progress=True)
    path = save_grid(torch.cat([image.cpu(), views[0].cpu()]), args.out, columns=K + 1)
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------- eval / benchmark
def _eval(args: argparse.Namespace) -> int:
    from distill3d.eval import teacher_quality as q
    from distill3d.world_models.classifier import DEFAULT_CLASSIFIER, WorldClassifier

    _json_out(args.out)
    _at_least_one(args, "count", "steps", "batch_size")
    extra = {} if args.batch_size is None else {"batch_size": args.batch_size}
    count = {} if args.count is None else {"count": args.count}
    if args.model == "classifier":
        classifier = WorldClassifier.from_pretrained(args.teacher or DEFAULT_CLASSIFIER, device=args.device)
        metrics = q.evaluate_classifier(classifier, seed=args.seed, **count)
    elif args.model == "text-to-image":
        from distill3d.world_models.teachers import DEFAULT_TEXT_TO_IMAGE, WorldTextToImageTeacher
        teacher = WorldTextToImageTeacher.from_pretrained(args.teacher or DEFAULT_TEXT_TO_IMAGE, device=args.device)
        classifier = WorldClassifier.from_pretrained(args.classifier or DEFAULT_CLASSIFIER, device=teacher.device)
        metrics = q.evaluate_text_to_image(teacher, classifier, seed=args.seed, guidance_scale=args.guidance_scale,
                                           num_steps=args.steps, samples_png=args.samples, **count, **extra)
    else:
        from distill3d.world_models.teachers import DEFAULT_MULTIVIEW, WorldMultiViewTeacher
        teacher = WorldMultiViewTeacher.from_pretrained(args.teacher or DEFAULT_MULTIVIEW, device=args.device)
        metrics = q.evaluate_multiview(teacher, seed=args.seed, guidance_scale=args.guidance_scale,
                                       num_steps=args.steps, samples_png=args.samples, **count, **extra)
    metrics["model"] = args.model
    _write_json(args.out, metrics)
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from distill3d.world_models.benchmark import run_benchmark

    if args.out is not None:
        _json_out(args.out)
    results = run_benchmark(tiny=args.tiny, device=args.device)
    if args.out is not None:
        _write_json(args.out, results)
    else:
        print(json.dumps(results, indent=2))
    return 0


def _write_json(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    print(f"wrote {path}")
