"""The random streams of one training process, seeded per rank, saved and restored with a run."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Generators:
    """Random streams of one process: data (CPU: objects, cameras, batch indices) and noise (device)."""

    data: torch.Generator
    noise: torch.Generator

    @staticmethod
    def seeded(seed: int, rank: int, device: torch.device) -> "Generators":
        data = torch.Generator().manual_seed(1_000_003 * seed + 2 * rank)
        noise = torch.Generator(device=device).manual_seed(1_000_003 * seed + 2 * rank + 1)
        return Generators(data, noise)

    def state_tensors(self) -> dict[str, Tensor]:
        return {"data": self.data.get_state(), "noise": self.noise.get_state()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        self.data.set_state(tensors["data"].cpu())
        self.noise.set_state(tensors["noise"].cpu())
