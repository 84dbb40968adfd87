"""Guidance losses: ``loss(images [B, H, W, 3] in [0, 1], teacher, cond, step) -> (loss, stats)``.

``SDSLoss`` (DreamFusion's score distillation) and ``CDSLoss`` (Consistent3D's consistency
distillation sampling), each with a typed config holding the paper's numbers.
"""

from distill3d.guidance.cds import CDSConfig, CDSLoss
from distill3d.guidance.sds import SDSConfig, SDSLoss

__all__ = ["CDSConfig", "CDSLoss", "SDSConfig", "SDSLoss"]
