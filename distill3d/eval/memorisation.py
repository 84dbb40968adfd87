"""Does a generator copy its training objects? The nearest training object of each generated object.

HoloFusion cannot measure this on CO3D (no ground truth per object); the world can. Each object, generated
or not, is seen on one ring of cameras (``MemorisationConfig``: ``views`` azimuths at elevation 15, the
world data sets' distance 2.7 and fovy 40), each view becomes a feature vector (the FID network,
by default the world classifier's 256 pooled features, or ``PixelFeatures``), and two objects are as far
apart as the root mean square over the views of the Euclidean distance between their features at the
same azimuth:

    d(a, b) = sqrt( (1 / views) sum_k || f(a, az_k) - f(b, az_k) ||^2 ).

Unposed objects: an unconditional sample may face any way, so a generated object is rendered at
``views * rotation_steps`` azimuths (every 360 / (views * rotation_steps) degrees) and compared with every
rotation of that finer ring: the distance to a training object is the minimum over those rotations (the
training objects' ring is the ``views`` base azimuths; the rotation of the best match is reported).
Held-out objects go through exactly the same procedure.

The figures (``memorisation_summary``):
- each generated object's nearest training object, its distance and rotation;
- the baseline: the same nearest distance for the held-out objects' own reference renders, objects that
  are in no training set: what "new but plausible" looks like. A training object's own renders give 0
  (a copy);
- ``ratio``: median nearest distance of the samples / median of the held-out objects (about 1: as new as
  unseen objects; well below 1: close to copies; above 1: far from every training object, which is also
  what poor samples look like, so read it beside FID);
- ``share_closer_than_heldout``: the share of samples nearer to a training object than any held-out
  object is.

The 228 training objects' features are computed once per run (``training_ring``) and reused for every
sample; ``objects`` takes a subset (the CPU tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from distill3d.cameras import Cameras, orbit_cameras
from distill3d.data.multiview import FOVY_DEG, FRAMING_DISTANCE
from distill3d.errors import UserError
from distill3d.eval.feature_networks import FeatureNetwork
from distill3d.world.prompts import WorldObject
from distill3d.world.reference_render import render_reference
from distill3d.world.split import heldout_objects, train_objects

__all__ = [
    "MemorisationConfig",
    "NearestObjects",
    "ObjectRing",
    "PixelFeatures",
    "heldout_ring",
    "memorisation_summary",
    "nearest_training",
    "object_ring",
    "ring_cameras",
    "ring_features",
    "subset",
    "training_ring",
]


@dataclass
class MemorisationConfig:
    """The ring of cameras every object is seen on (ours: the paper has no such measure)."""

    views: int = 8                 # azimuths 360 k / views of the training objects' ring
    rotation_steps: int = 2        # a generated object is also seen between them: rotations every 360 / (views * steps)
    elevation: float = 15.0        # degrees (the world's turntables and orbit data sets)
    distance: float = FRAMING_DISTANCE  # the world data sets' framing
    fovy: float = FOVY_DEG
    resolution: int = 64           # render size (the world classifier's input size)
    batch_size: int = 64           # images rendered / featurised at once

    def __post_init__(self) -> None:
        if self.views < 1 or self.rotation_steps < 1 or self.resolution < 8 or self.batch_size < 1:
            raise UserError("memorisation needs views >= 1, rotation steps >= 1, resolution >= 8 and a positive batch")

    @property
    def ring_size(self) -> int:
        """Azimuths a generated object is rendered at: views * rotation_steps."""
        return self.views * self.rotation_steps


class PixelFeatures(FeatureNetwork):
    """Raw pixels as features: images resized to ``size`` x ``size`` (antialiased bilinear), flattened
    -> [B, 3 size^2]. Distances in colour space, for a reading that needs no network."""

    def __init__(self, size: int = 32, device: torch.device | str = "cpu"):
        self.name, self.input_size, self.feature_dim = f"pixels{size}", int(size), 3 * int(size) ** 2
        self.device = torch.device(device)

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        return self.resize(images.to(self.device).float()).reshape(images.shape[0], -1)


def ring_cameras(config: MemorisationConfig, fine: bool = True) -> Cameras:
    """The ring [A]: azimuths 360 a / A for A = ``ring_size`` (fine) or ``views`` (the base ring), at the
    config's elevation, distance and fovy."""
    count = config.ring_size if fine else config.views
    azimuth = torch.arange(count, dtype=torch.float32) * (360.0 / count)
    return orbit_cameras(config.elevation, azimuth, config.distance, config.fovy, config.resolution,
                         config.resolution)


@torch.no_grad()
def ring_features(renders: Tensor, network: FeatureNetwork, batch_size: int = 64) -> Tensor:
    """Renders [N, A, H, W, 3] in [0, 1] -> features [N, A, D] (on the network's device)."""
    N, A = renders.shape[:2]
    flat = renders.reshape(N * A, *renders.shape[2:])
    parts = [network.features(network.resize(flat[s:s + batch_size].to(network.device).float()))
             for s in range(0, N * A, batch_size)]
    return torch.cat(parts).reshape(N, A, -1)


@dataclass
class ObjectRing:
    """Objects' names [N] and their ring features [N, A, D]."""

    names: list[str]
    features: Tensor


