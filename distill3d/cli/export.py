"""``distill3d export RUN_DIR [--format F ...] [--to DIR]``: the assets of any run folder.

A per-scene run (``fit``, ``text-to-3d``) exports its scene: Gaussians as a 3DGS PLY, a density
field as a GLB/OBJ mesh, and turntables (MP4, GIF); by default the formats the run wrote itself,
into the run folder. A network run (``teacher train``) exports its model folder (``--format
model --to DIR``: config.json + model.safetensors, loadable with ``--teacher DIR``). A demo
folder exports the run it holds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill3d.errors import UserError

MODEL_FORMAT = "model"


def register(commands, help_text: str) -> None:
    from distill3d.export.scene import EXPORT_FORMATS

    e = commands.add_parser("export", help=help_text, description=__doc__.split("\n\n", 1)[1],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("run_dir", type=Path, help="a run folder (written by fit, text-to-3d, teacher train or demo)")
    e.add_argument("--format", choices=EXPORT_FORMATS + (MODEL_FORMAT,), dest="formats", action="append",
                   help="repeat for several formats (default: the run's own asset and turntables)")
    e.add_argument("--to", type=Path, default=None, help="folder to write into (default: the run folder)")
    e.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from distill3d.training.run_dir import RunDir

    if not args.run_dir.exists():
        raise UserError(f"{args.run_dir} does not exist")
    run = RunDir(args.run_dir)
    config = run.read_config()  # says clearly when the folder is not a run
    if config.get("method") == "demo":
        run = RunDir(run.path / config["run"])
        config = run.read_config()
    if "scene" in config:
        written = _export_scene(run, config, args)
    elif "kind" in config:
        written = _export_model(run, config, args)
    else:
        raise UserError(f"{run.path} is a `distill3d {config.get('method', 'unknown')}` run, which has nothing "
                        "to export")
    for fmt, path in written.items():
        print(f"{fmt}: {path}")
    return 0


def _export_scene(run, config: dict, args: argparse.Namespace) -> dict:
    from distill3d.configs import config_from_dict
    from distill3d.devices import pick_device
    from distill3d.export.scene import ExportConfig, export_scene
    from distill3d.training.run_scene import load_run_scene

    if args.formats and MODEL_FORMAT in args.formats:
        raise UserError(f"{run.path} is a `distill3d {config.get('method')}` run: it exports a scene "
                        "(ply, glb, obj, mp4, gif), not a model folder")
    scene = load_run_scene(run, pick_device())  # a run made on a GPU exports on a CPU too
    formats = tuple(args.formats) if args.formats else None
    return export_scene(scene, args.to or run.path, config_from_dict(ExportConfig, config.get("export", {})), formats)


def _export_model(run, config: dict, args: argparse.Namespace) -> dict:
    from distill3d.model_folder import WEIGHTS_FILE, export_folder

    if args.formats and set(args.formats) != {MODEL_FORMAT}:
        raise UserError(f"{run.path} is a `distill3d {config.get('method', 'teacher train')}` run of a network: "
                        "it exports --format model")
    if args.to is None:
        raise UserError(f"{run.path} is a network run and is itself a model folder (use it as --teacher "
                        f"{run.path}); give --to DIR to copy its config.json and {WEIGHTS_FILE} there")
    if not (run.path / WEIGHTS_FILE).is_file():
        raise UserError(f"{run.path} has no {WEIGHTS_FILE} yet; it is written with the first checkpoint")
    return {MODEL_FORMAT: export_folder(run.path, args.to)}
