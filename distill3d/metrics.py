"""Image metrics: PSNR, SSIM (scikit-image's implementation) and mask IoU."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity


def psnr(pred: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of images [B, H, W, C] in [0, max_value]. Returns [B]."""
    mse = ((pred.float() - target.float()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(max_value ** 2 / mse.clamp_min(1e-12))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM of images [B, H, W, C] in [0, 1] (Gaussian window, sigma 1.5, as Wang et al.). Returns [B]."""
    p = pred.detach().float().cpu().numpy()
    t = target.detach().float().cpu().numpy()
    values = [structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False) for a, b in zip(p, t)]
    return torch.tensor(np.asarray(values, dtype=np.float32))


def mask_iou(pred_alpha: torch.Tensor, target_alpha: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image IoU of alpha masks [B, H, W, 1] thresholded at ``threshold``. Returns [B]."""
    a = pred_alpha.flatten(1) > threshold
    b = target_alpha.flatten(1) > threshold
    inter = (a & b).sum(dim=1).float()
    union = (a | b).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
