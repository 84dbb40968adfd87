"""``distill3d eval``: score finished runs against the world's ground truth.

    distill3d eval text-to-3d RUN_DIR [RUN_DIR ...] --out JSON [--classifier NAME|PATH] [--views N]
                              [--device auto|cpu|cuda]
    distill3d eval image-to-3d --model STUDENT --out JSON [--count N] [--teacher-steps 50]
    distill3d eval fid DIR_A DIR_B [--features classifier|inception:PATH] [--kid-subsets 100]
                       [--kid-subset-size 1000] [--out JSON] [--device auto|cpu|cuda]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill3d.errors import UserError

COLUMNS = (("r_precision", "R-prec"), ("shape_accuracy", "shape"), ("colour_accuracy", "colour"),
           ("pattern_accuracy", "pattern"), ("mask_iou", "IoU"), ("psnr", "PSNR"), ("best_rotation_deg", "rot"))
"""Result key -> column title of the printed table."""


def register(subparsers, help_text: str) -> None:
    from distill3d.world_models.classifier import DEFAULT_CLASSIFIER
    from distill3d.eval.text_to_3d import TextTo3DEvalConfig

    defaults = TextTo3DEvalConfig()
    evaluate = subparsers.add_parser("eval", help=help_text,
                                     description="Evaluate the outputs of distill3d methods with the world "
                                                 "classifier and the reference renderer.")
    commands = evaluate.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    p = commands.add_parser("text-to-3d", help="R-precision, attribute accuracy, mask IoU and PSNR of text-to-3d runs",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Render each run's asset from views at uniform azimuth, read them with "
                                        "the world classifier and compare them with reference renders of the "
                                        "prompt's object (up to the best turn about the up axis).")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="folders written by distill3d text-to-3d")
    p.add_argument("--out", type=Path, required=True, help="JSON file: per-run figures and their mean")
    p.add_argument("--classifier", default=DEFAULT_CLASSIFIER, help="classifier folder or shipped name")
    p.add_argument("--views", type=int, default=defaults.num_views, help="views at uniform azimuth")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="views rendered at once")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(run=_text_to_3d)

    from distill3d.eval.image_to_3d import ImageTo3DEvalConfig

    image_defaults = ImageTo3DEvalConfig()
    q = commands.add_parser("image-to-3d", help="PSNR, SSIM, mask IoU, perceptual distance and attribute accuracy "
                                                "of a DD3G student on held-out objects",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Give the student exact renders of held-out world objects with their "
                                        "cameras and compare its Gaussians with the reference renderer on 12 novel "
                                        "views, the teacher's views and a 120-view turntable "
                                        "(distill3d/eval/image_to_3d.py).")
    q.add_argument("--model", required=True, help="a `distill3d dd3g train` run folder or exported model folder")
    q.add_argument("--out", type=Path, required=True, help="JSON file: per-object figures and their mean")
    q.add_argument("--count", type=int, default=image_defaults.count, help="held-out objects")
    q.add_argument("--seed", type=int, default=image_defaults.seed, help="cameras and noise")
    q.add_argument("--teacher-steps", type=int, default=None,
                   help="also score the teacher's own views with this many DDIM steps (50 as collected)")
    q.add_argument("--split", choices=("heldout", "train"), default=image_defaults.split,
                   help="objects to score: held-out ones, or training ones to measure the generalisation gap")
    q.add_argument("--perceptual", default="classifier", help="classifier or lpips:BACKBONE_FILE:LINEAR_FILE")
    q.add_argument("--classifier", default=DEFAULT_CLASSIFIER, help="classifier folder or shipped name")
    q.add_argument("--batch-size", type=int, default=image_defaults.batch_size, help="objects at once")
    q.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    q.set_defaults(run=_image_to_3d)

    from distill3d.eval.fid import FolderFIDConfig

    fid_defaults = FolderFIDConfig()
    f = commands.add_parser("fid", help="FID and KID between two folders of images",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                            description="Frechet distance and kernel distance (KID) between the features of the "
                                        "images of two folders (.png/.jpg/.jpeg; transparency over white). "
                                        "Features: the shipped world classifier (not comparable with published "
                                        "FIDs) or Inception-v3 from a weights file (distill3d/eval/fid.py).")
    f.add_argument("dir_a", type=Path, metavar="DIR_A", help="first folder of images")
    f.add_argument("dir_b", type=Path, metavar="DIR_B", help="second folder of images")
    f.add_argument("--features", default="classifier",
                   help="classifier, classifier:FOLDER or inception:WEIGHTS_FILE (pt_inception-2015-12-05 "
                        "or torchvision's inception_v3 weights; needs torchvision)")
    f.add_argument("--kid-subsets", type=int, default=fid_defaults.kid_subsets, help="KID's random subsets")
    f.add_argument("--kid-subset-size", type=int, default=fid_defaults.kid_subset_size,
                   help="images per KID subset, clipped to the smaller folder")
    f.add_argument("--batch-size", type=int, default=fid_defaults.batch_size, help="images through the network at once")
    f.add_argument("--recursive", action="store_true", help="also read images in sub-folders")
    f.add_argument("--seed", type=int, default=fid_defaults.seed, help="KID's subsets")
    f.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    f.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    f.set_defaults(run=_fid)


def format_table(results: list[dict], mean: dict) -> str:
    """A plain-text table: one row per run, then the mean."""
    head = f"{'run':<28} {'prompt':<28}" + "".join(f" {title:>8}" for _, title in COLUMNS)
    rows = [head]
    for r in results:
        rows.append(f"{Path(r['run']).name[:28]:<28} {r['prompt'][:28]:<28}"
                    + "".join(f" {r[key]:>8.3f}" if key != "best_rotation_deg" else f" {r[key]:>8.1f}"
                              for key, _ in COLUMNS))
    rows.append(f"{'mean':<28} {'':<28}" + "".join(f" {mean[key]:>8.3f}" if key in mean else f" {'':>8}"
                                                   for key, _ in COLUMNS))
    return "\n".join(rows)


def _text_to_3d(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from distill3d.devices import pick_device
    from distill3d.world_models.classifier import WorldClassifier
    from distill3d.eval.text_to_3d import (TextTo3DEvalConfig, check_run_folder, evaluate_run, mean_metrics,
                                           run_object)
    from distill3d.atomic_files import write_json_atomic

    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a .json file")
    config = TextTo3DEvalConfig(num_views=args.views, batch_size=args.batch_size)
    for run in args.runs:  # every folder is checked before anything is loaded
        run_object(check_run_folder(run))
    device = pick_device(args.device)
    classifier = WorldClassifier.from_pretrained(args.classifier, device=device)
    results = [evaluate_run(run, classifier, config, device) for run in tqdm(args.runs, desc="eval text-to-3d")]
    mean = mean_metrics(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"runs": results, "mean": mean, "config": config.__dict__})
    print(format_table(results, mean))
    print(f"written: {args.out}")
    return 0


def _image_to_3d(args: argparse.Namespace) -> int:
    import json

    from distill3d.atomic_files import write_json_atomic
    from distill3d.devices import pick_device
    from distill3d.eval.image_to_3d import ImageTo3DEvalConfig, evaluate_student
    from distill3d.eval.perceptual import perceptual_distance
    from distill3d.methods.dd3g.infer import load_student
    from distill3d.world_models.classifier import WorldClassifier
    from distill3d.world_models.teachers import WorldMultiViewTeacher

    if args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a .json file")
    if args.count <= 0 or args.batch_size <= 0 or (args.teacher_steps is not None and args.teacher_steps <= 0):
        raise UserError("--count, --batch-size and --teacher-steps must be positive")
    device = pick_device(args.device)
    student, train_config = load_student(args.model, device)
    config = ImageTo3DEvalConfig(count=args.count, seed=args.seed, batch_size=args.batch_size,
                                 teacher_steps=args.teacher_steps, split=args.split)
    teacher = WorldMultiViewTeacher.from_pretrained(train_config.teacher, device=device) if args.teacher_steps else None
    result = evaluate_student(student, WorldClassifier.from_pretrained(args.classifier, device=device),
                              perceptual_distance(args.perceptual, device), config, teacher)
    result.update(model=str(args.model), perceptual=args.perceptual)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(json.dumps(result["mean"], indent=2))
    print(f"written: {args.out}")
    return 0


def _fid(args: argparse.Namespace) -> int:
    import json

    from distill3d.atomic_files import write_json_atomic
    from distill3d.devices import pick_device
    from distill3d.eval.feature_networks import feature_network
    from distill3d.eval.fid import FolderFIDConfig, fid_between_folders, image_files

    if args.out is not None and args.out.is_dir():
        raise UserError(f"--out {args.out} is a folder; give a .json file")
    if args.kid_subsets <= 0 or args.batch_size <= 0 or args.kid_subset_size < 2:
        raise UserError("--kid-subsets and --batch-size must be positive, --kid-subset-size at least 2")
    for folder in (args.dir_a, args.dir_b):  # both folders are checked before the network is loaded
        image_files(folder, args.recursive)
    config = FolderFIDConfig(batch_size=args.batch_size, kid_subsets=args.kid_subsets,
                             kid_subset_size=args.kid_subset_size, recursive=args.recursive, seed=args.seed)
    network = feature_network(args.features, pick_device(args.device))
    result = fid_between_folders(args.dir_a, args.dir_b, network, config, progress=True)
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, result)
        print(f"written: {args.out}")
    return 0
