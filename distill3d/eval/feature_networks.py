"""Feature networks for FID and KID: one vector per image.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare two sets of images through the
features a frozen network gives them. The number depends on the network as much as on the images,
so the network is a choice, made by name with ``feature_network(name, device)``:

- ``"classifier"`` (the default; ``"classifier:<folder>"`` for another one): ``ClassifierFeatures``,
  the pooled last stage of the world classifier that ships with distill3d (256-D). Runs anywhere,
  needs nothing from outside, and sees what the world's labels are made of. Not comparable with any
  published FID.
- ``"inception:<weights file>"``: ``InceptionFeatures``, Inception-v3's pool3 features (2048-D) as FID
  defines them, from a weights file the user puts on disk (nothing is downloaded). Needs torchvision
  for the architecture.

Every network takes images [B, H, W, 3] in [0, 1] of any size and returns features [B, D] on its
device. ``resize`` brings an image to ``input_size`` the way that network's FID convention does; the
folder reader (``distill3d.eval.fid``) calls it per image so that folders of mixed sizes batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.eval.perceptual import _load, _read_tensors
from distill3d.world_models.classifier import DEFAULT_CLASSIFIER, WorldClassifier


class FeatureNetwork(ABC):
    """``features(images [B, H, W, 3] in [0, 1]) -> [B, D]``: a frozen network, no gradients."""

    name: str            # written next to every figure made with it
    input_size: int      # images are resized to input_size x input_size before the network
    feature_dim: int     # D
    device: torch.device
    antialias: bool = True  # whether ``resize`` filters before it shrinks

    def resize(self, images: Tensor) -> Tensor:
        """Images [B, H, W, 3] -> [B, S, S, 3], S = ``input_size``: bilinear (half-pixel centres), with an
        antialiasing filter when ``antialias`` (needed when shrinking large images); unchanged at size S."""
        S = self.input_size
        if tuple(images.shape[1:3]) == (S, S):
            return images
        x = images.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=self.antialias)
        return x.permute(0, 2, 3, 1)

    @abstractmethod
    def features(self, images: Tensor) -> Tensor:
        """Images [B, H, W, 3] in [0, 1] (any size) -> features [B, D] (float32, on ``device``)."""


# --- the world classifier ------------------------------------------------------------------------


class ClassifierFeatures(FeatureNetwork):
    """The world classifier's pooled last stage: the 256 numbers its four heads read.

    The classifier (``world_models/classifier.py``) is a small pre-activation ResNet trained on exact
    renders of training objects to name their shape, colour, pattern and view bucket. Its last stage
    [B, 256, 8, 8], after the final GroupNorm and SiLU, averaged over space, is what every head is a
    linear function of: the analogue of Inception's pool3 that feeds its classifier. Images are
    resized to 64x64 (bilinear, antialiased, as ``WorldClassifier.prepare`` does).

    What the features capture: the world's shapes, colours, patterns and views, which is what
    separates a good world render from a bad one. What they miss: everything outside the world
    (real photographs, textures, lighting and backgrounds it never saw map to arbitrary points), and
    detail finer than 64x64 or than its labels needed. A FID on them is a distance between two sets
    of world-like images; it is not comparable with published Inception FIDs, nor across classifiers.
    """

    def __init__(self, classifier: WorldClassifier, name: str = "classifier"):
        self.classifier = classifier.eval().requires_grad_(False)
        self.device = classifier.device
        self.name = name
        self.input_size = classifier.config.resolution
        self.feature_dim = classifier.config.widths[-1]

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_CLASSIFIER, *,
                        device: torch.device | str | None = None) -> ClassifierFeatures:
        """Features of a classifier folder or shipped name (default: the shipped world classifier)."""
        name = "classifier" if str(name_or_path) == DEFAULT_CLASSIFIER else f"classifier:{name_or_path}"
        return cls(WorldClassifier.from_pretrained(name_or_path, device=device), name)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        clf = self.classifier
        h = clf.blocks(clf.stem(clf.prepare(images)))            # [B, 256, 8, 8], the last stage
        return F.silu(clf.final_norm(h)).mean(dim=(2, 3)).float()  # global average pool -> [B, 256]


# --- Inception-v3, from a file on disk -----------------------------------------------------------

INCEPTION_SIZE = 299
INCEPTION_DIM = 2048
FID_WEIGHTS = ("pytorch-fid's pt_inception-2015-12-05-6726825d.pth, the TensorFlow FID network ported to torch "
               "(https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               "pt_inception-2015-12-05-6726825d.pth)")
TORCHVISION_WEIGHTS = ("torchvision's ImageNet inception_v3_google-0cc3c7bd.pth "
                       "(https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth)")
INCEPTION_SOURCES = f"{FID_WEIGHTS}, or {TORCHVISION_WEIGHTS}"
FID_CLASSES = 1008  # the 2015 TensorFlow graph has 1008 logits, torchvision's ImageNet model 1000

# Inception-v3's blocks in order, up to the last mixed block (torchvision's attribute names, which are
# also the keys of both weight files).
STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "maxpool2")
MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
         "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _tf_avg_pool(x: Tensor) -> Tensor:
    """3x3 average pool, stride 1, 'SAME' as TensorFlow pads it: the padded zeros are not counted."""
    return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)


def _tf_max_pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 3, 1, 1)


def _mixed_a(m: nn.Module, x: Tensor) -> Tensor:
    """torchvision's InceptionA (Mixed_5b-d) with TensorFlow's average pool."""
    b5 = m.branch5x5_2(m.branch5x5_1(x))
    b3 = m.branch3x3dbl_3(m.branch3x3dbl_2(m.branch3x3dbl_1(x)))
    return torch.cat([m.branch1x1(x), b5, b3, m.branch_pool(_tf_avg_pool(x))], dim=1)


def _mixed_c(m: nn.Module, x: Tensor) -> Tensor:
    """torchvision's InceptionC (Mixed_6b-e) with TensorFlow's average pool."""
    b7 = m.branch7x7_3(m.branch7x7_2(m.branch7x7_1(x)))
    d7 = x
    for i in range(1, 6):
        d7 = getattr(m, f"branch7x7dbl_{i}")(d7)
    return torch.cat([m.branch1x1(x), b7, d7, m.branch_pool(_tf_avg_pool(x))], dim=1)


def _mixed_e(m: nn.Module, x: Tensor, pool) -> Tensor:
    """torchvision's InceptionE (Mixed_7b-c) with the pooling of the TensorFlow graph."""
    b3 = m.branch3x3_1(x)
    b3 = torch.cat([m.branch3x3_2a(b3), m.branch3x3_2b(b3)], dim=1)
    d3 = m.branch3x3dbl_2(m.branch3x3dbl_1(x))
    d3 = torch.cat([m.branch3x3dbl_3a(d3), m.branch3x3dbl_3b(d3)], dim=1)
    return torch.cat([m.branch1x1(x), b3, d3, m.branch_pool(pool(x))], dim=1)


