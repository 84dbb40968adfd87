"""3D Gaussians under optimisation: the six raw tensors of ``Gaussians`` as an ``nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from distill3d.scene.gaussians import FIELDS, Densifier, Gaussians


class GaussianParameters(nn.Module):
    """The six raw tensors of ``Gaussians`` as registered parameters (for optimisers and checkpoints)."""

    def __init__(self, gaussians: Gaussians):
        super().__init__()
        for name, tensor in gaussians.tensors().items():
            setattr(self, name, nn.Parameter(tensor.detach().clone()))

    @property
    def gaussians(self) -> Gaussians:
        return Gaussians(**{name: getattr(self, name) for name in FIELDS})

    def densify(self, densifier: Densifier, step: int, optimizer: torch.optim.Optimizer) -> dict[str, int]:
        """Run ``densifier``'s schedule at ``step`` (counted from 1) on these Gaussians; the optimiser's
        parameters and Adam moments follow the new rows. Returns what was done (counts)."""
        gaussians = self.gaussians  # the same Parameter objects; the densifier swaps in new ones
        done = densifier.step(step, gaussians, optimizer)
        for name in FIELDS:
            new = getattr(gaussians, name)
            if new is not getattr(self, name):
                setattr(self, name, new)
        return done
