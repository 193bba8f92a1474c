"""Flow-matching identities: noising, velocity target, conversions, re-noising and the loss.

Shape legend: B batch, C latent channels, F latent frames, H, W latent height and width.
Latents are (B, C, F, H, W). A noise level ``sigma`` may be a float, a 0-d tensor, a per-sample
tensor (B,) or a per-frame tensor (B, F) (frames at different noise levels, as in diffusion
forcing and clean-context continuation).

    x_t = (1 - sigma) * x0 + sigma * eps        v = eps - x0
    x0  = x_t - sigma * v                       eps = x_t + (1 - sigma) * v
"""

from __future__ import annotations

from typing import Literal

import torch

SigmaLike = float | torch.Tensor


def expand_sigma(sigma: SigmaLike, x: torch.Tensor) -> torch.Tensor:
    """Reshape a noise level so it broadcasts against ``x``.

    Args:
        sigma: float, 0-d tensor, (B,) per sample, or (B, F) per frame (then ``x`` must be
            (B, C, F, H, W)).
        x: the tensor to broadcast against, batch first.

    Returns:
        A tensor on ``x``'s device and dtype: 0-d, (B, 1, ..., 1) or (B, 1, F, 1, 1).
    """
    s = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if s.ndim == 0:
        return s
    if s.shape[0] != x.shape[0]:
        raise ValueError(f"sigma has batch {s.shape[0]} but x has batch {x.shape[0]}")
    if s.ndim == 1:
        return s.view(-1, *([1] * (x.ndim - 1)))
    if s.ndim == 2:
        if x.ndim != 5 or s.shape[1] != x.shape[2]:
            raise ValueError(
                f"per-frame sigma of shape {tuple(s.shape)} needs x of shape (B, C, F, H, W) with "
                f"F={s.shape[1]}, got x of shape {tuple(x.shape)}"
            )
        return s[:, None, :, None, None]
    raise ValueError(f"sigma must be a scalar, (B,) or (B, F), got shape {tuple(s.shape)}")


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
    """Noise clean latents to level ``sigma``: ``(1 - sigma) * x0 + sigma * noise``.

    Args:
        x0: clean latents (B, C, F, H, W) (any batch-first shape for scalar or (B,) sigma).
        noise: standard normal noise, same shape as ``x0``.
        sigma: noise level, scalar, (B,) or (B, F).

    Returns:
        x_t, same shape as ``x0``.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    s = expand_sigma(sigma, x0)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target ``v = noise - x0`` (= d x_t / d sigma)."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    return noise - x0


def x0_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
    """Clean-latent prediction from a velocity prediction: ``x_t - sigma * v``."""
    return x_t - expand_sigma(sigma, x_t) * v


def noise_from_velocity(x_t: torch.Tensor, v: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
    """Noise prediction from a velocity prediction: ``x_t + (1 - sigma) * v``."""
    return x_t + (1 - expand_sigma(sigma, x_t)) * v


def velocity_from_x0(x_t: torch.Tensor, x0: torch.Tensor, sigma: SigmaLike) -> torch.Tensor:
    """Velocity implied by a clean-latent prediction: ``(x_t - x0) / sigma`` (sigma > 0)."""
    return (x_t - x0) / expand_sigma(sigma, x_t)


def renoise(
    x0: torch.Tensor, sigma: SigmaLike, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Re-noise (predicted) clean latents to level ``sigma`` with fresh Gaussian noise.

    Used by few-step students and distillation: the prediction of x0 at one level is pushed back
    to the next (lower) level, or a teacher/backbone output is re-noised for a critic or refiner.
    The noise is drawn on the generator's device (CPU by default) in ``x0``'s dtype and moved to
    ``x0``'s device, so a seeded generator reproduces across devices.

    Args:
        x0: clean latents (B, C, F, H, W).
        sigma: target level, scalar, (B,) or (B, F).
        generator: random source.

    Returns:
        x_t, same shape as ``x0``.
    """
    draw_device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn(x0.shape, generator=generator, device=draw_device, dtype=x0.dtype)
    return add_noise(x0, noise.to(x0.device), sigma)


def flow_matching_loss(
    v_pred: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> torch.Tensor:
    """Mean squared error between the predicted and the target velocity, in fp32.

    The squared error is multiplied by ``weight`` (per sample or per frame, e.g. a timestep
    weighting) and averaged over the elements that ``mask`` keeps (e.g. excluding clean context
    frames that carry no denoising target). The weight is not renormalised, so it scales the loss.

    Args:
        v_pred: predicted velocity (B, C, F, H, W).
        x0: clean latents, same shape.
        noise: noise used to build x_t, same shape.
        weight: optional (B,) or (B, F) non-negative weights, or (B, 1, F, H, W) per position.
        mask: optional (B,) or (B, F) bool/0-1 mask of samples or frames that count.
        reduction: ``"mean"``: a scalar over all kept elements; ``"none"``: (B,) per-sample
            means over each sample's kept elements (0 where nothing is kept).

    Returns:
        Scalar loss, or (B,) per-sample losses.
    """
    if v_pred.shape != x0.shape:
        raise ValueError(f"v_pred shape {tuple(v_pred.shape)} != x0 shape {tuple(x0.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    err = (v_pred.float() - velocity_target(x0, noise).float()).square()
    if weight is not None:
        w = weight.float()
        err = err * (w.to(err.device) if w.ndim == err.ndim else expand_sigma(w, err))
    keep = torch.ones((), device=err.device) if mask is None else expand_sigma(mask.float(), err)
    keep = keep.expand_as(err)
    err = err * keep
    dims = tuple(range(1, err.ndim))
    if reduction == "none":
        return err.sum(dims) / keep.sum(dims).clamp_min(1.0)
    return err.sum() / keep.sum().clamp_min(1.0)
