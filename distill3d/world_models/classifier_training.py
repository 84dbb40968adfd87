"""Training of the world classifier (``distill3d teacher train classifier``).

Data: reference renders of training objects from random views (``ViewCameras``), drawn from a
``RenderPool``. Augmentation keeps colour identity: no colour or brightness jitter; only a
random down-and-up resampling (blur) and a little Gaussian pixel noise, so that soft or
slightly noisy renders of learned 3D models are read like sharp ones. Separately, a share of
each batch (``recolour_fraction``, three quarters by default) is shown in other colours and
has no colour label, so that shape, pattern and view are read independently of the colour:
its albedos mixed to random colours (``classifier_colour_mix``, ``recolour = "mix"``, the
default) or its RGB channels permuted (``classifier_recolour``, ``"permute"``). Images in
their own colours of an object that shares shape and colour with a held-out one carry no
pattern label (``ClassifierTrainConfig.pattern_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill3d.optim import OptimConfig
from distill3d.random_streams import Generators
from distill3d.world.prompts import WorldObject, all_objects
from distill3d.world.split import heldout_objects, train_objects
from distill3d.world_models.classifier import (ATTRIBUTES, KIND, ClassifierNetConfig, WorldClassifier,
                                               attribute_labels, has_front)
from distill3d.world_models.classifier_colour_mix import ColourTable, mix_colours
from distill3d.world_models.classifier_recolour import allowed_permutations, recolour
from distill3d.world_models.render_pool import RenderPool, RenderPoolConfig, ViewCameras, repeat_shapes

PatternLabels = Literal["all", "off-heldout-looks", "recoloured"]
PATTERN_LABELS: tuple[str, ...] = get_args(PatternLabels)


@dataclass
class ClassifierTrainConfig:
    """Everything that defines a classifier run (written to config.json).

    ``pattern_labels``: the images whose pattern cross-entropy counts.
    - "all": every image.
    - "off-heldout-looks" (default): not the images, in their own colours, of an object that shares
      shape and colour with a held-out object. Training holds, say, red spheres striped, dotted and
      two-tone but never plain ("a red plain sphere" is held out), so with these labels the pattern
      head learns that a red sphere is never plain: wrong on exactly the held-out object, above all
      from high up, where a two-tone sphere shows only its colour. Those images still train shape,
      colour and view; their pattern is learned from the other colours.
    - "recoloured": only images shown in other colours (no colour-pattern pairing is learned at all).

    ``pool``: the view bucket is decided within a few degrees of a cut (45 and 135 degrees of
    azimuth, 60 of elevation), which only many distinct views of the shapes with a front teach.
    So mugs and houses are drawn three times as often as the other shapes, and each block holds
    16 views of each of its 64 objects, traced in one chunk per shape: on an H200 a block of 1024
    renders takes about as long as one of 256 (0.97 s against 0.91 s). With a block every 60
    steps a 10000-step run sees 178,176 distinct renders (4 views per object, a block every 50
    steps: 59,136) and takes about 7 minutes on one H200 (benchmarks/RESULTS.md, "World classifier").
    """

    kind: str = KIND
    net: ClassifierNetConfig = field(default_factory=ClassifierNetConfig)
    cameras: ViewCameras = field(default_factory=ViewCameras)
    pool: RenderPoolConfig = field(default_factory=lambda: RenderPoolConfig(
        size=8192, entries_per_object=16, chunk_rays=1 << 22, refresh_every=60, shape_repeats={"mug": 3, "house": 3}))
    steps: int = 10000  # may be raised when resuming (the annealed lr then rises again from near 0)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(batch_size=256, lr=1e-3, warmup_steps=200,
                                                                   weight_decay=0.05, anneal_steps=10000))
    blur_probability: float = 0.3  # down-and-up resampling by a factor in [0.4, 1]
    noise_std_max: float = 0.03  # Gaussian pixel noise, std uniform in [0, max] (images in [0, 1])
    recolour_fraction: float = 0.75  # share of each batch shown in other colours, with no colour label
    recolour: Literal["permute", "mix"] = "mix"  # channel permutations, or random colours by mixing
    recolour_guard: Literal["pattern", "shape"] = "shape"  # "mix": the held-out objects to keep away from
    skip_heldout_colour_shapes: bool = False  # train on no object sharing shape and colour with a held-out one
    pattern_labels: PatternLabels = "off-heldout-looks"  # which images carry their pattern label (``pattern_known``)

    def __post_init__(self) -> None:
        if self.recolour not in ("permute", "mix"):
            raise ValueError(f"recolour must be 'permute' or 'mix', got {self.recolour!r}")
        if self.recolour_guard not in ("pattern", "shape"):
            raise ValueError(f"recolour_guard must be 'pattern' or 'shape', got {self.recolour_guard!r}")
        if not 0.0 <= self.recolour_fraction <= 1.0:
            raise ValueError(f"recolour_fraction must lie in [0, 1], got {self.recolour_fraction}")
        if self.pattern_labels not in PATTERN_LABELS:
            raise ValueError(f"pattern_labels must be one of {', '.join(PATTERN_LABELS)}, got {self.pattern_labels!r}")


def tiny_config() -> ClassifierTrainConfig:
    """A CPU-sized configuration (16x16 images)."""
    return ClassifierTrainConfig(
        net=ClassifierNetConfig(resolution=16, widths=(8, 16), blocks_per_stage=1, norm_groups=4),
        pool=RenderPoolConfig(size=16, entries_per_object=4, objects_per_block=2, refresh_every=0, resolution=16,
                              supersample=1),
        steps=4, optim=OptimConfig(batch_size=8, lr=3e-3, warmup_steps=1))


def augment(x: Tensor, config: ClassifierTrainConfig, generators: Generators) -> Tensor:
    """Blur / noise augmentation of images [B, 3, R, R] in [-1, 1] (no colour change)."""
    B, _, R, _ = x.shape
    generator, dev = generators.noise, generators.noise.device
    if config.blur_probability > 0:
        factor = float(0.4 + 0.6 * torch.rand((), generator=generators.data))
        small = max(4, int(round(R * factor)))
        blurred = F.interpolate(F.interpolate(x, size=(small, small), mode="bilinear", antialias=True,
                                              align_corners=False), size=(R, R), mode="bilinear", align_corners=False)
        pick = (torch.rand(B, generator=generator, device=dev) < config.blur_probability).to(x.device)
        x = torch.where(pick[:, None, None, None], blurred, x)
    if config.noise_std_max > 0:
        std = 2.0 * config.noise_std_max * torch.rand(B, 1, 1, 1, generator=generator, device=dev).to(x.device)
        x = x + std * torch.randn(x.shape, generator=generator, device=dev).to(x.device)
    return x


def heldout_looks() -> Tensor:
    """[O] bool per ``WorldObject.index``: a held-out object has the same shape and colour."""
    looks = {(o.shape, o.colour) for o in heldout_objects()}
    return torch.tensor([(o.shape, o.colour) in looks for o in all_objects()])


def pattern_known(rule: PatternLabels, object_index: Tensor, colour_known: Tensor, looks: Tensor) -> Tensor:
    """[B] bool: the image carries its pattern label under ``rule`` (``ClassifierTrainConfig.pattern_labels``).

    object_index [B]; colour_known [B] bool (False: shown in other colours); looks: ``heldout_looks()``."""
    if rule == "all":
        return torch.ones_like(colour_known)
    if rule == "recoloured":
        return ~colour_known
    return ~colour_known | ~looks.to(object_index.device)[object_index]


def _masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    mask = mask.float()
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def classifier_loss(logits: dict[str, Tensor], object_index: Tensor, bucket: Tensor,
                    colour_known: Tensor | None = None, pattern_known: Tensor | None = None) -> Tensor:
    """Sum of the attribute cross-entropies + the view-bucket cross-entropy over shapes with a front.

    colour_known, pattern_known: [B] bool; that cross-entropy is averaged over those images only
    (recoloured images have no colour label; ``pattern_known`` for the pattern)."""
    labels = attribute_labels(object_index)
    ce = {name: F.cross_entropy(logits[name].float(), labels[name], reduction="none") for name in ATTRIBUTES}
    loss = ce["shape"].mean() + _masked_mean(ce["colour"], colour_known) + _masked_mean(ce["pattern"], pattern_known)
    front = has_front(labels["shape"])
    return loss + _masked_mean(F.cross_entropy(logits["bucket"].float(), bucket, reduction="none"), front)


class ClassifierTask:
    """The ``TrainingTask`` of the classifier."""

    export_dtype = torch.float32

    def __init__(self, config: ClassifierTrainConfig):
        if config.pool.resolution != config.net.resolution:
            raise ValueError("pool.resolution must equal net.resolution")
        self.config = config
        self.allowed_recolours = allowed_permutations() if config.recolour == "permute" else None
        self.colour_table = ColourTable.build(config.recolour_guard)
        self.heldout_looks = heldout_looks()

    def build_model(self) -> nn.Module:
        return WorldClassifier(self.config.net)

    def build_source(self, device: torch.device) -> RenderPool:
        return RenderPool(self.config.pool, 1, self.config.cameras.sample, device, objects=self.training_objects())

    def training_objects(self) -> list[WorldObject]:
        """The objects of the render pool: the training objects, without those that share shape and colour
        with a held-out object when ``skip_heldout_colour_shapes`` (for each such look, training would
        otherwise show only the patterns that are not held out)."""
        objects = train_objects()
        if self.config.skip_heldout_colour_shapes:
            objects = [o for o in objects if not self.heldout_looks[o.index]]
        return repeat_shapes(objects, self.config.pool.shape_repeats)

    def loss(self, model: nn.Module, pool: RenderPool, batch_size: int, generators: Generators) -> Tensor:
        index = pool.sample_indices(batch_size, generators.data)
        objects = pool.object_index[index]
        x = pool.images_float(index)[:, 0]
        if self.heldout_looks.device != x.device:  # the tables follow the training device, once
            self.colour_table, self.heldout_looks = self.colour_table.to(x.device), self.heldout_looks.to(x.device)
        if self.config.recolour == "mix":  # before the noise, which a mixing matrix would amplify
            x, colour_known = mix_colours(x, objects, self.config.recolour_fraction, self.colour_table,
                                          generators.noise)
            x = augment(x, self.config, generators)
        else:
            x = augment(x, self.config, generators)
            x, colour_known = recolour(x, objects, self.config.recolour_fraction, self.allowed_recolours,
                                       generators.noise)
        known = pattern_known(self.config.pattern_labels, objects, colour_known, self.heldout_looks)
        return classifier_loss(model(x), objects, pool.bucket[index][:, 0], colour_known, known)
