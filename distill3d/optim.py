"""Optimiser settings of network training (AdamW, warm-up, decay, clipping, EMA), shared by every
trained network: the world teachers and classifier, and the methods' students.

The settings are part of a training config (``config.optim``); the network trainer
(``distill3d.training.network_trainer``) reads them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up, gradient clipping and an EMA of the weights (the step count is the
    training config's ``steps``)."""

    batch_size: int = 256    # per process
    lr: float = 2e-4         # peak learning rate
    warmup_steps: int = 500  # linear warm-up of the learning rate from 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0   # gradient norm clip (0: none)
    ema_decay: float = 0.999  # decay of the weights' exponential moving average (what is exported)
    seed: int = 0
    anneal_steps: int = 0    # linear decay of lr to 0 over the run's last anneal_steps steps (0: constant)


def lr_at(config: OptimConfig, step: int, total_steps: int) -> float:
    """Linear warm-up to ``lr``, then constant (the EMA does the averaging); with
    ``anneal_steps`` a linear decay to 0 at ``total_steps`` over that many last steps."""
    lr = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
    if config.anneal_steps > 0:
        lr *= min(1.0, max(0.0, (total_steps - step) / config.anneal_steps))
    return lr
