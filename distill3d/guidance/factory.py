"""The guidance loss of a per-scene method by name: CDS (Consistent3D) or SDS (DreamFusion)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from distill3d.errors import UserError
from distill3d.guidance.cds import CDSConfig, CDSLoss
from distill3d.guidance.sds import SDSConfig, SDSLoss

GuidanceKind = Literal["cds", "sds"]


def build_guidance(kind: str, cds: CDSConfig, sds: SDSConfig, *, total_steps: int, seed: int) -> CDSLoss | SDSLoss:
    """``CDSLoss(cds)`` or ``SDSLoss(sds)`` of a run of ``total_steps`` steps seeded with ``seed``."""
    if kind == "cds":
        return CDSLoss(cds, total_steps=total_steps, seed=seed)
    if kind == "sds":
        return SDSLoss(sds, total_steps=total_steps, seed=seed)
    raise UserError(f"unknown guidance '{kind}'; choose cds or sds")


def guidance_state(guidance: CDSLoss | SDSLoss) -> dict[str, Tensor]:
    """What a checkpoint holds to resume ``guidance``: CDS's fixed noise eps*, once drawn (SDS holds nothing)."""
    if isinstance(guidance, CDSLoss) and guidance.fixed_noise_tensor is not None:
        return {"cds_fixed_noise": guidance.fixed_noise_tensor}
    return {}


def load_guidance_state(guidance: CDSLoss | SDSLoss, tensors: dict[str, Tensor]) -> None:
    """Restore what ``guidance_state`` saved (entries of ``tensors`` it did not write are ignored)."""
    if isinstance(guidance, CDSLoss) and "cds_fixed_noise" in tensors:
        guidance.fixed_noise_tensor = tensors["cds_fixed_noise"].cpu().float()
