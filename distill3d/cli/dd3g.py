"""``distill3d dd3g collect|verify|train``: DD3G's teacher data (the quadruples of Sec. III-A) and its student."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distill3d.cli.dataclass_args import add_config_options, config_from_args


def register(commands, help_text: str) -> None:
    from distill3d.methods.dd3g.collect import CollectConfig

    p = commands.add_parser("dd3g", help=help_text, description=help_text)
    sub = p.add_subparsers(dest="dd3g_command", metavar="STEP", required=True)

    c = sub.add_parser("collect", help="run the multi-view teacher on drawn noise, cameras and input images",
                       usage="distill3d dd3g collect --out DIR --count N [options]",
                       description="Collect DD3G quadruples {N, C, II, OI}: for each item a training object "
                                   "of the world (never a held-out one) or, with --images, an image of a folder "
                                   "or a frame of a multi-view data set (`data render-meshes` of your meshes, "
                                   "with each frame's camera), cameras in the teacher's group layout, "
                                   "initial noise from a recorded seed, and the teacher's deterministic DDIM "
                                   "output views. Sharded and resumable; under torchrun or `accelerate launch` "
                                   "each process writes its own shards (RANK / WORLD_SIZE).")
    c.add_argument("--out", required=True, help="data set folder (new or empty; an existing one with --resume)")
    c.add_argument("--resume", action="store_true", help="continue the data set in --out (same settings)")
    add_config_options(c, CollectConfig, skip={"cameras"})  # the teacher's group layout, as it was trained
    c.set_defaults(run=_collect)

    v = sub.add_parser("verify", help="recompute stored items from their noise, cameras and input image",
                       description="Re-plan the first items of a collected folder, render their input images "
                                   "again and run the teacher from the stored noise seeds; prints the largest "
                                   "differences from what is stored (uint8 levels).")
    v.add_argument("folder", help="a folder written by `distill3d dd3g collect`")
    v.add_argument("--items", type=int, default=4, help="items of the first shard to recompute (default: 4)")
    v.add_argument("--device", default="auto", help="auto: cuda when available, else cpu (default: auto)")
    v.set_defaults(run=_verify)

    t = sub.add_parser("train", help="train the PEPD student on collected quadruples",
                       usage="distill3d dd3g train --data DIR --out RUN [options]",
                       description="Train DD3G's student (Sec. III-C: explicit supervision, implicit verification "
                                   "by the teacher's multi-view SDS on a curriculum, the opacity term) with the "
                                   "shared trainer: resumable, time-boxed (--max-minutes), EMA weights in "
                                   "RUN/model.safetensors; `accelerate launch -m distill3d dd3g train ...` runs "
                                   "it on several GPUs.")
    t.add_argument("--data", help="a folder written by `distill3d dd3g collect` (not needed with --resume)")
    t.add_argument("--out", required=True, type=Path, help="run folder (new or empty; an existing run with --resume)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out with its own settings")
    t.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    t.add_argument("--batch-size", type=int, default=None, help="quadruples per step and process")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-4; DD3G's is 1e-5)")
    t.add_argument("--perceptual", default=None, help="distance of the explicit supervision: classifier "
                                                      "(default) or lpips:BACKBONE_FILE:LINEAR_FILE")
    t.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="any field of the training config, dots walk into nested settings, e.g. "
                        "--set objective.eta=0.2 --set student.token_dim=64")
    t.add_argument("--pattern-from-teacher", action="store_true",
                   help="start Pattern Extraction and the image encoder from the teacher's weights, the student "
                        "shaped like the teacher's encoder (distill3d/methods/dd3g/teacher_init.py)")
    t.add_argument("--max-minutes", type=float, default=None, help="save and stop before this many minutes")
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--export-to", type=Path, default=None, help="also copy config.json + model.safetensors here")
    t.add_argument("--init-from", type=Path, default=None, help="start from the weights of this model folder")
    t.add_argument("--log-every", type=int, default=50)
    t.add_argument("--tiny", action="store_true", help="a tiny student, for CPU tests")
    t.set_defaults(run=_train)


def _collect(args: argparse.Namespace) -> int:
    from distill3d.methods.dd3g.collect import CollectConfig, collect_quadruples

    config = config_from_args(CollectConfig, args)
    print(json.dumps(collect_quadruples(config, args.out, resume=args.resume), indent=2))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from distill3d.errors import UserError
    from distill3d.methods.dd3g.collect import verify_quadruples

    if args.items <= 0:
        raise UserError("--items must be positive")
    result = verify_quadruples(args.folder, items=args.items, device=args.device)
    print(json.dumps(result, indent=2))
    return 0 if result["reproduced"] else 1


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from distill3d.cli.config_overrides import apply_overrides
    from distill3d.configs import config_from_dict
    from distill3d.data.quadruples import check_quadruple_folder
    from distill3d.errors import UserError
    from distill3d.eval.perceptual import perceptual_distance
    from distill3d.methods.dd3g.train import DD3GTask, DD3GTrainConfig, tiny_student
    from distill3d.training.network_trainer import RunOptions, run_training
    from distill3d.training.run_dir import RunDir

    method = "dd3g train"
    run = RunDir(args.out)
    run.check(method=method, resume=args.resume)  # the folder, before any work
    if args.resume and run.config_path.exists():
        config = config_from_dict(DD3GTrainConfig, run.read_config())
    else:
        if not args.data:
            raise UserError("--data is needed: a folder written by `distill3d dd3g collect`")
        meta, _ = check_quadruple_folder(Path(args.data))
        config = DD3GTrainConfig(data=str(Path(args.data).resolve()), teacher=meta["teacher"])
        if args.tiny:
            config = replace(config, student=tiny_student())
        # the student's inputs are the collection's: image size, views, and N's channels and size
        config = replace(config, student=replace(config.student, image_size=int(meta["resolution"]),
                                                 num_views=int(meta["views"]),
                                                 noise_channels=int(meta["noise_channels"]),
                                                 noise_size=int(meta.get("noise_size", meta["resolution"]))))
        optim = config.optim
        for name in ("batch_size", "lr"):
            if getattr(args, name) is not None:
                optim = replace(optim, **{name: getattr(args, name)})
        config = replace(config, optim=optim, **{k: getattr(args, k) for k in ("steps", "perceptual")
                                                  if getattr(args, k) is not None})
        if args.pattern_from_teacher:
            config = replace(config, pattern_from_teacher=True)
        config = apply_overrides(config, args.overrides)
        if config.pattern_from_teacher:  # the student shaped like the teacher's encoder (teacher_init)
            import torch

            from distill3d.methods.dd3g.collect import load_multiview_teacher
            from distill3d.methods.dd3g.teacher_init import teacher_shaped_student
            from distill3d.world_models.teachers import WorldMultiViewTeacher

            teacher = load_multiview_teacher(config.teacher, torch.device("cpu"))
            if not isinstance(teacher, WorldMultiViewTeacher):
                raise UserError("--pattern-from-teacher needs the world's multi-view teacher (its encoder is what "
                                f"the student copies); {config.teacher} is another kind of model")
            config = replace(config, student=teacher_shaped_student(config.student, teacher.config.net))
    if config.steps <= 0 or config.optim.batch_size <= 0:
        raise UserError("--steps and --batch-size must be positive")
    check_quadruple_folder(Path(config.data))
    perceptual_distance(config.perceptual, "cpu")  # a missing weight file fails here, before any folder
    task = DD3GTask(config, lambda device: perceptual_distance(config.perceptual, device))
    options = RunOptions(out=args.out, method=method, resume=args.resume, max_minutes=args.max_minutes,
                         device=args.device, export_to=args.export_to, init_from=args.init_from,
                         log_every=args.log_every)
    summary = run_training(task, options)
    state = "finished" if summary["finished"] else "stopped (resume with --resume)"
    if summary["main_process"]:
        print(f"dd3g student: step {summary['step']}/{summary['steps']} {state}; run folder {summary['out']}")
    return 0
