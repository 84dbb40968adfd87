"""Regularisers of a density field beside the guidance loss: the orientation loss (Ref-NeRF /
DreamFusion) and a 2D smoothness of the rendered normals, with their weights (threestudio's
linear ramps)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from distill3d.errors import UserError
from distill3d.guidance.timestep_schedules import linear_anneal


@dataclass
class FieldRegularisers:
    """Weights of the regularisers of a density field (Consistent3D names them without weights)."""

    # orientation-loss weight at step 0 (threestudio's lambda_orient ramp [0, 10, 1000, 5000])
    orient_weight_start: float = 10.0
    orient_weight_end: float = 1000.0    # orientation-loss weight reached, linearly, after orient_ramp_share of the run
    # share of the run the ramp takes (threestudio: 5000 of 10000 steps; Consistent3D's coarse config: 2000 of 3000)
    orient_ramp_share: float = 0.5
    normal_smooth_weight: float = 1000.0  # weight of the 2D normal smoothness (our choice; Consistent3D's code: 0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.orient_ramp_share <= 1.0:
            raise UserError("--orient-ramp-share must lie in [0, 1]")

    def orientation_weight(self, step: int, total_steps: int) -> float:
        """The orientation-loss weight at ``step`` of a run of ``total_steps``."""
        ramp = max(round(self.orient_ramp_share * total_steps), 1)
        return linear_anneal(self.orient_weight_start, self.orient_weight_end, min(step, ramp), ramp)


def orientation_loss(weights: Tensor, normals: Tensor, dirs: Tensor) -> Tensor:
    """Ref-NeRF / DreamFusion orientation loss: mean over rays of sum_i sg(w_i) max(0, n_i . d)^2.

    weights [B, H, W, S], normals [B, H, W, S, 3] (outward), dirs [B, H, W, 3] (camera -> scene).
    """
    facing_away = (normals * dirs[..., None, :]).sum(-1).clamp_min(0.0)
    return (weights.detach() * facing_away.square()).sum(-1).mean()


def normal_smoothness_2d(normal: Tensor, alpha: Tensor) -> Tensor:
    """Mean squared difference of neighbouring rendered normals [B, H, W, 3] (alpha-weighted)."""
    n = normal * alpha
    dy = (n[:, 1:] - n[:, :-1]).square().mean()
    dx = (n[:, :, 1:] - n[:, :, :-1]).square().mean()
    return dx + dy
