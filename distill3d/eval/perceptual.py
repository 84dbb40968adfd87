"""Perceptual distances between images: the LPIPS half of DD3G's explicit supervision.

DD3G Eq. 3-4: ``L_ES = 0.5 MSE + 0.5 LPIPS`` between the student's renders and the teacher's
output views. LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric") compares two images through a frozen network: per stage, unit-normalise the
features along channels, take the squared difference, weigh the channels (learned 1x1 weights,
"lin" layers), average over space, and sum the stages.

No weights are ever downloaded, so two distances are offered behind one small interface,
``PerceptualDistance``: ``distance(a [B, H, W, 3], b [B, H, W, 3]) -> [B]``, images in [0, 1],
differentiable in both images, the network frozen.

- ``ClassifierFeatureDistance`` (the default): the LPIPS recipe without learned weights (the
  paper's "lin off" baseline) on the four stages of the shipped world classifier. What it is
  and what it misses is said in its docstring.
- ``LPIPSDistance``: LPIPS itself (AlexNet or VGG16 trunk, its scaling and its lin layers), built
  here layer by layer (torchvision is not needed) and loaded from two files the user supplies.

``perceptual_distance(name, device)`` picks one by name: ``"classifier"``, ``"classifier:<folder>"``
or ``"lpips:<backbone file>:<linear file>"``.

A distance is deliberately not an ``nn.Module``: a model that keeps one as an attribute does not
take the frozen network into its parameters, optimiser or checkpoints.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from distill3d.devices import pick_device
from distill3d.errors import UserError
from distill3d.world_models.classifier import DEFAULT_CLASSIFIER, WorldClassifier

NORM_EPS = 1e-10
"""Added to the squared feature norm before the root, so a zero feature vector has a finite gradient
(LPIPS adds 1e-10 to the norm itself; the two agree wherever the norm is above 1e-5)."""


def unit_normalise(x: Tensor, eps: float = NORM_EPS) -> Tensor:
    """Features [B, C, h, w] divided by their norm along channels (LPIPS Eq. 1, the hat on y)."""
    return x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True) + eps)


class PerceptualDistance(ABC):
    """``distance(a, b)``: images a, b [B, H, W, 3] in [0, 1] -> distance [B] (0 for equal images).

    Differentiable with respect to both images; the network inside is frozen (no parameter
    requires grad) and in eval mode. Subclasses give the stage features and how each stage's
    squared difference of unit-normalised features [B, C, h, w] becomes a map [B, h, w].
    """

    device: torch.device

    @abstractmethod
    def features(self, images: Tensor) -> list[Tensor]:
        """Images [B, H, W, 3] in [0, 1] -> one feature map [B, C_s, h_s, w_s] per stage."""

    @abstractmethod
    def weigh_channels(self, stage: int, diff: Tensor) -> Tensor:
        """Squared difference [B, C, h, w] of stage ``stage`` -> [B, h, w]."""

    def per_stage(self, a: Tensor, b: Tensor) -> Tensor:
        """[B, S]: each stage's term of the distance between images a, b [B, H, W, 3] (LPIPS Eq. 1)."""
        if a.dim() != 4 or a.shape[-1] != 3 or a.shape != b.shape:
            raise ValueError(f"expected two image batches [B, H, W, 3] of one shape, got {tuple(a.shape)} "
                             f"and {tuple(b.shape)}")
        B = a.shape[0]
        both = self.features(torch.cat([a, b]).to(self.device, torch.float32))  # one pass for both
        terms = []
        for s, f in enumerate(both):
            fa, fb = unit_normalise(f[:B]), unit_normalise(f[B:])
            terms.append(self.weigh_channels(s, (fa - fb).pow(2)).mean(dim=(1, 2)))  # mean over space
        return torch.stack(terms, dim=1)

    def __call__(self, a: Tensor, b: Tensor) -> Tensor:
        """[B] distance between images a, b [B, H, W, 3] in [0, 1]: the sum of ``per_stage``."""
        return self.per_stage(a, b).sum(dim=1)


# --- the world classifier's features -------------------------------------------------------------


