"""Noise-level schedules for flow matching: Wan's timestep shift, inference sigma schedules,
training noise-level sampling and sigma <-> timestep conversion.

Conventions (Wan2.1): the noise level ``sigma`` lies in [0, 1], ``x_t = (1 - sigma) * x0 + sigma
* eps``; ``sigma = 1`` is pure noise and ``sigma = 0`` clean data. The network's timestep input is
``t = num_train_timesteps * sigma`` (1000 by default), a float, not rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

SigmaLike = float | torch.Tensor

TRAIN_METHODS = ("uniform", "logit_normal")


def _check_shift(shift: float) -> None:
    if not shift > 0:
        raise ValueError(f"shift must be > 0, got {shift}")


def shift_sigma(sigma: SigmaLike, shift: float) -> SigmaLike:
    """Wan's timestep shift ``sigma' = s * sigma / (1 + (s - 1) * sigma)``.

    With ``shift > 1`` noise levels move towards 1 (more steps spent at high noise, which large
    resolutions and long videos need); ``shift = 1`` is the identity. The map is strictly
    increasing on [0, 1] and fixes both endpoints.

    Args:
        sigma: noise level(s) in [0, 1], a float or a tensor of any shape.
        shift: the shift factor ``s > 0``.

    Returns:
        The shifted noise level(s), same type and shape as ``sigma``.
    """
    _check_shift(shift)
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(sigma: SigmaLike, shift: float) -> SigmaLike:
    """Inverse of :func:`shift_sigma`: ``sigma = sigma' / (s - (s - 1) * sigma')``."""
    _check_shift(shift)
    return sigma / (shift - (shift - 1) * sigma)


def sigma_to_timestep(sigma: SigmaLike, num_train_timesteps: int = 1000) -> SigmaLike:
    """Noise level in [0, 1] -> the network's timestep input in [0, num_train_timesteps]."""
    return sigma * num_train_timesteps


def timestep_to_sigma(timestep: SigmaLike, num_train_timesteps: int = 1000) -> SigmaLike:
    """The network's timestep input in [0, num_train_timesteps] -> noise level in [0, 1]."""
    return timestep / num_train_timesteps


def flow_sigmas(
    num_steps: int,
    shift: float = 1.0,
    *,
    sigma_max: float = 1.0,
    sigma_min: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Inference noise levels for ``num_steps`` steps, decreasing and ending at exactly 0.

    ``linspace(sigma_max, sigma_min, num_steps + 1)`` is shifted by :func:`shift_sigma` and its
    last entry set to 0, so the final step lands on clean data. ``sigma_min = 1 / 1000``
    reproduces diffusers' ``UniPCMultistepScheduler(use_flow_sigmas=True)`` schedule (which
    stops the linspace one training step above 0 before appending 0); ``sigma_min = 0`` is the
    plain uniform grid.

    Args:
        num_steps: number of model evaluations N (>= 1).
        shift: Wan's timestep shift (5.0 for Wan2.1 at 720P, 3.0 at 480P).
        sigma_max: first noise level before shifting, in (0, 1].
        sigma_min: last non-terminal grid point before shifting, in [0, sigma_max).
        dtype: dtype of the result.

    Returns:
        Tensor of shape (N + 1,): sigmas[0] is the starting level, sigmas[N] == 0.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_max <= 1:
        raise ValueError(f"sigma_max must be in (0, 1], got {sigma_max}")
    if not 0 <= sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be in [0, sigma_max), got {sigma_min}")
    grid = torch.linspace(sigma_max, sigma_min, num_steps + 1, dtype=torch.float64)
    sigmas = shift_sigma(grid, shift)
    sigmas[-1] = 0.0
    return sigmas.to(dtype)


