"""Loading a text-to-image teacher by name: ``world`` (the shipped world teacher), a world model
folder, or a Stable Diffusion (diffusers) folder on disk, and checking a prompt against it.

It sits above both the diffusion core (the Stable Diffusion adapter) and the world's models,
so that neither needs the other and a method needs only ``load_teacher``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from distill3d.errors import UserError
from distill3d.world import parse_prompt

WORLD_TEACHER = "world"


def is_diffusers_folder(teacher: str) -> bool:
    """The teacher is a diffusers pipeline folder (it holds model_index.json)."""
    return teacher != WORLD_TEACHER and (Path(teacher) / "model_index.json").exists()


def check_teacher(teacher: str) -> None:
    """A ``UserError`` unless ``teacher`` is 'world' or an existing folder."""
    if teacher != WORLD_TEACHER and not Path(teacher).is_dir():
        raise UserError(f"teacher {teacher!r} is neither 'world' nor an existing model folder")


def check_prompt(prompt: str, teacher: str) -> str:
    """The object prompt without a view suffix; raises UserError when the teacher cannot read it."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("empty prompt")
    check_teacher(teacher)
    if not is_diffusers_folder(teacher):  # world teachers read only world prompts
        obj, view = parse_prompt(prompt)
        if view is not None:
            raise UserError(f"leave the view out of the prompt ({view!r}): views are added per camera")
        return obj.prompt
    return prompt.strip()


def load_teacher(teacher: str, device: torch.device):
    """The shipped world teacher, a world model folder, or a Stable Diffusion (diffusers) folder."""
    check_teacher(teacher)
    if is_diffusers_folder(teacher):
        from distill3d.diffusion.stable_diffusion import StableDiffusionTeacher
        return StableDiffusionTeacher.from_folder(teacher, device=device)
    from distill3d.world_models.teachers import DEFAULT_TEXT_TO_IMAGE, WorldTextToImageTeacher
    return WorldTextToImageTeacher.from_pretrained(DEFAULT_TEXT_TO_IMAGE if teacher == WORLD_TEACHER else teacher,
                                                   device=device)
