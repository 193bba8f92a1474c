"""Distribution matching distillation: the generator's DMD loss and the fake-score critic.

Legend: B batch, C latent channels, F latent frames, h/w latent grid; sigma (B,) noise levels.

The generator's samples x0 are noised to a random level, x_t = (1 - sigma) x0 + sigma eps, and
the clean predictions of two scores are compared there: the frozen *real* score (the guided
Base LPM teacher) and the trainable *fake* score (the critic, tracking the generator's own
distribution). The KL gradient between the two distributions w.r.t. x0 points along
``x0_fake - x0_real``; as in DMD it is normalised per sample by ``mean |x0 - x0_real|`` and
applied through the surrogate ``0.5 * ||x0 - stopgrad(x0 - g)||^2``, whose gradient is g (up to
the mean's 1 / numel). When the critic equals the teacher, g and so the gradient are exactly 0.

The critic learns the generator's distribution by plain flow matching on *detached* generator
samples, ``critic_updates`` times per generator update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lpm.diffusion import add_noise, flow_matching_loss, sample_training_sigmas, x0_from_velocity
from lpm.parallel import full_tensor

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(kw_only=True)
class NoiseDraw:
    """A noise level per sample and the noise, drawn from one seeded generator."""

    sigma: torch.Tensor
    """(B,) in [shift(lo), shift(hi)]."""
    noise: torch.Tensor
    """(B, C, F, h, w) standard normal."""


def draw_noise(
    x0: torch.Tensor,
    generator: torch.Generator,
    *,
    sigma_range: tuple[float, float],
    shift: float,
    method: str = "uniform",
) -> NoiseDraw:
    """Levels (uniform in ``sigma_range`` before Wan's ``shift``) and noise for x0 (B, ...)."""
    sigma = sample_training_sigmas(
        (x0.shape[0],), generator, method=method, shift=shift,
        sigma_min=sigma_range[0], sigma_max=sigma_range[1],
    )  # fmt: skip
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32)
    return NoiseDraw(sigma=sigma.to(x0.device), noise=noise.to(x0.device, x0.dtype))


def dmd_loss(
    x0: torch.Tensor, real: VelocityFn, fake: VelocityFn, draw: NoiseDraw
) -> tuple[torch.Tensor, dict[str, float]]:
    """The DMD surrogate loss of generator samples x0 (B, C, F, h, w), and diagnostics.

    ``real`` and ``fake`` map (x_t, sigma (B,)) to velocities; they run without gradients.
    """
    with torch.no_grad():
        x0_d = x0.detach()
        x_t = add_noise(x0_d, draw.noise, draw.sigma)
        x0_real = x0_from_velocity(x_t, real(x_t, draw.sigma), draw.sigma)
        x0_fake = x0_from_velocity(x_t, fake(x_t, draw.sigma), draw.sigma)
        dims = tuple(range(1, x0.ndim))
        scale = (x0_d - x0_real).abs().float().mean(dim=dims, keepdim=True).clamp_min(1e-6)
        grad = torch.nan_to_num((x0_fake - x0_real).float() / scale)
        target = x0_d.float() - grad
    loss = 0.5 * (x0.float() - target).square().mean()
    stats = {"dmd_grad_norm": float(grad.square().mean().sqrt())}
    return loss, stats


def critic_loss(critic: VelocityFn, x0: torch.Tensor, draw: NoiseDraw) -> torch.Tensor:
    """Flow-matching loss of the critic on detached generator samples x0 (B, C, F, h, w)."""
    x0 = x0.detach()
    x_t = add_noise(x0, draw.noise, draw.sigma)
    return flow_matching_loss(critic(x_t, draw.sigma), x0, draw.noise)


def optimizer_step(
    model: torch.nn.Module,
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    grad_clip: float,
) -> float:
    """Backward, clip the global gradient norm, step; returns the norm before clipping."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = grad_clip if grad_clip > 0 else math.inf
    norm = full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    optimizer.step()
    scheduler.step()
    return float(norm)
