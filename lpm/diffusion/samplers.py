"""Flow-matching samplers: Euler, UniPC multistep (predictor + corrector) and the few-step
re-noising sampler of distilled students.

Shape legend: x is any batch-first latent, usually (B, C, F, H, W). ``sigmas`` is a decreasing
schedule of N + 1 noise levels (see :mod:`lpm.diffusion.schedules`); the sampler makes N model
calls, the i-th at ``sigmas[i]``, and returns the sample at ``sigmas[N]`` (0 for a full run).

``model_fn(x, sigma_b) -> v`` takes the current sample and a (B,) tensor of noise levels in
[0, 1] (the network multiplies by 1000 itself) and returns the velocity ``eps - x0``, same shape
as x. Samplers are deterministic given their inputs (the few-step sampler given its generator)
and do not manage autograd: wrap calls in ``torch.no_grad()`` for inference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch

from lpm.diffusion.flow import renoise

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# callback(step, num_steps, x_next, x0_pred): called after every step with the sample at
# sigmas[step + 1] and the clean prediction made at sigmas[step].
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]

SOLVERS = ("euler", "unipc")
# log-SNR is infinite at sigma = 1; UniPC starts a hair below, as the reference implementations do.
UNIPC_SIGMA_CEIL = 1.0 - 1e-6


def _sigma_list(sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    values = [float(s) for s in (sigmas.tolist() if torch.is_tensor(sigmas) else sigmas)]
    if len(values) < 2:
        raise ValueError(f"sigmas needs at least 2 entries (N + 1 for N steps), got {len(values)}")
    if any(not 0.0 <= s <= 1.0 for s in values):
        raise ValueError(f"sigmas must lie in [0, 1], got {values}")
    if any(b >= a for a, b in zip(values[:-1], values[1:], strict=True)):
        raise ValueError(f"sigmas must be strictly decreasing, got {values}")
    return values


def _velocity(model_fn: ModelFn, x: torch.Tensor, sigma: float) -> torch.Tensor:
    sigma_b = torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
    v = model_fn(x, sigma_b)
    if v.shape != x.shape:
        raise ValueError(f"model_fn returned shape {tuple(v.shape)}, expected {tuple(x.shape)}")
    return v


def euler_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Integrate the flow ODE ``dx/dsigma = v`` with explicit Euler steps.

    Args:
        model_fn: velocity model, see the module docstring.
        x: sample at ``sigmas[0]`` (pure noise when sigmas[0] == 1), shape (B, ...).
        sigmas: N + 1 strictly decreasing noise levels.
        callback: optional progress hook.

    Returns:
        The sample at ``sigmas[-1]``, same shape as ``x``.
    """
    levels = _sigma_list(sigmas)
    num_steps = len(levels) - 1
    for i in range(num_steps):
        sigma, sigma_next = levels[i], levels[i + 1]
        v = _velocity(model_fn, x, sigma)
        x0 = x - sigma * v
        x = x + (sigma_next - sigma) * v
        if callback is not None:
            callback(i, num_steps, x, x0)
    return x


def _log_snr(sigma: float) -> float:
    """lambda = log(alpha / sigma) with alpha = 1 - sigma, for sigma in (0, 1)."""
    return math.log1p(-sigma) - math.log(sigma)


def _phi_coefficients(hh: float, order: int, variant: str) -> tuple[float, float, list[float]]:
    """UniPC's exponential-integrator terms for step ``hh = -h`` (data prediction).

    Returns ``(h*phi_1, B(h), b)`` where ``b[k-1] = k! * h*phi_{k+1} / B(h)`` for k = 1..order:
    the right-hand side of the order conditions ``sum_j rho_j r_j^(k-1) = b_k``.
    """
    h_phi_1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else h_phi_1
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1.0
    b = []
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return h_phi_1, b_h, b


def _solve(rks: list[float], b: list[float]) -> list[float]:
    """Solve the Vandermonde order conditions ``sum_j rho_j * rks[j]**i = b[i]``."""
    mat = torch.tensor([[r**i for r in rks] for i in range(len(rks))], dtype=torch.float64)
    return torch.linalg.solve(mat, torch.tensor(b, dtype=torch.float64)).tolist()


