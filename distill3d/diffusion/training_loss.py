"""The denoising loss a diffusion model is trained with (eps, v or x0 targets; optional Min-SNR weights)."""

from __future__ import annotations

from torch import Tensor

from distill3d.diffusion.parameterization import v_from_x0_eps


def diffusion_loss(prediction: Tensor, x0: Tensor, eps: Tensor, abar: Tensor, prediction_type: str,
                   min_snr_gamma: float | None = None) -> Tensor:
    """Mean squared error of a network's prediction [B, ...] against its target, optionally Min-SNR weighted.

    The target is eps, v (``v_from_x0_eps``) or x0 by ``prediction_type``. With ``min_snr_gamma``
    each sample's loss is weighted so that it equals min(SNR, gamma) * |x0_hat - x0|^2
    (Min-SNR-gamma, Hang et al. 2023, Eq. 9, gamma = 5 there): for v that is
    min(SNR, gamma) / (SNR + 1), for eps min(SNR, gamma) / SNR. abar: [B]. For v the weight
    goes to 0 with the SNR, so the steps near pure noise are hardly trained: teachers trained so
    never learned the first sampling steps (benchmarks/RESULTS.md, "World teachers").
    """
    targets = {"epsilon": eps, "v_prediction": v_from_x0_eps(x0, eps, abar), "sample": x0}
    if prediction_type not in targets:
        raise ValueError(f"unknown prediction_type {prediction_type!r}")
    per_sample = (prediction.float() - targets[prediction_type].float()).square().flatten(1).mean(dim=1)
    if min_snr_gamma is None:
        return per_sample.mean()
    snr = abar.float() / (1.0 - abar.float()).clamp_min(1e-8)
    clipped = snr.clamp(max=min_snr_gamma)
    weight = {"epsilon": clipped / snr.clamp_min(1e-8), "v_prediction": clipped / (snr + 1.0),
              "sample": clipped}[prediction_type]
    return (weight * per_sample).mean()
