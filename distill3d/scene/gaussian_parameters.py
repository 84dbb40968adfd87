"""3D Gaussians under optimisation: the six raw tensors of ``Gaussians`` as an ``nn.Module``."""

from __future__ import annotations

from torch import nn

from distill3d.scene.gaussians import FIELDS, Gaussians


class GaussianParameters(nn.Module):
    """The six raw tensors of ``Gaussians`` as registered parameters (for optimisers and checkpoints)."""

    def __init__(self, gaussians: Gaussians):
        super().__init__()
        for name, tensor in gaussians.tensors().items():
            setattr(self, name, nn.Parameter(tensor.detach().clone()))

    @property
    def gaussians(self) -> Gaussians:
        return Gaussians(**{name: getattr(self, name) for name in FIELDS})