@torch.no_grad()
def object_ring(objects: Sequence[WorldObject], network: FeatureNetwork, config: MemorisationConfig,
                fine: bool = True, device: torch.device | str | None = None) -> ObjectRing:
    """Reference renders of world objects on the ring (fine: ``ring_size`` azimuths, else ``views``) -> features."""
    cams = ring_cameras(config, fine).to(device or network.device)
    A = len(cams)
    per_batch = max(1, config.batch_size // A)
    parts = []
    for s in range(0, len(objects), per_batch):
        batch = list(objects[s:s + per_batch])
        many = Cameras.cat([cams] * len(batch))
        renders = render_reference([o for o in batch for _ in range(A)], many).rgb
        parts.append(ring_features(renders.reshape(len(batch), A, *renders.shape[1:]), network, config.batch_size))
    return ObjectRing([o.prompt for o in objects], torch.cat(parts))


def subset(objects: list[WorldObject], count: int | None) -> list[WorldObject]:
    """``count`` objects evenly spaced over the list (all of them for None or a count >= its length)."""
    if count is None or count >= len(objects):
        return list(objects)
    if count < 1:
        raise UserError(f"a subset needs at least one object, got {count}")
    return [objects[i * len(objects) // count] for i in range(count)]


def training_ring(network: FeatureNetwork, config: MemorisationConfig, count: int | None = None) -> ObjectRing:
    """The training objects' features on the base ring [N, views, D] (all 228, or ``count`` evenly spaced):
    compute once per run and pass to every ``nearest_training``."""
    return object_ring(subset(train_objects(), count), network, config, fine=False)


def heldout_ring(network: FeatureNetwork, config: MemorisationConfig, count: int | None = None) -> ObjectRing:
    """The held-out objects' features on the fine ring [N, views * rotation_steps, D] (the baseline)."""
    return object_ring(subset(heldout_objects(), count), network, config, fine=True)


@dataclass
class NearestObjects:
    """For each query object [Q]: its nearest training object's index and name, the distance, and the
    rotation (degrees) of the query's ring that matched best."""

    index: list[int]
    names: list[str]
    distance: list[float]
    rotation_deg: list[float]

    def rows(self) -> list[dict]:
        return [{"nearest": n, "distance": d, "rotation_deg": r}
                for n, d, r in zip(self.names, self.distance, self.rotation_deg)]


@torch.no_grad()
def nearest_training(query: Tensor, training: ObjectRing, config: MemorisationConfig) -> NearestObjects:
    """Query ring features [Q, views * rotation_steps, D] against the training ring [N, views, D].

    Rotation r compares the query's view r + k * rotation_steps (mod the ring) with the training view k,
    so the query seen from azimuth az + r * 360 / ring_size stands for the training object seen from az.
    Distance: root mean square over the views of the Euclidean feature distance; minimum over r and N."""
    Q, A, D = query.shape
    N, V, D_train = training.features.shape
    if A != config.ring_size or V != config.views or D != D_train:
        raise UserError(f"query ring [Q, {A}, {D}] and training ring [N, {V}, {D_train}] do not fit "
                        f"{config.views} views x {config.rotation_steps} rotation steps")
    train = training.features.to(query.device).double().reshape(N, V * D)
    best = torch.full((Q,), math.inf, dtype=torch.float64, device=query.device)
    best_n = torch.zeros(Q, dtype=torch.long, device=query.device)
    best_r = torch.zeros(Q, dtype=torch.long, device=query.device)
    base = torch.arange(V, device=query.device) * config.rotation_steps
    for r in range(A):
        turned = query[:, (base + r) % A].double().reshape(Q, V * D)                 # [Q, V * D]
        dist = torch.cdist(turned, train, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(V)  # [Q, N]
        value, index = dist.min(dim=1)
        better = value < best
        best, best_n, best_r = (torch.where(better, value, best), torch.where(better, index, best_n),
                                torch.where(better, torch.full_like(best_r, r), best_r))
    step = 360.0 / A
    return NearestObjects([int(i) for i in best_n], [training.names[int(i)] for i in best_n],
                          [float(d) for d in best], [float(r) * step for r in best_r])


def _median(values: Sequence[float]) -> float:
    return float(torch.tensor(list(values), dtype=torch.float64).median()) if len(values) else math.nan


def memorisation_summary(sample_distances: Sequence[float], heldout_distances: Sequence[float]) -> dict:
    """The samples' nearest-training distances read against the held-out objects' (module docstring).

    ``median`` is the lower median (torch's) of an even count."""
    samples, heldout = list(sample_distances), list(heldout_distances)
    if not heldout:
        raise UserError("the memorisation baseline needs at least one held-out object")
    closest_heldout = min(heldout)
    median_s, median_h = _median(samples), _median(heldout)
    return {
        "samples": len(samples), "heldout_objects": len(heldout),
        "sample_median": median_s, "heldout_median": median_h,
        "sample_min": min(samples) if samples else math.nan, "heldout_min": closest_heldout,
        "ratio": median_s / median_h if median_h > 0 else math.nan,
        "share_closer_than_heldout": (sum(d < closest_heldout for d in samples) / len(samples)
                                      if samples else math.nan),
    }
