"""The options of HoloFusion's distillation (``distill3d holofusion distill``), for the holofusion command to register.

``add_distill_arguments(parser)`` adds ``--out RUN``, ``--resume`` and one option per ``DistillConfig``
field; ``run_distill(args, coarse, sr_net, schedule)`` runs it on a coarse sample that the caller loaded
(from a trained model folder and a sample index) and prints the summary.
"""

from __future__ import annotations

import argparse
import json

from distill3d.cli.dataclass_args import add_config_options, config_from_args
from distill3d.cli.run_options import add_run_folder_options, print_run_summary
from distill3d.training.run_dir import SUMMARY_NAME

SUMMARY_KEYS = ("loss", "steps", "seconds", "bank_seconds", "bank_loss_start", "bank_loss_end")


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out RUN``, ``--resume`` and the ``DistillConfig`` options (``--loss``, ``--steps``, ``--bank-size``, ...)."""
    from distill3d.methods.holofusion.distill import DistillConfig

    add_run_folder_options(parser)
    add_config_options(parser, DistillConfig)


def run_distill(args: argparse.Namespace, coarse, sr_net, schedule) -> int:
    """Distil ``coarse`` (a ``VoxelRadianceField``) with D_beta ``sr_net`` and its ``schedule`` into ``args.out``."""
    from distill3d.methods.holofusion.distill import DistillConfig, distill_sample

    config = config_from_args(DistillConfig, args)
    distill_sample(coarse, sr_net, schedule, config, args.out, resume=args.resume)
    summary = json.loads((args.out / SUMMARY_NAME).read_text())
    print_run_summary(summary, SUMMARY_KEYS)
    return 0
