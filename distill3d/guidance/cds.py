"""Consistency Distillation Sampling (Consistent3D, Sec. 4.2, Eq. 10-12, Algorithm 1).

Everything is in the teacher's space, sigma ("EDM") form: with x = teacher.encode_images(images)
(the render x_pi, differentiable) and ONE fixed noise eps* drawn once per run,

    x_t1     = x + sigma_t1 eps*                                        (Eq. 10, 16)
    x_hat_t2 = x_t1 + (sigma_t2 - sigma_t1) / sigma_t1 (x_t1 - D(x_t1, t1, y))   (Eq. 11)
    L        = E_pi[ lambda(t2) || D(x_t1, t1, y) - sg(D(x_hat_t2, t2, y)) ||^2 ]  (Eq. 10)

The teacher is queried at ``sqrt(abar_t) * x_sigma`` (its VP input); D is its x0 estimate,
the same in both forms. t2 follows Eq. 12 and t1 ~ U[t2 + delta, t2 + Delta] per view
(``gap_min`` = delta, ``gap_max`` = Delta; ``gap_form="paper"``). The authors' code draws
t1 = t2 + randint(end_gap, end_gap + perturb_factor), a gap in [delta, delta + Delta)
(``gap_form="code"``): the coarse config's end_gap 100 and perturb_factor 200 of T = 1000 give
[0.1, 0.3), and the refinement's delta = Delta = 0.1 is the gap [0.1, 0.2) there, where the paper's
reading would make it the single gap 0.1. t1 is clamped to ``t1_max`` (the code's max_sigma_percent
0.98).

Gradient produced. "We follow Poole et al. and reparameterize the first component in Eq. 10
to skip the CDS gradient directly to x_pi" (Sec. 4.2). Written in eps (D(z) = z - sigma eps_hat(z)),
D(x_t1) - D(x_hat_t2) = sigma_t2 (eps_hat(x_hat_t2, t2) - eps_hat(x_t1, t1)), so Eq. 10 regresses the
first component's eps prediction onto the second's, as SDS regresses eps_hat onto eps. Poole's skip
replaces d eps_hat(x_t1) / d x_pi by the identity and folds the constant factors into the weight, as
DreamFusion folds them into w(t). With ``skip_jacobian_of="eps"`` (the default, and what the
authors' public code computes):

    grad_b = w_b (eps_hat(x_t1) - eps_hat(x_hat_t2)) = w_b (D(x_hat_t2) - D(x_t1)) / sigma_t2   [B, C, h, w]
    loss   = 0.5 sum_b ||x_b - sg(x_b - grad_b)||^2 / B,   so d loss / d x_b = grad_b / B.

Taking dD(x_t1)/dx_pi as the identity instead (``skip_jacobian_of="x0"``) gives the same vector
with the opposite sign, grad_b = w_b (D(x_t1) - D(x_hat_t2)) / sigma_t2. That reading pushes renders
away from the data: against an exact Gaussian-mixture denoiser it drifts to the wrong class, where
the eps skip moves towards the prompt's modes (tests/test_cds_exact_denoiser.py). E_pi over the B views is
a mean.

The weight: the paper writes lambda(t2), "the loss weight", and never gives it (Sec. 3). We
take DreamFusion's w(t) = 1 - abar_t, so the gradient is in SDS's units; the default
``weight_by="t2"`` evaluates it at t2 as Eq. 10 writes, ``"t1"`` as the public code does.
``weighting="uniform"`` sets w = 1.

Paper defaults versus the authors' public code (the code's choice is an option):
- w evaluated at t2 (``weight_by="t2"``) vs. at t1 (``"t1"``);
- CFG ``uncond + s (cond - uncond)`` (``cfg_form="standard"``) vs. ``cond + s (cond - uncond)``;
- one noise slice per view (the fixed eps* is [B, C, h, w]) vs. one slice shared by all views
  (``share_noise_across_views``);
- no weight (the paper gives none) vs. ``weighting="uniform"``, the coarse config's choice
  (1 - abar only in its refine and texture configs);
- no clamp vs. an element-wise clamp of the gradient growing linearly from ``grad_clip_start`` to
  ``grad_clip_end`` (the coarse config's grad_clip [0, 2.0, 8.0, N], after Hong et al.'s
  "Debiasing Scores and Prompts");
- the gap reading above (``gap_form``), and CFG 100 -> 50 in the code's 3000-step coarse config
  (its 5000-step "long" config keeps the paper's 50 -> 20).

Ablations of Sec. 5.4 (``t_sampling``, ``fixed_noise``):
(a) "random": "a random time step schedule in DreamFusion": t2 ~ U[t_min, t_max] every step
    (per view), t1 ~ U[t2 + delta, t2 + Delta] as in CDS;
(b) "predetermined": "a predetermined time step schedule from Consistency Distillation": t2 by
    Eq. 12 and t1 = t2 + (delta + Delta) / 2, a fixed gap (the mean of CDS's t1) with no
    randomness, since the paper contrasts it with "the random sampled time step t1";
(c) fixed_noise=False: "varied random noise in each iteration", eps drawn afresh per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from distill3d.diffusion.guidance_cfg import CfgForm, standard_scale
from distill3d.diffusion.parameterization import broadcast_like, sigma_space_to_vp
from distill3d.diffusion.samplers import euler_sigma_step
from distill3d.diffusion.teacher import Teacher, at_teacher_resolution
from distill3d.errors import UserError
from distill3d.guidance.timestep_schedules import (
    linear_anneal,
    sqrt_schedule,
    step_generator,
    to_timestep,
    uniform,
)

TimestepSampling = Literal["cds", "random", "predetermined"]
GapForm = Literal["paper", "code"]
CdsWeighting = Literal["one_minus_alpha_bar", "uniform"]
JacobianSkip = Literal["eps", "x0"]
RESIDUAL_SIGN: dict[str, float] = {"eps": 1.0, "x0": -1.0}  # gradient = sign w (D(x_hat_t2) - D(x_t1)) / sigma_t2


@dataclass
class CDSConfig:
    """Consistent3D's CDS settings; defaults are the coarse (NeRF) stage of Sec. 4.3."""

    t_max: float = 0.7  # t2 at the start, as a fraction of T (Eq. 12; Sec. 4.3 coarse stage, refinement: 0.5)
    t_min: float = 0.1  # t2 at the end (Eq. 12; Sec. 4.3 coarse stage, refinement: 0.02)
    gap_min: float = 0.1  # delta: t1 - t2 >= delta (Sec. 4.3, both stages)
    gap_max: float = 0.2  # Delta: t1 - t2 <= Delta (Sec. 4.3 coarse stage; refinement: 0.1)
    gap_form: GapForm = "paper"  # paper: t1 - t2 in [delta, Delta]; code: in [delta, delta + Delta) (docstring)
    t1_max: float = 0.98  # t1 is clamped to this (the public code's max_sigma_percent)
    cfg_start: float = 50.0  # classifier-free guidance scale at the start (Sec. B.1: 50, decreased linearly)
    cfg_end: float = 20.0  # classifier-free guidance scale at the end of the run (Sec. B.1: 20)
    cfg_form: CfgForm = "standard"  # paper: uncond + s (cond - uncond); "code": cond + s (cond - uncond)
    weighting: CdsWeighting = "one_minus_alpha_bar"  # w(t) = 1 - abar_t as DreamFusion (module docstring)
    weight_by: Literal["t2", "t1"] = "t2"  # Eq. 10 writes lambda(t2); the public code weights by t1
    t_sampling: TimestepSampling = "cds"  # Eq. 12 + random t1; "random" = ablation (a), "predetermined" = (b)
    fixed_noise: bool = True  # Algorithm 1: one eps* for the run; False = ablation (c)
    share_noise_across_views: bool = False  # public code: one noise slice repeated over the batch
    skip_jacobian_of: JacobianSkip = "eps"  # Sec. 4.2 "follow Poole et al."; "x0" flips the sign (docstring)
    grad_clip_start: float | None = None  # element-wise gradient clamp at the start; none: no clamp (code: 2)
    grad_clip_end: float | None = None    # the clamp reached, linearly, at the end of the run (code: 8)

    def __post_init__(self) -> None:
        if not 0.0 <= self.t_min <= self.t_max <= 1.0 or not 0.0 <= self.gap_min <= self.gap_max:
            raise UserError("CDS needs 0 <= t_min <= t_max <= 1 and 0 <= gap_min <= gap_max")
        if (self.grad_clip_start is None) != (self.grad_clip_end is None):
            raise UserError("give both --cds.grad-clip-start and --cds.grad-clip-end, or neither")
        if self.grad_clip_start is not None and min(self.grad_clip_start, self.grad_clip_end) <= 0:
            raise UserError("the CDS gradient clamp must be positive")


