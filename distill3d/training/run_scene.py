"""The 3D scene of a per-scene run folder (``fit``, ``text-to-3d``, ...) at its last checkpoint, rebuilt
from the ``scene`` section of its config.json: what ``distill3d export`` and the evaluations read."""

from __future__ import annotations

import torch

from distill3d.configs import config_from_dict
from distill3d.errors import UserError
from distill3d.scene.factory import Scene, SceneConfig, scene_like_checkpoint
from distill3d.training.run_dir import RunDir


def load_run_scene(run: RunDir, device: torch.device | str = "cpu") -> Scene:
    """The run's scene with its last checkpoint loaded, in eval mode (the caller's torch RNG is kept)."""
    config = run.read_config()
    if "scene" not in config:
        raise UserError(f"{run.path} is a `distill3d {config.get('method', 'unknown')}` run, which holds no 3D scene")
    if run.usable_checkpoint() is None:
        raise UserError(f"{run.path} has no checkpoint yet; resume the run or wait for its first checkpoint")
    scene = scene_like_checkpoint(config_from_dict(SceneConfig, config["scene"]), run.checkpoint_shapes(), device)
    rng = torch.get_rng_state()  # loading a checkpoint restores the run's RNG; keep the caller's
    run.load_checkpoint(scene.modules(), device=device)
    torch.set_rng_state(rng)
    scene.module.eval()
    return scene
