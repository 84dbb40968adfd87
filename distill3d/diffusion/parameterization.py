"""Conversions between what a diffusion network predicts and the clean / noise estimates.

VP process (DDPM): ``x_t = sqrt(abar) x0 + sqrt(1 - abar) eps``.
v-prediction (Salimans & Ho 2022): ``v = sqrt(abar) eps - sqrt(1 - abar) x0``.
Sigma ("EDM") form of the same process: ``x_t / sqrt(abar) = x0 + sigma eps`` with
``sigma = sqrt((1 - abar) / abar)`` (shared notation of the three papers).

Every function takes ``abar`` either as a float, a 0-d tensor, or a tensor [B] (one value per
batch item); it is broadcast over the trailing dimensions of ``x_t`` ([B, C, H, W] or any rank).
Coefficients are computed in float32 (float64 if ``x_t`` is float64) and the result has the
dtype of ``x_t``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

# The names diffusers uses in its scheduler configs.
PredictionType = Literal["epsilon", "v_prediction", "sample"]


def broadcast_like(value: float | Tensor, x: Tensor) -> Tensor:
    """``value`` (float, 0-d, or [B]) as a tensor [B, 1, ..., 1] (or 0-d) on ``x``'s device.

    The dtype is float32, or float64 when ``x`` is float64, so that half-precision inputs do not
    lose the schedule's precision.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    v = torch.as_tensor(value, device=x.device).to(dtype)
    if v.ndim == 0:
        return v
    if v.ndim != 1 or v.shape[0] != x.shape[0]:
        raise ValueError(f"expected a scalar or a [B] tensor with B={x.shape[0]}, got shape {tuple(v.shape)}")
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def _mix(a: Tensor, x: Tensor, b: Tensor, y: Tensor, like: Tensor) -> Tensor:
    """``a x + b y`` computed in the coefficients' precision, returned in ``like``'s dtype."""
    return (a * x.to(a.dtype) + b * y.to(a.dtype)).to(like.dtype)


def x0_from_eps(x_t: Tensor, eps: Tensor, abar: float | Tensor) -> Tensor:
    """x0 [B, ...] = (x_t - sqrt(1 - abar) eps) / sqrt(abar)."""
    a = broadcast_like(abar, x_t)
    return _mix(a.rsqrt(), x_t, -((1 - a) / a).sqrt(), eps, x_t)


def eps_from_x0(x_t: Tensor, x0: Tensor, abar: float | Tensor) -> Tensor:
    """eps [B, ...] = (x_t - sqrt(abar) x0) / sqrt(1 - abar)."""
    a = broadcast_like(abar, x_t)
    return _mix((1 - a).rsqrt(), x_t, -(a / (1 - a)).sqrt(), x0, x_t)


def x0_from_v(x_t: Tensor, v: Tensor, abar: float | Tensor) -> Tensor:
    """x0 [B, ...] = sqrt(abar) x_t - sqrt(1 - abar) v."""
    a = broadcast_like(abar, x_t)
    return _mix(a.sqrt(), x_t, -(1 - a).sqrt(), v, x_t)


def eps_from_v(x_t: Tensor, v: Tensor, abar: float | Tensor) -> Tensor:
    """eps [B, ...] = sqrt(1 - abar) x_t + sqrt(abar) v."""
    a = broadcast_like(abar, x_t)
    return _mix((1 - a).sqrt(), x_t, a.sqrt(), v, x_t)


def v_from_x0_eps(x0: Tensor, eps: Tensor, abar: float | Tensor) -> Tensor:
    """v [B, ...] = sqrt(abar) eps - sqrt(1 - abar) x0 (the v-prediction training target)."""
    a = broadcast_like(abar, x0)
    return _mix(a.sqrt(), eps, -(1 - a).sqrt(), x0, x0)


def x0_and_eps(
    prediction: Tensor, x_t: Tensor, abar: float | Tensor, prediction_type: PredictionType
) -> tuple[Tensor, Tensor]:
    """(x0, eps), each [B, ...], from a network output of the given ``prediction_type``.

    The results have the dtype of ``x_t`` (pass a float32 ``x_t`` to get float32 estimates from
    a half-precision network).
    """
    prediction = prediction.to(x_t.dtype)
    if prediction_type == "epsilon":
        return x0_from_eps(x_t, prediction, abar), prediction
    if prediction_type == "v_prediction":
        return x0_from_v(x_t, prediction, abar), eps_from_v(x_t, prediction, abar)
    if prediction_type == "sample":
        return prediction, eps_from_x0(x_t, prediction, abar)
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected 'epsilon', 'v_prediction' or 'sample'")


def sigma_from_alpha_bar(abar: Tensor) -> Tensor:
    """sigma = sqrt((1 - abar) / abar), elementwise."""
    return ((1 - abar) / abar).sqrt()


def alpha_bar_from_sigma(sigma: Tensor) -> Tensor:
    """abar = 1 / (1 + sigma^2), elementwise (inverse of ``sigma_from_alpha_bar``)."""
    return 1 / (1 + sigma.square())


def vp_to_sigma_space(x_t: Tensor, abar: float | Tensor) -> Tensor:
    """The scaled sample x_t / sqrt(abar) [B, ...] = x0 + sigma eps (Consistent3D's form)."""
    a = broadcast_like(abar, x_t)
    return (x_t.to(a.dtype) * a.rsqrt()).to(x_t.dtype)


def sigma_space_to_vp(x_scaled: Tensor, abar: float | Tensor) -> Tensor:
    """Back from the scaled sample: x_t [B, ...] = sqrt(abar) * x_scaled."""
    a = broadcast_like(abar, x_scaled)
    return (x_scaled.to(a.dtype) * a.sqrt()).to(x_scaled.dtype)
