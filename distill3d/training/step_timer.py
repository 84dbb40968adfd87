"""Where the time of an optimisation step goes: seconds per phase, with the device synchronised.

Off by default: synchronising every phase costs a little speed, so runs measure it only
when asked (``--profile``). CUDA work is asynchronous, so without the synchronisation a
phase would be charged for the kernels of the one before it.
"""

from __future__ import annotations

import time

import torch


class StepTimer:
    """``start()`` at the top of a step, ``lap(name)`` after each phase; ``means()`` per step."""

    def __init__(self, device: torch.device, enabled: bool):
        self.device, self.enabled = device, enabled
        self.totals: dict[str, float] = {}
        self.steps = 0
        self._last = 0.0

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def start(self) -> None:
        if self.enabled:
            self._last = self._now()
            self.steps += 1

    def lap(self, name: str) -> None:
        if self.enabled:
            now = self._now()
            self.totals[name] = self.totals.get(name, 0.0) + now - self._last
            self._last = now

    def means(self) -> dict[str, float]:
        """Mean seconds per step of each phase (empty when disabled)."""
        return {k: round(v / max(self.steps, 1), 5) for k, v in self.totals.items()}