class ClassifierFeatureDistance(PerceptualDistance):
    """LPIPS's recipe without learned weights, on the stages of the world classifier.

    The classifier (``world_models/classifier.py``) is a pre-activation ResNet on 64x64 images:
    a stem conv, then one stage per width (32, 64, 128, 256; two blocks each; stages after the
    first halve the size). The features of a stage are its residual stream after its last block:
    [B, 32, 64, 64], [B, 64, 32, 32], [B, 128, 16, 16], [B, 256, 8, 8] for the shipped model.
    Images of other sizes are resized to 64x64 first (``WorldClassifier.prepare``, antialiased).
    Per stage: unit-normalise along channels, squared difference, sum over channels, mean over
    space (so each stage lies in [0, 4]), times the stage weight (1 by default); then the sum over
    stages. This is the "lin off" baseline of Zhang et al. 2018, on another trunk.

    What it misses, against real LPIPS: the classifier was trained to tell the world's shapes,
    colours, patterns and view buckets at 64x64, not to match human judgements of similarity;
    there are no calibrated per-channel weights, so channels that its labels never needed count
    as much as the rest; it sees only what those labels needed (e.g. fine texture, exact hue
    within a colour word, or detail finer than 64x64 may barely move it); and figures made with
    it are not comparable with the LPIPS figures of papers.

    The classifier given is frozen in place (eval mode, no parameter requires grad).
    """

    def __init__(self, classifier: WorldClassifier, stage_weights: Sequence[float] | None = None):
        self.classifier = classifier.eval().requires_grad_(False)  # frozen, as LPIPS keeps its trunk
        self.device = classifier.device
        n = len(classifier.config.widths)
        weights = [1.0] * n if stage_weights is None else [float(w) for w in stage_weights]
        if len(weights) != n:
            raise ValueError(f"{len(weights)} stage weights for {n} stages")
        self.stage_weights = weights

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_CLASSIFIER, *, device: torch.device | str | None = None,
                        stage_weights: Sequence[float] | None = None) -> ClassifierFeatureDistance:
        """The distance on a classifier folder or shipped name (default: the shipped world classifier)."""
        return cls(WorldClassifier.from_pretrained(name_or_path, device=device), stage_weights)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of each stage (the classifier's widths)."""
        return tuple(self.classifier.config.widths)

    def features(self, images: Tensor) -> list[Tensor]:
        clf = self.classifier
        h = clf.stem(clf.prepare(images))  # [B, w0, R, R], input in [-1, 1]
        per_stage, out = clf.config.blocks_per_stage, []
        for i, block in enumerate(clf.blocks):
            h = block(h)
            if (i + 1) % per_stage == 0:  # the last block of a stage
                out.append(h)
        return out

    def weigh_channels(self, stage: int, diff: Tensor) -> Tensor:
        return diff.sum(dim=1) * self.stage_weights[stage]


# --- LPIPS itself ----------------------------------------------------------------------------------

# The trunks as torchvision lays out their ``features`` (so ImageNet weight files load by key):
# ("conv", c_out, kernel, stride, padding) is a Conv2d followed by a ReLU (two entries of the
# Sequential), ("pool",) a 3x3 (AlexNet) or 2x2 (VGG) max pool, ("tap",) reads the ReLU just before
# it as one LPIPS stage. AlexNet: Krizhevsky 2014 "One weird trick" (torchvision's variant), LPIPS
# taps conv1-conv5; VGG16: Simonyan & Zisserman 2015, LPIPS taps conv1_2, conv2_2, conv3_3,
# conv4_3, conv5_3 (Zhang et al. 2018, Sec. 3).
_TAP, _POOL = ("tap",), ("pool",)
TRUNKS: dict[str, list[tuple]] = {
    "alex": [("conv", 64, 11, 4, 2), _TAP, _POOL, ("conv", 192, 5, 1, 2), _TAP, _POOL,
             ("conv", 384, 3, 1, 1), _TAP, ("conv", 256, 3, 1, 1), _TAP, ("conv", 256, 3, 1, 1), _TAP],
    "vgg": [("conv", 64, 3, 1, 1), ("conv", 64, 3, 1, 1), _TAP, _POOL,
            ("conv", 128, 3, 1, 1), ("conv", 128, 3, 1, 1), _TAP, _POOL,
            *[("conv", 256, 3, 1, 1)] * 3, _TAP, _POOL,
            *[("conv", 512, 3, 1, 1)] * 3, _TAP, _POOL,
            *[("conv", 512, 3, 1, 1)] * 3, _TAP],
}
MIN_SIZE = {"alex": 31, "vgg": 16}
"""Smallest image side each trunk runs on (every pooling needs something to pool)."""

# LPIPS v0.1's ScalingLayer (richzhang/PerceptualSimilarity, lpips/lpips.py): on images in [-1, 1],
# x -> (x - shift) / scale. These are the ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224,
# 0.225) that the trunks were trained with, carried to [-1, 1]: shift = 2 mean - 1, scale = 2 std.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

BACKBONE_SOURCES = {
    "alex": "torchvision's ImageNet AlexNet, alexnet-owt-7be5be79.pth "
            "(https://download.pytorch.org/models/alexnet-owt-7be5be79.pth)",
    "vgg": "torchvision's ImageNet VGG16, vgg16-397923af.pth (https://download.pytorch.org/models/vgg16-397923af.pth)",
}
LINEAR_SOURCE = ("the LPIPS v0.1 linear weights, lpips/weights/v0.1/alex.pth or vgg.pth of "
                 "https://github.com/richzhang/PerceptualSimilarity (also inside the `lpips` pip package)")


class _Trunk(nn.Module):
    """A trunk's ``features`` Sequential, its module indices as torchvision numbers them."""

    def __init__(self, net: str):
        super().__init__()
        layers, taps, c = [], [], 3
        pool = nn.MaxPool2d(3, 2) if net == "alex" else nn.MaxPool2d(2, 2)
        for op in TRUNKS[net]:
            if op[0] == "conv":
                _, c_out, k, stride, pad = op
                layers += [nn.Conv2d(c, c_out, k, stride, pad), nn.ReLU()]
                c = c_out
            elif op is _POOL:
                layers.append(pool)
            else:
                taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.taps = taps
        self.channels = tuple(self.features[i - 1].out_channels for i in taps)

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


class LPIPSDistance(PerceptualDistance):
    """LPIPS v0.1 (Zhang et al. 2018): an ImageNet trunk, LPIPS's input scaling, its lin layers.

    ``net``: "alex" (taps [64, 192, 384, 256, 256] channels) or "vgg" (VGG16, [64, 128, 256, 512,
    512]). Runs at the images' own size (as LPIPS does), at least ``MIN_SIZE[net]`` pixels a side.
    Built with random weights; ``from_files`` loads the real ones (the distance is meaningless
    without them). Per stage: unit-normalise, squared difference, the stage's 1x1 weights over
    channels, mean over space; then the sum over the five stages.
    """

    def __init__(self, net: str = "alex", device: torch.device | str | None = None):
        if net not in TRUNKS:
            raise UserError(f"unknown LPIPS trunk {net!r}; known: {', '.join(TRUNKS)}")
        self.net = net
        self.device = pick_device(device)
        self.trunk = _Trunk(net)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in self.trunk.channels)
        self.shift = torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
        self.scale = torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1)
        self._freeze()

    def _freeze(self) -> None:
        for m in (self.trunk, self.lins):
            m.to(self.device).eval().requires_grad_(False)
        self.shift, self.scale = self.shift.to(self.device), self.scale.to(self.device)

    @classmethod
    def from_files(cls, backbone: str | Path, linear: str | Path, *, net: str | None = None,
                   device: torch.device | str | None = None) -> LPIPSDistance:
        """LPIPS with the trunk's ImageNet weights from ``backbone`` and the lin layers from ``linear``.

        ``backbone``: a torchvision state dict of AlexNet or VGG16 (keys ``features.N.weight`` /
        ``.bias``; ``classifier.*`` is ignored). ``linear``: LPIPS's weights (keys
        ``linK.model.1.weight`` or ``lins.K.model.1.weight``, each [1, C_K, 1, 1]). Either as
        safetensors, or as a ``.pth`` read with ``torch.load(weights_only=True)`` (tensors only, no
        code). ``net`` is read from the backbone's first conv when not given. Nothing is downloaded.
        """
        backbone_state = _read_tensors(backbone, "LPIPS backbone", "; ".join(BACKBONE_SOURCES.values()))
        trunk_state = {k: v for k, v in backbone_state.items() if k.startswith("features.")}
        net = net or _trunk_of(trunk_state, backbone)
        model = cls(net, device)
        _load(model.trunk, trunk_state, backbone, BACKBONE_SOURCES[net])
        lin_state = {}
        for key, value in _read_tensors(linear, "LPIPS linear weights", LINEAR_SOURCE).items():
            match = re.fullmatch(r"(?:lin|lins\.)(\d+)\.model\.\d+\.weight", key)
            if match:
                lin_state[f"{match.group(1)}.weight"] = value
        _load(model.lins, lin_state, linear, LINEAR_SOURCE)
        model._freeze()
        return model

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return self.trunk.channels

    def features(self, images: Tensor) -> list[Tensor]:
        H, W = images.shape[1:3]
        if min(H, W) < MIN_SIZE[self.net]:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {MIN_SIZE[self.net]} pixels a side, "
                             f"got {H}x{W}")
        x = images.permute(0, 3, 1, 2) * 2 - 1  # [B, 3, H, W] in [-1, 1]
        return self.trunk((x - self.shift) / self.scale)  # LPIPS ScalingLayer

    def weigh_channels(self, stage: int, diff: Tensor) -> Tensor:
        return self.lins[stage](diff)[:, 0]  # the stage's 1x1 conv, one output channel


