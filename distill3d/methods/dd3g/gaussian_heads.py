"""The attribute heads of Progressive Decoding: block taps, MLP decoders, activations (DD3G Sec. III-B, IV-A).

"We weight and sum the features extracted from the outputs of adjacent PointTransformer blocks to
form the input for a specific attribute's decoder. The weighting coefficients for the inputs of
the mu, s, q, c and alpha decoders are respectively [0.15, 0.7, 0.15] (x3), [0.2, 0.8] and
[0.2, 0.8]. Each token is decoded into 512 3D Gaussians."

Our reading of the wiring (the supplement that lists the structure is not available): a
three-weight window is centred on one block (0.7) with its two neighbours (0.15 each); a
two-weight window can only be the last two blocks with the weight on the last (0.8), there being
no block after it. Sec. III-B decodes "first mu ..., then s and q respectively ..., and finally c
and alpha", so the windows slide down the stack one block per attribute. With K = 6 blocks, whose
outputs are b0 .. b5 (0-based):

    mu     0.15 b0 + 0.70 b1 + 0.15 b2
    s      0.15 b1 + 0.70 b2 + 0.15 b3
    q      0.15 b2 + 0.70 b3 + 0.15 b4
    c      0.20 b4 + 0.80 b5           (one input, two heads)
    alpha  0.20 b4 + 0.80 b5

so every block feeds a head and neighbouring attributes share blocks ("relatively independent
optimisation paths while enabling sufficient interaction"). ``HeadTap`` holds each window, so
another reading is a config change.

Each head is LayerNorm -> Linear -> GELU -> Linear, from the D-wide tap to G values per attribute
channel (G = ``gaussians_per_token``); token p's Gaussians are rows p*G .. p*G+G-1. Activations:

    means      [B, N, 3]   mean_bound * tanh
    quats      [B, N, 4]   normalised, (w, x, y, z) as ``distill3d.scene.gaussians``
    scales     [B, N, 3]   exp(lo + (hi - lo) * sigmoid), lo, hi = log_scale_range (linear scales)
    opacities  [B, N]      sigmoid
    colours    [B, N, 3]   sigmoid (RGB in [0, 1])

Scale range. The paper squashes log-scales into (-9, -3) for its objects and 256 x 256 renders
(``PAPER_LOG_SCALE_RANGE``). For the world (objects in a ball of radius 0.9, 64 x 64 views at
distance 2.2-3.0 with fovy 35-45 degrees; 2.7 and 40 in the quadruples) a pixel spans about
0.03 world units at the object's centre (0.02 on its near side), so ``WORLD_LOG_SCALE_RANGE`` =
(-6, -1) runs from exp(-6) = 0.0025 (a tenth of a pixel) to exp(-1) = 0.37 (about 12 pixels, 40%
of the object's radius), with its midpoint exp(-3.5) = 0.03, about one pixel, where a head's
output starts. The paper's range would cap a Gaussian at 0.05 (under 2 pixels): too small for the
few thousand Gaussians a 64 x 64 world needs. Both ranges are for Gaussians in world units; in
the multi-view teacher's normalised frame (input camera at distance 1) every length is about 2.7
times smaller, i.e. subtract ln 2.7 = 1 from both ends.

Mean bound. World objects lie in the ball of radius 0.9 (``distill3d.world.shapes.OBJECT_RADIUS``),
so each coordinate of a surface point is within +-0.9. A bound of 1.2 keeps those at tanh <= 0.75,
where the slope is still 44% of its peak (a bound of 1.0 would push the surface to tanh = 0.9 and
slope 19%), while no Gaussian can leave the box [-1.2, 1.2]^3, far from every camera (distance
>= 2.2). Scale it with the frame too (divide by the input camera's distance in the teacher's frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ATTRIBUTE_CHANNELS = {"means": 3, "scales": 3, "quats": 4, "colours": 3, "opacities": 1}
"""Values per Gaussian of each attribute, in the paper's decoding order (mu, s, q, c, alpha)."""

WORLD_LOG_SCALE_RANGE = (-6.0, -1.0)
"""Log-scale squash range for the world (module docstring): 0.1 pixel to 40% of an object's radius."""
PAPER_LOG_SCALE_RANGE = (-9.0, -3.0)
"""DD3G Sec. IV-A: "All scaling factors s are adjusted to the range of (-9, -3) using the sigmoid function"."""


@dataclass
class HeadTap:
    """Adjacent block outputs (0-based indices) that feed one head and their weights (DD3G Sec. IV-A)."""

    blocks: tuple[int, ...] = (0,)
    weights: tuple[float, ...] = (1.0,)


def _tap(blocks: tuple[int, ...], weights: tuple[float, ...]):
    return field(default_factory=lambda: HeadTap(blocks, weights))