def _unipc_update(
    x_s: torch.Tensor,
    sigma_s: float,
    sigma_t: float,
    history: list[tuple[float, torch.Tensor]],
    variant: str,
    x0_t: torch.Tensor | None = None,
) -> torch.Tensor:
    """One UniP step from level s to level t, or the UniC correction of that step.

    ``history`` holds (log-SNR, x0 prediction) pairs, newest last; its newest entry is at s and
    the order of the update is ``len(history)``. With ``x0_t`` (the model's x0 prediction at the
    predicted sample at t) the corrector UniC of that order is applied instead, which raises the
    order of accuracy by one at no extra model call.
    """
    lam_s, x0_s = history[-1]
    lam_t = _log_snr(sigma_t)
    h = lam_t - lam_s
    older = history[-2::-1]  # newest first
    rks = [(lam_j - lam_s) / h for lam_j, _ in older]
    diffs = [(x0_j - x0_s) / r for r, (_, x0_j) in zip(rks, older, strict=True)]
    order = len(history)
    h_phi_1, b_h, b = _phi_coefficients(-h, order, variant)
    if x0_t is None:
        # order 2 uses rho = 1/2 rather than solving, matching the reference UniPC predictor
        rhos = [] if order == 1 else [0.5] if order == 2 else _solve(rks, b[:-1])
    else:
        rks.append(1.0)
        diffs.append(x0_t - x0_s)
        rhos = [0.5] if order == 1 else _solve(rks, b)
    alpha_t = 1.0 - sigma_t
    # data-prediction exponential integrator: the first two terms are the DDIM / Euler step
    x_t = (sigma_t / sigma_s) * x_s - (alpha_t * h_phi_1) * x0_s
    for rho, d in zip(rhos, diffs, strict=True):
        x_t = x_t - (alpha_t * b_h * rho) * d
    return x_t


def unipc_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    order: int = 2,
    use_corrector: bool = True,
    lower_order_final: bool = True,
    variant: Literal["bh1", "bh2"] = "bh2",
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """UniPC multistep sampler (Zhao et al. 2023) in the flow-matching parameterisation.

    Works in data prediction (``x0 = x - sigma * v``) on the log-SNR ``lambda = log((1 - sigma)
    / sigma)``, as Wan2.1's FlowUniPCMultistepScheduler and diffusers' UniPCMultistepScheduler
    with ``use_flow_sigmas=True, prediction_type="flow_prediction"`` do. Each step runs the
    multistep predictor UniP of the given order (warming up from order 1), and, after the next
    model call, the corrector UniC re-does the previous step using that call's prediction. A
    step landing on sigma = 0 returns the x0 prediction (log-SNR is infinite there, so it is
    always first order). A starting sigma of 1 is lowered to ``UNIPC_SIGMA_CEIL``.

    Args:
        model_fn: velocity model, see the module docstring.
        x: sample at ``sigmas[0]``, shape (B, ...).
        sigmas: N + 1 strictly decreasing noise levels.
        order: predictor order, 1 to 3 (2 is Wan's and diffusers' default).
        use_corrector: apply UniC after every model call but the first.
        lower_order_final: cap the order by the steps left (more stable for few steps).
        variant: ``"bh2"`` (B(h) = e^h - 1, the default) or ``"bh1"`` (B(h) = h).
        callback: optional progress hook.

    Returns:
        The sample at ``sigmas[-1]``, same shape as ``x``.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    levels = [min(s, UNIPC_SIGMA_CEIL) for s in _sigma_list(sigmas)]
    num_steps = len(levels) - 1
    history: list[tuple[float, torch.Tensor]] = []
    x_prev = x
    prev_order = 0
    for i in range(num_steps):
        sigma, sigma_next = levels[i], levels[i + 1]
        x0 = x - sigma * _velocity(model_fn, x, sigma)
        if use_corrector and i > 0:
            x = _unipc_update(x_prev, levels[i - 1], sigma, history[-prev_order:], variant, x0)
        history = [*history, (_log_snr(sigma), x0)][-order:]
        step_order = min(order, i + 1)
        if lower_order_final:
            step_order = min(step_order, num_steps - i)
        x_prev = x
        if sigma_next == 0.0:
            step_order = 1
            x = x0
        else:
            x = _unipc_update(x, sigma, sigma_next, history[-step_order:], variant)
        prev_order = step_order
        if callback is not None:
            callback(i, num_steps, x, x0)
    return x


def few_step_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Few-step sampler of distilled students (DMD / CausVid / Self-Forcing style).

    At each level the model's clean prediction ``x0 = x - sigma * v`` is taken and re-noised
    with fresh noise to the next level; the last step returns the clean prediction itself when
    the schedule ends at 0. Build the levels with :func:`~lpm.diffusion.schedules.few_step_sigmas`.

    Args:
        model_fn: velocity model, see the module docstring.
        x: sample at ``sigmas[0]``, shape (B, ...).
        sigmas: K + 1 strictly decreasing noise levels (K model calls).
        generator: random source for the re-noising.
        callback: optional progress hook.

    Returns:
        The sample at ``sigmas[-1]``, same shape as ``x``.
    """
    levels = _sigma_list(sigmas)
    num_steps = len(levels) - 1
    for i in range(num_steps):
        sigma, sigma_next = levels[i], levels[i + 1]
        x0 = x - sigma * _velocity(model_fn, x, sigma)
        x = x0 if sigma_next == 0.0 else renoise(x0, sigma_next, generator)
        if callback is not None:
            callback(i, num_steps, x, x0)
    return x


def sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    solver: Literal["euler", "unipc"] = "unipc",
    order: int = 2,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the named ODE solver (``"euler"`` or ``"unipc"``) over ``sigmas``; see those."""
    if solver == "euler":
        return euler_sample(model_fn, x, sigmas, callback=callback)
    if solver == "unipc":
        return unipc_sample(model_fn, x, sigmas, order=order, callback=callback)
    raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