# How the FID graph's mixed blocks differ from torchvision's: its average pools leave padding out of
# the mean, and its last block max-pools where the paper (and torchvision) average-pool. Blocks not
# named here (Mixed_6a, Mixed_7a) are the same in both.
FID_BLOCKS = {"Mixed_5b": _mixed_a, "Mixed_5c": _mixed_a, "Mixed_5d": _mixed_a,
              "Mixed_6b": _mixed_c, "Mixed_6c": _mixed_c, "Mixed_6d": _mixed_c, "Mixed_6e": _mixed_c,
              "Mixed_7b": lambda m, x: _mixed_e(m, x, _tf_avg_pool),
              "Mixed_7c": lambda m, x: _mixed_e(m, x, _tf_max_pool)}


class InceptionFeatures(FeatureNetwork):
    """Inception-v3 pool3 features [B, 2048], as FID (Heusel et al. 2017) defines them.

    Two weight files are understood, told apart by their logits (1008 or 1000 classes):
    - ``FID_WEIGHTS`` (name ``inception-fid``): the TensorFlow graph FID was defined on. Its mixed
      blocks pool as that graph does (``FID_BLOCKS``), so the features are those of pytorch-fid, whose
      figures are the ones papers report;
    - ``TORCHVISION_WEIGHTS`` (name ``inception-torchvision``): torchvision's own ImageNet model. Close,
      but its FIDs differ from published ones by a few points; use it only to compare runs of your own.
    Input: images resized to 299x299, bilinear without antialiasing (``F.interpolate``, half-pixel
    centres, as pytorch-fid does on the float image), then scaled to [-1, 1] (both models were trained
    on that range; torchvision's ``transform_input`` lands there too). The trunk up to Mixed_7c, then
    the global average pool. The architecture is torchvision's ``Inception3``.
    """

    input_size = INCEPTION_SIZE
    feature_dim = INCEPTION_DIM
    antialias = False

    def __init__(self, trunk: nn.Module, fid_graph: bool, device: torch.device | str | None = None):
        self.device = pick_device(device)
        self.trunk = trunk.to(self.device).eval().requires_grad_(False)
        self.fid_graph = fid_graph
        self.name = "inception-fid" if fid_graph else "inception-torchvision"

    @classmethod
    def from_file(cls, path: str | Path | None, *, device: torch.device | str | None = None) -> InceptionFeatures:
        """Inception-v3 with the weights of ``path`` (``.pth`` read as tensors only, or ``.safetensors``)."""
        if not path or not Path(path).expanduser().is_file():
            given = f"no Inception weights file {Path(path).expanduser()}" if path else "no Inception weights file given"
            raise UserError(f"{given}: get {INCEPTION_SOURCES}, save it on this machine and use "
                            "--features inception:PATH (nothing is downloaded)")
        Inception3 = _torchvision_inception()
        state = _read_tensors(path, "Inception weights", INCEPTION_SOURCES)
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}  # the aux head is not used
        fc = state.get("fc.weight")
        if fc is None or fc.shape[0] not in (FID_CLASSES, 1000):
            raise UserError(f"{path} is not an Inception-v3 state dict (no fc.weight with 1008 or 1000 rows); "
                            f"expected {INCEPTION_SOURCES}")
        trunk = Inception3(num_classes=fc.shape[0], aux_logits=False, transform_input=False, init_weights=False)
        _load(trunk, state, path, INCEPTION_SOURCES, what="Inception-v3")
        return cls(trunk, fid_graph=fc.shape[0] == FID_CLASSES, device=device)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        x = self.resize(images.to(self.device).float()).permute(0, 3, 1, 2) * 2 - 1  # [B, 3, 299, 299]
        for name in STEM:
            x = getattr(self.trunk, name)(x)
        for name in MIXED:
            block = getattr(self.trunk, name)
            x = FID_BLOCKS[name](block, x) if self.fid_graph and name in FID_BLOCKS else block(x)
        return x.mean(dim=(2, 3)).float()  # pool3: [B, 2048]


def _torchvision_inception():
    """torchvision's ``Inception3`` class; a ``UserError`` saying what to install when it is missing."""
    try:
        from torchvision.models.inception import Inception3
    except ImportError as e:
        raise UserError("Inception features need torchvision for the Inception-v3 architecture: "
                        "pip install torchvision (the build that matches your torch); the weights stay the "
                        f"file you give ({INCEPTION_SOURCES})") from e
    return Inception3


# --- by name ---------------------------------------------------------------------------------------

DEFAULT_FEATURES = "classifier"


def feature_network(name: str = DEFAULT_FEATURES, device: torch.device | str | None = None) -> FeatureNetwork:
    """A feature network by name: ``"classifier"`` (default), ``"classifier:<folder>"`` or ``"inception:<file>"``."""
    kind, _, rest = str(name).partition(":")
    if kind == "classifier":
        return ClassifierFeatures.from_pretrained(rest or DEFAULT_CLASSIFIER, device=device)
    if kind == "inception":
        return InceptionFeatures.from_file(rest or None, device=device)
    raise UserError(f"unknown feature network {name!r}: use classifier, classifier:<folder> or inception:<weights file>")
