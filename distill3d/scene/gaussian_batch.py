"""A batch of S Gaussian scenes of N Gaussians each, as activated values (a feed-forward student's output).

``Gaussians`` (scene/gaussians.py) holds one scene as raw, unconstrained tensors for optimisation;
a generator such as DD3G's student instead outputs activated attributes for many objects at once.
``GaussianBatch`` holds those, as plain tensors (any may carry autograd history):

    means      [S, N, 3]   centres in the world frame
    quats      [S, N, 4]   unit rotations (w, x, y, z), gsplat's order
    scales     [S, N, 3]   standard deviations along the local axes (linear, > 0)
    opacities  [S, N]      peak opacities in (0, 1)
    colours    [S, N, 3]   view-independent RGB in [0, 1] (no spherical harmonics)

Only shapes are checked (value checks would synchronise a GPU). ``render_gaussian_batch``
(render/splat.py) renders all scenes in one call; ``scene(i)`` gives object i as ``Gaussians``
(SH degree 0), e.g. to write it as a standard 3DGS .ply.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill3d.scene.gaussians import Gaussians, quat_multiply, rotmat_to_quat

__all__ = ["GaussianBatch"]

FIELDS = ("means", "quats", "scales", "opacities", "colours")


@dataclass
class GaussianBatch:
    """S scenes of N Gaussians each, activated values (see the module docstring for shapes)."""

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colours: torch.Tensor

    def __post_init__(self) -> None:
        if self.means.ndim != 3 or self.means.shape[-1] != 3:
            raise ValueError(f"means must be [S, N, 3], got {list(self.means.shape)}")
        s, n = self.means.shape[:2]
        expected = {"quats": (s, n, 4), "scales": (s, n, 3), "opacities": (s, n), "colours": (s, n, 3)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"{name} must be {list(shape)} (S={s}, N={n} from means), got {list(got)}")
        devices = {getattr(self, name).device for name in FIELDS}
        if len(devices) != 1:
            raise ValueError(f"all tensors of a GaussianBatch must be on one device, got {sorted(map(str, devices))}")

    def __len__(self) -> int:
        """S, the number of scenes."""
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        """N, the Gaussians per scene."""
        return self.means.shape[1]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def tensors(self) -> dict[str, torch.Tensor]:
        """The five tensors by field name."""
        return {name: getattr(self, name) for name in FIELDS}

    def to(self, device=None, dtype: torch.dtype | None = None) -> GaussianBatch:
        """A batch on ``device`` (and in ``dtype``, when given); differentiable."""
        return GaussianBatch(**{name: t.to(device=device, dtype=dtype) for name, t in self.tensors().items()})

    def float(self) -> GaussianBatch:
        """The batch in float32 (differentiable), as ``Tensor.float``: accelerate calls it on a model's
        bf16 output under mixed precision."""
        return self.to(dtype=torch.float32)

    def detach(self) -> GaussianBatch:
        return GaussianBatch(**{name: t.detach() for name, t in self.tensors().items()})

    def transformed(self, rotation: torch.Tensor, scale: torch.Tensor) -> GaussianBatch:
        """Each scene s moved by x -> rotation[s] (scale[s] x): rotation [S, 3, 3], scale [S] > 0 (a similarity
        about the origin); orientations turn with it, sizes scale, opacities and colours are kept."""
        S = len(self)
        if rotation.shape != (S, 3, 3) or scale.shape != (S,):
            raise ValueError(f"rotation must be [{S}, 3, 3] and scale [{S}], got {list(rotation.shape)}, "
                             f"{list(scale.shape)}")
        rotation, scale = rotation.to(self.means), scale.to(self.means)
        means = torch.einsum("sij,snj->sni", rotation, self.means) * scale[:, None, None]
        quats = quat_multiply(rotmat_to_quat(rotation)[:, None, :], self.quats)
        return GaussianBatch(means=means, quats=quats, scales=self.scales * scale[:, None, None],
                             opacities=self.opacities, colours=self.colours)

    def scene(self, i: int) -> Gaussians:
        """Scene ``i`` as ``Gaussians`` of SH degree 0 (log-scales, opacity logits, SH DC from rgb).

        Differentiable; ``Gaussians.scales / .opacities / .rotations / .rgb`` give the values back
        (up to rounding, and opacities clamped to [eps, 1 - eps] of the dtype by the logit).
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"scene {i} out of range for a batch of {len(self)}")
        return Gaussians.from_values(self.means[i], self.scales[i], self.opacities[i],
                                     rgb=self.colours[i], quats=self.quats[i])
