"""What every renderer returns (reference sphere tracer, volume renderer, splatting)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RenderOutput:
    """Images for a batch of B cameras of size H x W.

    rgb:    [B, H, W, 3] in [0, 1], composited over the background colour.
    alpha:  [B, H, W, 1] accumulated opacity / coverage in [0, 1].
    depth:  [B, H, W, 1] z-depth in the OpenCV camera frame (expected depth for soft
            renderers, normalised by alpha where alpha > 0; 0 where nothing is hit).
    normal: [B, H, W, 3] unit world-space normals (zero where nothing is hit), or None
            when the renderer does not produce them.
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    normal: torch.Tensor | None = None

    def to(self, device) -> "RenderOutput":
        return RenderOutput(*(None if t is None else t.to(device)
                              for t in (self.rgb, self.alpha, self.depth, self.normal)))

    def rgba(self) -> torch.Tensor:
        """[B, H, W, 4] colour with alpha (colour still composited over the background)."""
        return torch.cat([self.rgb, self.alpha], dim=-1)