def few_step_sigmas(
    timesteps: Sequence[float],
    shift: float = 1.0,
    *,
    num_train_timesteps: int = 1000,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Noise levels for a few-step (distilled) sampler from unshifted timesteps.

    A distilled student denoises at a handful of fixed timesteps, e.g. ``[1000, 750, 500, 250]``
    (Self-Forcing / CausVid) or the paper's ``{T0, T1, T2}``. As in those works the listed
    timesteps are positions on the unshifted grid and are warped by the teacher's shift, so the
    student sees the noise levels the teacher was trained on.

    Args:
        timesteps: strictly decreasing timesteps in (0, num_train_timesteps].
        shift: the teacher's timestep shift.
        num_train_timesteps: timestep scale.
        dtype: dtype of the result.

    Returns:
        Tensor of shape (K + 1,) for K timesteps, ending with 0.
    """
    if len(timesteps) == 0:
        raise ValueError("timesteps must not be empty")
    t = torch.tensor([float(v) for v in timesteps], dtype=torch.float64)
    if (t <= 0).any() or (t > num_train_timesteps).any():
        raise ValueError(f"timesteps must lie in (0, {num_train_timesteps}], got {list(timesteps)}")
    if len(t) > 1 and not (t[1:] < t[:-1]).all():
        raise ValueError(f"timesteps must be strictly decreasing, got {list(timesteps)}")
    sigmas = shift_sigma(timestep_to_sigma(t, num_train_timesteps), shift)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(dtype)


def sample_training_sigmas(
    shape: int | Sequence[int],
    generator: torch.Generator | None = None,
    *,
    method: Literal["uniform", "logit_normal"] = "logit_normal",
    shift: float = 1.0,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    sigma_min: float = 0.0,
    sigma_max: float = 1.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw training noise levels.

    ``uniform`` draws u ~ U(0, 1); ``logit_normal`` draws u = sigmoid(n), n ~ N(logit_mean,
    logit_std^2) (SD3's choice, concentrating on mid noise levels). u is then mapped to
    [sigma_min, sigma_max] and shifted by :func:`shift_sigma`. Pass shape ``(B,)`` for one level
    per clip or ``(B, F)`` for independent per-frame levels (diffusion forcing).

    Args:
        shape: output shape.
        generator: random source; draws happen on the generator's device and the result is
            moved to ``device``, so a seeded generator gives the same values on any device.
        method: ``"uniform"`` or ``"logit_normal"``.
        shift: timestep shift applied after drawing.
        logit_mean: mean of the normal before the sigmoid (logit_normal only).
        logit_std: standard deviation of that normal (logit_normal only), > 0.
        sigma_min: lower end before shifting, in [0, sigma_max).
        sigma_max: upper end before shifting, in (sigma_min, 1].
        device: device of the result (default: the generator's device, else CPU).
        dtype: dtype of the result.

    Returns:
        Tensor of ``shape`` with values in [shift(sigma_min), shift(sigma_max)].
    """
    if method not in TRAIN_METHODS:
        raise ValueError(f"method must be one of {TRAIN_METHODS}, got {method!r}")
    if not 0 <= sigma_min < sigma_max <= 1:
        raise ValueError(
            "need 0 <= sigma_min < sigma_max <= 1, "
            f"got sigma_min={sigma_min}, sigma_max={sigma_max}"
        )
    if not logit_std > 0:
        raise ValueError(f"logit_std must be > 0, got {logit_std}")
    _check_shift(shift)
    size = (shape,) if isinstance(shape, int) else tuple(shape)
    draw_device = generator.device if generator is not None else torch.device("cpu")
    if method == "uniform":
        u = torch.rand(size, generator=generator, device=draw_device, dtype=torch.float64)
    else:
        n = torch.randn(size, generator=generator, device=draw_device, dtype=torch.float64)
        u = torch.sigmoid(n * logit_std + logit_mean)
    sigmas = shift_sigma(sigma_min + (sigma_max - sigma_min) * u, shift)
    return sigmas.to(device=device if device is not None else draw_device, dtype=dtype)