class CDSLoss:
    """``loss(images [B, H, W, 3] in [0, 1], teacher, cond, step) -> (loss, stats)`` of a run of
    ``total_steps`` steps (N of Eq. 12).

    Holds only the run's fixed noise eps* [B, C, h, w] (or [1, C, h, w] when shared), drawn
    lazily at the first call from a generator seeded with ``seed``; t1 (and the fresh noise of
    ablation (c)) come from (``seed``, step).
    """

    def __init__(self, config: CDSConfig | None = None, *, total_steps: int, seed: int = 0):
        self.config = config or CDSConfig()
        self.total_steps, self.seed = total_steps, seed
        self.fixed_noise_tensor: Tensor | None = None

    def guidance_scale(self, step: int) -> float:
        """CFG at ``step``, linear from cfg_start to cfg_end (Sec. B.1), in ``cfg_form``."""
        c = self.config
        return linear_anneal(c.cfg_start, c.cfg_end, step, self.total_steps)

    def grad_clip(self, step: int) -> float | None:
        """The element-wise gradient clamp at ``step`` (none when off), linear from start to end."""
        c = self.config
        if c.grad_clip_start is None:
            return None
        return linear_anneal(c.grad_clip_start, c.grad_clip_end, step, self.total_steps)

    def sample_timesteps(self, step: int, batch: int) -> tuple[Tensor, Tensor]:
        """(t1, t2), each [batch] float64 fractions of T, for iteration ``step``."""
        c = self.config
        generator = step_generator(self.seed, step, stream=0)
        if c.t_sampling == "random":
            t2 = uniform(c.t_min, c.t_max, batch, generator)
        elif c.t_sampling in ("cds", "predetermined"):
            t2 = torch.full((batch,), sqrt_schedule(c.t_max, c.t_min, step, self.total_steps), dtype=torch.float64)
        else:
            raise ValueError(f"unknown t_sampling {c.t_sampling!r}; expected 'cds', 'random' or 'predetermined'")
        if c.gap_form not in ("paper", "code"):
            raise ValueError(f"unknown gap_form {c.gap_form!r}; expected 'paper' or 'code'")
        low, high = (c.gap_min, c.gap_max) if c.gap_form == "paper" else (c.gap_min, c.gap_min + c.gap_max)
        if c.t_sampling == "predetermined":
            t1 = t2 + 0.5 * (low + high)  # the mean gap, no randomness
        else:
            t1 = t2 + uniform(low, high, batch, generator)  # paper: t1 ~ U[t2 + delta, t2 + Delta]
        return t1.clamp(max=c.t1_max), t2

    def noise(self, shape: tuple[int, ...], step: int) -> Tensor:
        """eps* [B, C, h, w] (CPU float32): the run's fixed noise, or fresh noise for ablation (c)."""
        c = self.config
        batch = shape[0]
        draw_shape = (1, *shape[1:]) if c.share_noise_across_views else tuple(shape)
        if not c.fixed_noise:
            eps = torch.randn(draw_shape, generator=step_generator(self.seed, step, stream=1))
        else:
            if self.fixed_noise_tensor is None:
                generator = torch.Generator().manual_seed(self.seed)
                self.fixed_noise_tensor = torch.randn(draw_shape, generator=generator)
            eps = self.fixed_noise_tensor
            if tuple(eps.shape) != draw_shape:
                raise ValueError(
                    f"CDS fixes its noise at the first call ({tuple(eps.shape)}); got a batch of shape {tuple(shape)}"
                )
        return eps.expand(batch, *shape[1:])

    def __call__(self, images: Tensor, teacher: Teacher, cond: Any, step: int) -> tuple[Tensor, dict[str, float]]:
        """CDS loss whose gradient w.r.t. x = encode_images(images) is w (eps_hat(x_t1) - eps_hat(x_hat_t2)) / B."""
        c = self.config
        if c.skip_jacobian_of not in RESIDUAL_SIGN:
            raise ValueError(f"unknown skip_jacobian_of {c.skip_jacobian_of!r}; expected 'eps' or 'x0'")
        x = teacher.encode_images(at_teacher_resolution(images, teacher)).float()  # x_pi [B, C, h, w]
        batch = x.shape[0]
        schedule = teacher.schedule
        T = schedule.num_train_timesteps
        t1_frac, t2_frac = self.sample_timesteps(step, batch)
        t1 = to_timestep(t1_frac, T).to(x.device)
        t2 = to_timestep(t2_frac, T).to(x.device)
        abar1, abar2 = schedule.alpha_bar(t1), schedule.alpha_bar(t2)
        sigma1, sigma2 = schedule.sigma(t1), schedule.sigma(t2)
        cfg = self.guidance_scale(step)
        scale = standard_scale(cfg, c.cfg_form)
        eps = self.noise(tuple(x.shape), step).to(x.device)
        with torch.no_grad():
            x_t1 = x.detach() + broadcast_like(sigma1, x) * eps  # Eq. 10: x_t1 = x_pi + sigma_t1 eps*
            d1 = teacher.denoise(sigma_space_to_vp(x_t1, abar1), t1, cond, scale).x0.float()
            x_hat_t2 = euler_sigma_step(x_t1, d1, sigma1, sigma2)  # Eq. 11
            d2 = teacher.denoise(sigma_space_to_vp(x_hat_t2, abar2), t2, cond, scale).x0.float()
            weight_abar = abar2 if c.weight_by == "t2" else abar1
            w = (1 - weight_abar) if c.weighting == "one_minus_alpha_bar" else torch.ones_like(weight_abar)
            signed_weight = RESIDUAL_SIGN[c.skip_jacobian_of] * w / sigma2  # D-differences to eps units (docstring)
            grad = torch.nan_to_num(broadcast_like(signed_weight, x) * (d2 - d1))  # d2 - d1 = sigma_t2 (eps1 - eps2)
            clip = self.grad_clip(step)
            if clip is not None:
                grad = grad.clamp(-clip, clip)
        target = (x - grad).detach()
        loss = 0.5 * (x - target).square().sum() / batch
        stats = {
            "loss": float(loss.detach()),
            "t1": float(t1_frac.mean()),
            "t2": float(t2_frac.mean()),
            "cfg": float(cfg),
            "weight": float(w.mean()),
            "grad_norm": float(grad.norm()),
        }
        return loss, stats
