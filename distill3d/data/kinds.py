"""The three data set kinds by the names that ``meta.json`` and the command line use."""

from __future__ import annotations

from distill3d.data.multiview import MultiviewKind
from distill3d.data.multiview_groups import GroupViews, MultiviewGroupsKind
from distill3d.data.text_image import TextImageKind
from distill3d.errors import UserError

KINDS = (MultiviewKind.kind, TextImageKind.kind, MultiviewGroupsKind.kind)


def dataset_kind(kind: str, *, views: int = 32,
                 targets: int = 4) -> MultiviewKind | TextImageKind | MultiviewGroupsKind:
    """The writer of kind ``kind``: ``views`` frames per multiview item, ``targets`` views per group."""
    for name, value in (("views", views), ("targets", targets)):
        if int(value) != value or value < 1:
            raise UserError(f"{name} must be an integer >= 1, got {value}")
    if kind == MultiviewKind.kind:
        return MultiviewKind(views=int(views))
    if kind == TextImageKind.kind:
        return TextImageKind()
    if kind == MultiviewGroupsKind.kind:
        return MultiviewGroupsKind(GroupViews(targets=int(targets)))
    raise UserError(f"unknown data set kind {kind!r}; valid kinds: {', '.join(KINDS)}")
