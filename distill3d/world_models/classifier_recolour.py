"""Recolouring augmentation of the classifier: RGB channel permutations that hide the colour label.

Why: the held-out split removes some (colour, pattern, shape) combinations from training, and a
classifier can then read a pattern from the colours alone. "a red plain sphere" is held out,
and the only training sphere with a red lower half is "a green two-tone sphere" (green over
red), so the classifier trained without recolouring read the red plain sphere as two-tone at
every elevation. Showing the shape, pattern and view heads the same objects in other colours
takes that shortcut away (benchmarks/RESULTS.md, "World classifier").

How: the reference renderer is Lambertian per channel on a white background, so permuting the
channels of a render gives exactly the render of the same object with permuted albedos. A
share of each batch is permuted; those images keep their shape, pattern and view labels and
drop their colour label (the colour head never sees them).

Guard: some permutations turn a training object into a near copy of a held-out one (a
permuted green plain sphere is nearly red). A permutation is never applied to an object when
its permuted colour, and for patterned objects its permuted second colour too, lies within
``LOOKALIKE_DISTANCE`` of a held-out object of the same shape and pattern (``allowed_permutations``),
so no training image looks like a held-out object.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from distill3d.world.prompts import WorldObject
from distill3d.world_models.classifier_colour_mix import LOOKALIKE_DISTANCE, ColourTable, allowed_targets

CHANNEL_PERMUTATIONS: tuple[tuple[int, int, int], ...] = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
"""The five non-identity orders of the R, G, B channels."""


def _permuted_targets(table: ColourTable, index: Tensor, permutations: Sequence[tuple[int, int, int]]) -> Tensor:
    """The objects' albedos [len(index), P, 2, 3] with their channels in each permutation's order."""
    return torch.stack([table.albedos[index][..., list(p)] for p in permutations], dim=1)


def looks_like_heldout(obj: WorldObject, permutation: tuple[int, int, int],
                       distance: float = LOOKALIKE_DISTANCE) -> bool:
    """True when ``obj`` with its albedos' channels in ``permutation`` order is near a held-out object."""
    table, index = ColourTable.build("pattern"), torch.tensor([obj.index])
    return not bool(allowed_targets(_permuted_targets(table, index, [permutation]), index, table, distance))


def allowed_permutations(distance: float = LOOKALIKE_DISTANCE) -> Tensor:
    """[num_objects, len(CHANNEL_PERMUTATIONS)] bool: the permutation may be applied to the object.

    The look-alike rule is ``classifier_colour_mix.allowed_targets`` with the "pattern" guard; its
    other condition, that the two colours stay apart, always holds here: a permutation keeps the
    distance between them, and every world colour lies far from its secondary colour."""
    table = ColourTable.build("pattern")
    index = torch.arange(len(table.albedos))
    return allowed_targets(_permuted_targets(table, index, CHANNEL_PERMUTATIONS), index, table, distance)


def recolour(x: Tensor, object_index: Tensor, fraction: float, allowed: Tensor,
             generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Permute the channels of about ``fraction`` of the images x [B, 3, R, R].

    object_index: [B] ``WorldObject.index``; allowed: ``allowed_permutations()``. Returns the
    images and colour_known [B] bool (False where the channels were permuted). Each picked image
    gets one of its object's allowed permutations uniformly; an object with none keeps its colours.
    """
    B = x.shape[0]
    dev = generator.device
    perms = torch.tensor(CHANNEL_PERMUTATIONS, device=x.device)
    ok = allowed.to(x.device)[object_index]  # [B, P]
    scores = torch.rand(ok.shape, generator=generator, device=dev).to(x.device).masked_fill(~ok, -1.0)
    choice = scores.argmax(dim=1)  # uniform among the allowed ones
    pick = (torch.rand(B, generator=generator, device=dev).to(x.device) < fraction) & ok.any(dim=1)
    order = torch.where(pick[:, None], perms[choice], torch.arange(3, device=x.device))  # [B, 3]
    out = torch.gather(x, 1, order[:, :, None, None].expand_as(x))
    return out, ~pick