def _read_tensors(path: str | Path, what: str, source: str) -> dict[str, Tensor]:
    """A file's tensors by name; a ``UserError`` naming ``what`` and where to get it when absent or unreadable."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"no {what} file {path}: get {source}, save it on this machine and give its path "
                        "(nothing is downloaded)")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a broken or foreign file: one line for the user, not a traceback
        raise UserError(f"cannot read {what} from {path} ({type(e).__name__}: {e}); expected {source}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; expected {source}")
    return state


def _trunk_of(state: dict[str, Tensor], path: str | Path) -> str:
    """'alex' or 'vgg', from the shape of the first conv of a torchvision state dict."""
    first = state.get("features.0.weight")
    kernel = None if first is None else tuple(first.shape[-2:])
    if kernel == (11, 11):
        return "alex"
    if kernel == (3, 3):
        return "vgg"
    raise UserError(f"{path} is not a torchvision AlexNet or VGG16 state dict (no 11x11 or 3x3 "
                    f"features.0.weight); expected {' or '.join(BACKBONE_SOURCES.values())}")


def _load(module: nn.Module, state: dict[str, Tensor], path: str | Path, source: str, what: str = "LPIPS") -> None:
    """Load ``state`` into ``module`` strictly, with a one-line error naming what does not fit ``what``."""
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    reshaped = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        raise UserError(f"{path} does not fit {what} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                        f"other shape {reshaped[:3]}); expected {source}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


# --- by name ---------------------------------------------------------------------------------------

DEFAULT_PERCEPTUAL = "classifier"


def perceptual_distance(name: str = DEFAULT_PERCEPTUAL, device: torch.device | str | None = None) -> PerceptualDistance:
    """A perceptual distance by name.

    - ``"classifier"``: ``ClassifierFeatureDistance`` on the shipped world classifier (default);
    - ``"classifier:<folder>"``: the same on another classifier folder;
    - ``"lpips:<backbone file>:<linear file>"``: ``LPIPSDistance.from_files`` (trunk read from the file).
    """
    kind, _, rest = str(name).partition(":")
    if kind == "classifier":
        return ClassifierFeatureDistance.from_pretrained(rest or DEFAULT_CLASSIFIER, device=device)
    if kind == "lpips":
        files = rest.split(":")
        if len(files) != 2 or not all(files):
            raise UserError(f"perceptual distance {name!r}: write lpips:<backbone file>:<linear file>, e.g. "
                            "lpips:~/weights/alexnet-owt-7be5be79.pth:~/weights/lpips_v0.1_alex.pth")
        return LPIPSDistance.from_files(files[0], files[1], device=device)
    raise UserError(f"unknown perceptual distance {name!r}: use classifier, classifier:<folder> or "
                    "lpips:<backbone file>:<linear file>")
