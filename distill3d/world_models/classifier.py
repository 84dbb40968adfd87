"""The world classifier: the world's stand-in for CLIP.

A small ResNet (pre-activation basic blocks, GroupNorm) on 64x64 RGB with four heads:
shape, colour, pattern and view bucket (front / side / back / overhead; meaningful, and
trained, only for shapes with a front). It is trained on reference renders of training
objects from random views, never on teacher output (``classifier_training``), and scores
every later method: attribute accuracy and R-precision (``prompt_log_likelihood``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill3d.configs import config_from_dict
from distill3d.devices import pick_device
from distill3d.model_folder import WEIGHTS_FILE, load_weights, resolve_model_folder
from distill3d.world.prompts import WorldObject
from distill3d.world.vocabulary import COLOURS, PATTERNS, SHAPES, SHAPES_WITH_FRONT, VIEW_BUCKETS

KIND = "world-classifier"
DEFAULT_CLASSIFIER = "world-classifier"
HEADS: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": tuple(COLOURS), "pattern": PATTERNS,
                                     "bucket": VIEW_BUCKETS}
"""Head name -> its class words, in logit order."""
ATTRIBUTES = ("shape", "colour", "pattern")


@dataclass
class ClassifierNetConfig:
    """Size of the classifier."""

    resolution: int = 64
    widths: tuple[int, ...] = (32, 64, 128, 256)  # one stage per width; stages after the first halve the size
    blocks_per_stage: int = 2
    norm_groups: int = 8


class _Block(nn.Module):
    """Pre-activation residual block (He et al. 2016) with GroupNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.skip = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if (stride != 1 or c_in != c_out) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class WorldClassifier(nn.Module):
    """Images [B, 3, R, R] in [-1, 1] -> logits per head (``HEADS``)."""

    def __init__(self, config: ClassifierNetConfig):
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        blocks, c = [], w[0]
        for i, width in enumerate(w):
            for j in range(config.blocks_per_stage):
                blocks.append(_Block(c, width, 2 if (i > 0 and j == 0) else 1, config.norm_groups))
                c = width
        self.blocks = nn.Sequential(*blocks)
        self.final_norm = nn.GroupNorm(config.norm_groups, c)
        self.heads = nn.ModuleDict({name: nn.Linear(c, len(words)) for name, words in HEADS.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = F.silu(self.final_norm(self.blocks(self.stem(x))))
        feature = h.mean(dim=(2, 3))
        return {name: head(feature) for name, head in self.heads.items()}

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_CLASSIFIER, *,
                        device: torch.device | str | None = None) -> "WorldClassifier":
        """Load a trained classifier (folder or shipped name), frozen, in eval mode."""
        folder, raw = resolve_model_folder(name_or_path, KIND)
        model = cls(config_from_dict(ClassifierNetConfig, raw["net"]))
        load_weights(model, folder / WEIGHTS_FILE)
        device = pick_device(device)
        return model.to(device).eval().requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.stem.weight.device

    def prepare(self, images: Tensor) -> Tensor:
        """Images [B, H, W, 3] in [0, 1] (any size) -> network input [B, 3, R, R] in [-1, 1]."""
        x = images.to(self.device).float().permute(0, 3, 1, 2)
        R = self.config.resolution
        if x.shape[-2:] != (R, R):
            x = F.interpolate(x, size=(R, R), mode="bilinear", antialias=True, align_corners=False)
        return x * 2 - 1

    @torch.no_grad()
    def log_probs(self, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
        """Log-probabilities per head, each [B, classes], of images [B, H, W, 3] in [0, 1]."""
        parts: dict[str, list[Tensor]] = {name: [] for name in HEADS}
        for start in range(0, images.shape[0], batch_size):
            logits = self(self.prepare(images[start:start + batch_size]))
            for name in HEADS:
                parts[name].append(logits[name].float().log_softmax(-1))
        return {name: torch.cat(v) for name, v in parts.items()}

    @torch.no_grad()
    def predict(self, images: Tensor) -> dict[str, list[str]]:
        """Predicted words per head for images [B, H, W, 3] in [0, 1]."""
        logp = self.log_probs(images)
        return {name: [HEADS[name][int(i)] for i in logp[name].argmax(-1)] for name in HEADS}

    @torch.no_grad()
    def prompt_log_likelihood(self, images: Tensor, objects: Sequence[WorldObject]) -> Tensor:
        """[B, P] log p(shape) + log p(colour) + log p(pattern) of each image for each candidate object.

        R-precision: the fraction of images whose own object has the highest score.
        """
        return prompt_scores(self.log_probs(images), objects)


def prompt_scores(logp: dict[str, Tensor], objects: Sequence[WorldObject]) -> Tensor:
    """[B, P] log p(shape) + log p(colour) + log p(pattern) for each candidate object, from the
    classifier's log-probabilities per head (``WorldClassifier.log_probs``), each [B, classes]."""
    idx = {name: torch.tensor([HEADS[name].index(getattr(o, name)) for o in objects], device=logp[name].device)
           for name in ATTRIBUTES}
    return sum(logp[name][:, idx[name]] for name in ATTRIBUTES)


def attribute_labels(object_index: Tensor) -> dict[str, Tensor]:
    """Shape, colour and pattern class indices [B] from ``WorldObject.index`` [B]."""
    rest, pattern = object_index.div(len(PATTERNS), rounding_mode="floor"), object_index % len(PATTERNS)
    shape, colour = rest.div(len(COLOURS), rounding_mode="floor"), rest % len(COLOURS)
    return {"shape": shape, "colour": colour, "pattern": pattern}


def has_front(shape_index: Tensor) -> Tensor:
    """[B] bool: the shape has a front (``SHAPES_WITH_FRONT``)."""
    front = torch.tensor([s in SHAPES_WITH_FRONT for s in SHAPES], device=shape_index.device)
    return front[shape_index]
