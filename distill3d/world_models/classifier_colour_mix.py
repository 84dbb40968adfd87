"""Recolouring by colour mixing: training renders shown in random colours, exactly.

Channel permutations (``classifier_recolour``) give each object at most five other colourings,
all near the world's palette. Mixing gives it any colours: every pixel of a reference render
on the white background is ``x = alpha * s * a + (1 - alpha)``, with ``a`` the albedo, ``s``
the grey Lambertian shading and ``alpha`` the coverage. A 3x3 matrix ``M`` with ``M 1 = 1``
(rows summing to 1) keeps the background white and maps ``x`` to the render of the same object
with albedo ``M a``; so does it in [-1, 1] pixel space. Permutations are such matrices.

For an object with albedos ``a1`` (its colour) and ``a2`` (the secondary colour of its pattern
or door), ``mixing_matrices`` builds ``M = I + E P`` (``P`` removes the grey part) with
``M a_i = c_i`` for random targets ``c_i``. Grey albedos (white, black) are multiples of 1 and
stay as they are: their targets are themselves.

Random targets are uniform in [0, ``MAX_ALBEDO``]^3 and are redrawn (``tries`` times) when:
- the two colours lie within ``LOOKALIKE_DISTANCE`` of each other (a stripe, a lower half or a
  door would vanish and the pattern or view label would be wrong);
- the object would look like a held-out one: a held-out object of the same shape and pattern
  has its colour within ``LOOKALIKE_DISTANCE`` of ``c1`` (and, unless plain, its secondary
  colour within that distance of ``c2``); the channel permutations of ``classifier_recolour``
  follow the same rule.
Images that found no allowed targets keep their colours.

``ColourTable.build(guard="shape")`` is stricter: ``c1`` may then come near no held-out object
of the same shape, whatever its pattern. The look-alike rule leaves a one-sided picture: near
"a red plain sphere" training shows red-topped spheres of every pattern but plain, so the
classifier learns that such a sphere is never plain; the stricter guard shows none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from distill3d.world.prompts import WorldObject, all_objects
from distill3d.world.split import is_heldout
from distill3d.world.vocabulary import COLOURS, PLAIN, SECONDARY_COLOURS

LOOKALIKE_DISTANCE = 0.4
"""RGB albedo distance under which two colours count as the same world colour (the closest two
world colours, orange and yellow, are 0.35 apart)."""

MAX_ALBEDO = 0.92
"""Largest target albedo per channel: the world's white, so no surface is brighter than white."""


@dataclass
class ColourTable:
    """Per object (``WorldObject.index``): albedos and the held-out objects it must not resemble.

    albedos [O, 2, 3]: colour and secondary colour; colour_only [O] bool (only the first colour is
    compared); twins [O, T, 2, 3]: albedos of the held-out objects it must not resemble
    (padded), twin_mask [O, T] bool.
    """

    albedos: Tensor
    colour_only: Tensor
    twins: Tensor
    twin_mask: Tensor

    @classmethod
    def build(cls, guard: Literal["pattern", "shape"] = "pattern") -> "ColourTable":
        """guard "pattern": twins are the held-out objects of the same shape and pattern; "shape":
        of the same shape, any pattern, compared by their colour alone (every object counts as plain)."""
        objects = all_objects()

        def pair(colour: str) -> list[tuple[float, float, float]]:
            return [COLOURS[colour], COLOURS[SECONDARY_COLOURS[colour]]]

        def twin(t: WorldObject, o: WorldObject) -> bool:
            return is_heldout(t) and t.shape == o.shape and (guard == "shape" or t.pattern == o.pattern)

        twins = [[pair(t.colour) for t in objects if twin(t, o)] for o in objects]
        T = max(1, max(len(t) for t in twins))
        padded = torch.zeros(len(objects), T, 2, 3)
        mask = torch.zeros(len(objects), T, dtype=torch.bool)
        for i, rows in enumerate(twins):
            if rows:
                padded[i, :len(rows)] = torch.tensor(rows)
                mask[i, :len(rows)] = True
        return cls(albedos=torch.tensor([pair(o.colour) for o in objects]),
                   colour_only=torch.tensor([guard == "shape" or o.pattern == PLAIN for o in objects]), twins=padded,
                   twin_mask=mask)

    def to(self, device: torch.device | str) -> "ColourTable":
        return ColourTable(*(t.to(device) for t in (self.albedos, self.colour_only, self.twins, self.twin_mask)))


