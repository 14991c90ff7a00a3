"""The variance-guided one-step reconstruction flow (paper Sec. 3.1, "variance-guided reconstruction").

The DiT predicts a flow velocity v at the single timestep t = 999 from the decoded mean latent; the
release steps x_hat_0 = mean - sigma_t * g(s) * v + res, where s is the decoded standard deviation and
g modulates sigma per element (the paper writes it as a per-pixel pseudo-timestep; the release keeps
a scalar t and scales sigma). ``variance_guidance=False`` gives the plain step mean - sigma_t * v + res.
"""

from __future__ import annotations

import torch
from torch import Tensor

from codec.config import FlowConfig

__all__ = ["flow_sigma", "variance_gain", "one_step"]

LOG_VAR_MIN, LOG_VAR_MAX = -30.0, 20.0
GUIDANCE_KNEE, GUIDANCE_FLOOR = 4.0, 0.4


def flow_sigma(cfg: FlowConfig) -> float:
    """sigma_t of the shifted flow schedule at ``cfg.timestep`` (DPM-Solver flow sigmas, one step).

    sigma = t / T, then shifted: shift * sigma / (1 + (shift - 1) * sigma). t = 999, shift 3 -> 0.99967.
    """
    sigma = cfg.timestep / cfg.num_train_timesteps
    return cfg.flow_shift * sigma / (1.0 + (cfg.flow_shift - 1.0) * sigma)


def decoded_std(log_var: Tensor) -> Tensor:
    """s = exp(clamp(log_var, -30, 20) / 2): the ``scale`` head predicts a log-variance."""
    return torch.exp(0.5 * log_var.clamp(LOG_VAR_MIN, LOG_VAR_MAX))


def variance_gain(s: Tensor) -> Tensor:
    """g(s) = 0.4 + 0.15 |s| for |s| < 4, else 1: uncertain elements get the full denoising step."""
    linear = GUIDANCE_FLOOR + (1.0 - GUIDANCE_FLOOR) / GUIDANCE_KNEE * s.abs()
    return torch.where(s.abs() < GUIDANCE_KNEE, linear, torch.ones_like(s))


def one_step(mean: Tensor, log_var: Tensor, velocity: Tensor, res: Tensor, cfg: FlowConfig) -> Tensor:
    """x_hat_0 = mean - sigma_t * g(s) * v + res (all (B, C, h, w) at 1/32)."""
    sigma = flow_sigma(cfg)
    if cfg.variance_guidance:
        return mean - sigma * variance_gain(decoded_std(log_var)) * velocity + res
    return mean - sigma * velocity + res
