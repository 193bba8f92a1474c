"""Closed-form optimal velocity fields E[eps - x0 | x_t] for Gaussian-mixture data (fp64).

For data x0 ~ sum_k w_k N(mu_k, s_k^2) (per coordinate) and x_t = (1 - sigma) x0 + sigma eps,
component k gives x_t ~ N((1 - sigma) mu_k, var_k) with var_k = (1 - sigma)^2 s_k^2 + sigma^2, and
    E[x0 | x_t, k]  = mu_k + (1 - sigma) s_k^2 / var_k * (x_t - (1 - sigma) mu_k)
    E[eps | x_t, k] = sigma / var_k * (x_t - (1 - sigma) mu_k)
mixed by the posterior responsibilities of the components. The probability-flow ODE driven by
this field carries N(0, 1) at sigma = 1 exactly onto the data distribution at sigma = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def mixture_velocity(weights: Sequence[float], means: Sequence[float], stds: Sequence[float]):
    """Velocity field ``(x, sigma_b) -> v`` of a 1-D Gaussian mixture, applied per coordinate."""
    w = torch.tensor(weights, dtype=torch.float64)
    mu = torch.tensor(means, dtype=torch.float64)
    s = torch.tensor(stds, dtype=torch.float64)

    def field(x: torch.Tensor, sigma_b: torch.Tensor) -> torch.Tensor:
        sig = sigma_b.to(torch.float64).view(-1, *([1] * (x.ndim - 1)))[..., None]
        xk = x.to(torch.float64)[..., None]
        var = (1 - sig) ** 2 * s**2 + sig**2
        d = xk - (1 - sig) * mu
        log_p = torch.log(w) - 0.5 * torch.log(2 * math.pi * var) - 0.5 * d**2 / var
        resp = torch.softmax(log_p, dim=-1)
        v_k = sig / var * d - (mu + (1 - sig) * s**2 / var * d)
        return (resp * v_k).sum(-1).to(x.dtype)

    return field


def gaussian_velocity(mean: float, std: float):
    """Velocity field of N(mean, std^2) data; its exact flow map is z -> mean + std * z."""
    return mixture_velocity([1.0], [mean], [std])


def mixture_quantile_map(
    z: torch.Tensor, weights: Sequence[float], means: Sequence[float], stds: Sequence[float]
) -> torch.Tensor:
    """Exact end point of the flow from noise z for a 1-D mixture.

    In 1-D the probability-flow ODE is a monotone transport from N(0, 1) to the data, hence the
    quantile map ``F^-1(Phi(z))``; solved by bisection in fp64.
    """
    target = torch.special.ndtr(z.to(torch.float64))
    lo = torch.full_like(target, -50.0)
    hi = torch.full_like(target, 50.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = sum(
            w * torch.special.ndtr((mid - m) / s)
            for w, m, s in zip(weights, means, stds, strict=True)
        )
        below = cdf < target
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)
    return (lo + hi) / 2