def is_grey(albedo: Tensor) -> Tensor:
    """[...] bool: the albedos [..., 3] are grey (all channels equal)."""
    return (albedo.max(dim=-1).values - albedo.min(dim=-1).values) < 1e-4


def allowed_targets(targets: Tensor, object_index: Tensor, table: ColourTable,
                    distance: float = LOOKALIKE_DISTANCE) -> Tensor:
    """[B, N] bool: target albedos [B, N, 2, 3] keep the objects' two colours apart and look like no held-out object."""
    c1, c2 = targets[..., 0, :], targets[..., 1, :]
    apart = (c1 - c2).norm(dim=-1) >= distance
    twins = table.twins[object_index][:, None]  # [B, 1, T, 2, 3]
    near1 = (c1[:, :, None] - twins[..., 0, :]).norm(dim=-1) < distance  # [B, N, T]
    near2 = (c2[:, :, None] - twins[..., 1, :]).norm(dim=-1) < distance
    colour_only = table.colour_only[object_index][:, None, None]
    lookalike = (table.twin_mask[object_index][:, None] & near1 & (colour_only | near2)).any(dim=-1)
    return apart & ~lookalike


def random_targets(object_index: Tensor, table: ColourTable, generator: torch.Generator,
                   tries: int = 8) -> tuple[Tensor, Tensor]:
    """Random allowed target albedos [B, 2, 3] for objects [B], and found [B] bool.

    Grey albedos keep their value; where none of ``tries`` draws is allowed, found is False.
    """
    source = table.albedos[object_index]  # [B, 2, 3]
    B, dev = object_index.shape[0], object_index.device
    draws = MAX_ALBEDO * torch.rand(B, tries, 2, 3, generator=generator, device=generator.device).to(dev)
    draws = torch.where(is_grey(source)[:, None, :, None], source[:, None], draws)
    ok = allowed_targets(draws, object_index, table)  # [B, tries]
    first = ok.float().argmax(dim=1)  # the first allowed draw
    return draws[torch.arange(B, device=dev), first], ok.any(dim=1)


def mixing_matrices(source: Tensor, target: Tensor) -> Tensor:
    """M [B, 3, 3] with M 1 = 1 and M a_i = c_i for the albedos a_i = source[:, i] [B, 2, 3]
    that are not grey (targets c_i = target[:, i]; grey albedos are left alone)."""
    dev, dtype = source.device, source.dtype
    P = torch.eye(3, device=dev, dtype=dtype) - 1.0 / 3.0  # removes the grey part of a colour
    A = source.transpose(1, 2)  # [B, 3, 2]
    PA = (P @ A) * (~is_grey(source))[:, None, :]
    E = (target.transpose(1, 2) - A) @ torch.linalg.pinv(PA)  # [B, 3, 3]
    return torch.eye(3, device=dev, dtype=dtype) + E @ P


def mix_colours(x: Tensor, object_index: Tensor, fraction: float, table: ColourTable,
                generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Show about ``fraction`` of the images x [B, 3, R, R] (in [-1, 1]) in random allowed colours.

    Returns the images and colour_known [B] bool (False where the colours were changed).
    """
    B, dev = x.shape[0], x.device
    target, found = random_targets(object_index, table, generator)
    pick = (torch.rand(B, generator=generator, device=generator.device).to(dev) < fraction) & found
    with torch.autocast(dev.type, enabled=False):  # float32 matrices, whatever the training precision
        M = mixing_matrices(table.albedos[object_index], target)
        M = torch.where(pick[:, None, None], M, torch.eye(3, device=dev))
        mixed = torch.einsum("bij,bjhw->bihw", M, x.float())
    return mixed.to(x.dtype), ~pick