CENTRED = (0.15, 0.7, 0.15)  # DD3G Sec. IV-A: weights of the mu, s, q decoders' inputs
LAST_TWO = (0.2, 0.8)  # DD3G Sec. IV-A: weights of the c, alpha decoders' inputs


@dataclass
class GaussianHeadsConfig:
    """The attribute heads (module docstring for the taps, ranges and bound)."""

    gaussians_per_token: int = 32  # G; the paper's 512 at 256 x 256, 32 x 256 tokens = 8192 Gaussians at 64 x 64
    hidden: int = 0  # hidden width of each MLP head; 0 = the token width D
    mean_bound: float = 1.2  # means = mean_bound * tanh(.), world units (objects within radius 0.9)
    log_scale_range: tuple[float, float] = WORLD_LOG_SCALE_RANGE  # (-9, -3) is the paper's (PAPER_LOG_SCALE_RANGE)
    means: HeadTap = _tap((0, 1, 2), CENTRED)  # DD3G Sec. III-B: mu first, from the earliest blocks
    scales: HeadTap = _tap((1, 2, 3), CENTRED)  # then s ...
    quats: HeadTap = _tap((2, 3, 4), CENTRED)  # ... and q, one block further
    colours: HeadTap = _tap((4, 5), LAST_TWO)  # finally c and alpha from the last two blocks
    opacities: HeadTap = _tap((4, 5), LAST_TWO)

    def check(self, num_blocks: int) -> None:
        lo, hi = self.log_scale_range
        if not lo < hi:
            raise ValueError(f"log_scale_range must be (low, high) with low < high, got {self.log_scale_range}")
        if self.gaussians_per_token < 1 or self.mean_bound <= 0:
            raise ValueError("gaussians_per_token and mean_bound must be positive")
        for name in ATTRIBUTE_CHANNELS:
            tap = getattr(self, name)
            blocks = tuple(tap.blocks)
            if len(blocks) != len(tap.weights) or not blocks:
                raise ValueError(f"heads.{name}: {len(blocks)} blocks for {len(tap.weights)} weights")
            if blocks != tuple(range(blocks[0], blocks[0] + len(blocks))) or blocks[0] < 0 or blocks[-1] >= num_blocks:
                raise ValueError(f"heads.{name}.blocks {blocks} must be adjacent blocks of 0 .. {num_blocks - 1}")


def activate(name: str, raw: Tensor, config: GaussianHeadsConfig) -> Tensor:
    """Raw head output [B, N, k] -> the attribute's activated value (module docstring)."""
    if name == "means":
        return config.mean_bound * torch.tanh(raw)
    if name == "scales":
        lo, hi = config.log_scale_range
        return torch.exp(lo + (hi - lo) * torch.sigmoid(raw))  # DD3G Sec. IV-A: log-scales squashed by a sigmoid
    if name == "quats":
        return F.normalize(raw, dim=-1, eps=1e-8)
    if name == "opacities":
        return torch.sigmoid(raw[..., 0])
    if name == "colours":
        return torch.sigmoid(raw)
    raise KeyError(name)


class AttributeHead(nn.Module):
    """A simple MLP decoder: tap [B, P, D] -> raw values [B, P * G, k]."""

    def __init__(self, token_dim: int, hidden: int, gaussians_per_token: int, channels: int):
        super().__init__()
        self.gaussians_per_token, self.channels = gaussians_per_token, channels
        self.mlp = nn.Sequential(nn.LayerNorm(token_dim), nn.Linear(token_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, gaussians_per_token * channels))

    def forward(self, tap: Tensor) -> Tensor:
        B, P, _ = tap.shape
        return self.mlp(tap).reshape(B, P * self.gaussians_per_token, self.channels)


class GaussianHeads(nn.Module):
    """``forward(block outputs: K tensors [B, P, D]) -> {attribute: activated tensor}`` (module docstring)."""

    def __init__(self, config: GaussianHeadsConfig, *, token_dim: int, num_blocks: int):
        super().__init__()
        config.check(num_blocks)
        self.config = config
        hidden = config.hidden or token_dim
        self.heads = nn.ModuleDict({name: AttributeHead(token_dim, hidden, config.gaussians_per_token, k)
                                    for name, k in ATTRIBUTE_CHANNELS.items()})

    def forward(self, block_outputs: list[Tensor]) -> dict[str, Tensor]:
        attributes = {}
        for name, head in self.heads.items():
            tap = getattr(self.config, name)
            mixed = sum(w * block_outputs[i] for i, w in zip(tap.blocks, tap.weights))  # DD3G Sec. IV-A: weighted sum of adjacent blocks
            attributes[name] = activate(name, head(mixed), self.config)
        return attributes
