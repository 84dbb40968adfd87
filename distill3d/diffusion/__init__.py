"""Diffusion core: noise schedules, parameterisations, guidance, samplers and teachers.

A ``Teacher`` is anything with ``denoise(x_t, t, cond, guidance_scale) -> DenoiseOutput``;
samplers and guidance losses use only that. ``StableDiffusionTeacher`` lives in
``distill3d.diffusion.stable_diffusion`` (import it from there; it needs diffusers and
transformers at call time).
"""

from distill3d.diffusion.guidance_cfg import apply_cfg, guided_prediction, standard_scale
from distill3d.diffusion.parameterization import (
    alpha_bar_from_sigma,
    eps_from_v,
    eps_from_x0,
    sigma_from_alpha_bar,
    sigma_space_to_vp,
    v_from_x0_eps,
    vp_to_sigma_space,
    x0_and_eps,
    x0_from_eps,
    x0_from_v,
)
from distill3d.diffusion.samplers import (
    ddim_invert,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
    ddpm_step,
    euler_sigma_step,
)
from distill3d.diffusion.schedule import NoiseSchedule
from distill3d.diffusion.teacher import DenoiseOutput, PixelTeacher, Teacher, TextCond, denoise_with_network

__all__ = [
    "DenoiseOutput",
    "NoiseSchedule",
    "PixelTeacher",
    "Teacher",
    "TextCond",
    "alpha_bar_from_sigma",
    "apply_cfg",
    "ddim_invert",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "ddpm_step",
    "denoise_with_network",
    "eps_from_v",
    "eps_from_x0",
    "euler_sigma_step",
    "guided_prediction",
    "sigma_from_alpha_bar",
    "sigma_space_to_vp",
    "standard_scale",
    "v_from_x0_eps",
    "vp_to_sigma_space",
    "x0_and_eps",
    "x0_from_eps",
    "x0_from_v",
]
