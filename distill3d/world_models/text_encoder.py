"""A small text encoder over the world's vocabulary, for the world text-to-image teacher.

A world prompt names a colour, a pattern, a shape and optionally a view ("a red striped
torus, front view"), so it becomes exactly four tokens ``[colour, pattern, shape, view]``
(``<noview>`` when the suffix is left out). The empty prompt is the unconditional input of
classifier-free guidance: four ``<null>`` tokens. Words outside the world are rejected by
``parse_prompt`` with a ``UserError`` naming the known words.

Tokens get learned embeddings plus learned position embeddings, then a few pre-norm
transformer layers (``torch.nn.TransformerEncoder``); the output [B, 4, D] is what the U-Net
cross-attends to. The encoder is trained jointly with the U-Net.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from distill3d.world.prompts import WorldObject, parse_prompt
from distill3d.world.vocabulary import COLOURS, PATTERNS, SHAPES, VIEW_BUCKETS

NULL_TOKEN = "<null>"
NO_VIEW_TOKEN = "<noview>"
VOCABULARY: tuple[str, ...] = (NULL_TOKEN, NO_VIEW_TOKEN, *COLOURS, *PATTERNS, *SHAPES, *VIEW_BUCKETS)
"""Every token the encoder knows, in id order."""
TOKEN_ID: dict[str, int] = {word: i for i, word in enumerate(VOCABULARY)}
PROMPT_LENGTH = 4
"""Tokens per prompt: colour, pattern, shape, view."""

_COLOUR_IDS = torch.tensor([TOKEN_ID[c] for c in COLOURS])
_PATTERN_IDS = torch.tensor([TOKEN_ID[p] for p in PATTERNS])
_SHAPE_IDS = torch.tensor([TOKEN_ID[s] for s in SHAPES])
_VIEW_IDS = torch.tensor([TOKEN_ID[v] for v in VIEW_BUCKETS] + [TOKEN_ID[NO_VIEW_TOKEN]])


def prompt_tokens(prompt: str) -> list[int]:
    """Token ids [4] of one prompt; "" gives the unconditional (all ``<null>``) sequence."""
    if prompt.strip() == "":
        return [TOKEN_ID[NULL_TOKEN]] * PROMPT_LENGTH
    obj, view = parse_prompt(prompt)
    return [TOKEN_ID[obj.colour], TOKEN_ID[obj.pattern], TOKEN_ID[obj.shape], TOKEN_ID[view or NO_VIEW_TOKEN]]


def tokenize_prompts(prompts: Sequence[str]) -> Tensor:
    """Token ids [B, 4] (int64) of B prompts."""
    if isinstance(prompts, str):
        prompts = [prompts]
    return torch.tensor([prompt_tokens(p) for p in prompts], dtype=torch.long).reshape(-1, PROMPT_LENGTH)


def tokens_from_labels(object_index: Tensor, view_index: Tensor) -> Tensor:
    """Token ids [B, 4] from ``WorldObject.index`` [B] and view bucket indices [B] (vectorised).

    ``view_index`` indexes ``VIEW_BUCKETS``; -1 means no view suffix. Equals
    ``tokenize_prompts`` of the corresponding prompts.
    """
    device = object_index.device
    rest, pattern = object_index.div(len(PATTERNS), rounding_mode="floor"), object_index % len(PATTERNS)
    shape, colour = rest.div(len(COLOURS), rounding_mode="floor"), rest % len(COLOURS)
    view = torch.where(view_index < 0, torch.full_like(view_index, len(VIEW_BUCKETS)), view_index)
    return torch.stack([_COLOUR_IDS.to(device)[colour], _PATTERN_IDS.to(device)[pattern],
                        _SHAPE_IDS.to(device)[shape], _VIEW_IDS.to(device)[view]], dim=-1)


def object_tokens(objects: Sequence[WorldObject], views: Sequence[str | None] | None = None) -> Tensor:
    """Token ids [B, 4] of objects with optional view words."""
    views = list(views) if views is not None else [None] * len(objects)
    return torch.tensor([[TOKEN_ID[o.colour], TOKEN_ID[o.pattern], TOKEN_ID[o.shape], TOKEN_ID[v or NO_VIEW_TOKEN]]
                         for o, v in zip(objects, views)], dtype=torch.long).reshape(-1, PROMPT_LENGTH)


@dataclass
class TextEncoderConfig:
    """Size of the world text encoder (its output width is the U-Net's cross_attention_dim)."""

    dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    ff_mult: int = 4


class WorldTextEncoder(nn.Module):
    """Token ids [B, 4] -> embeddings [B, 4, D] (learned tokens + positions + transformer layers)."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(len(VOCABULARY), config.dim)
        self.position_embedding = nn.Parameter(torch.zeros(PROMPT_LENGTH, config.dim))
        layer = nn.TransformerEncoderLayer(config.dim, config.num_heads, config.ff_mult * config.dim,
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.02)

    def forward(self, token_ids: Tensor) -> Tensor:
        """[B, 4] int64 -> [B, 4, D]."""
        x = self.token_embedding(token_ids) + self.position_embedding
        return self.final_norm(self.layers(x))

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> embeddings [B, 4, D] on the encoder's device ("" is unconditional)."""
        return self(tokenize_prompts(prompts).to(self.position_embedding.device))
