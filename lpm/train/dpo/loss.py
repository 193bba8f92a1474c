"""Diffusion-DPO (Wallace et al. 2023) for flow matching, and its regulariser. Pure.

Legend: B pairs.

Diffusion-DPO turns the DPO objective into one on denoising errors. With the winner and the
loser noised by the *same* noise to the *same* level, e = ||eps - eps_theta(x_t)||^2 and the
frozen reference's e_ref, its loss is

    L = -log sigmoid(-beta/2 * ((e_w - e_w,ref) - (e_l - e_l,ref)))

(the paper writes -beta T w(lambda_t) for the scale; its reference code uses -beta/2 with
per-sample mean errors, as here). The policy lowers L by predicting the winner better than the
reference does and the loser worse. In flow matching the error is the velocity MSE
e = ||v_theta(x_t) - (noise - x0)||^2, averaged over the target frames of a sample: the loss
that trains Base LPM, so e_ref is the reference's own training loss on the sample.

The regulariser (DESIGN §2 e) adds ``fm_weight`` times the policy's flow-matching loss on the
winners, which keeps the policy a good denoiser of preferred videos while DPO moves it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(kw_only=True)
class DPOTerms:
    """The loss of one batch of pairs and its diagnostics (per pair unless scalar)."""

    loss: torch.Tensor
    """Scalar: mean DPO loss + fm_weight * mean regulariser; what is minimised."""
    dpo: torch.Tensor
    """(B,) -log sigmoid(logit)."""
    logit: torch.Tensor
    """(B,) -beta/2 * ((e_w - e_w,ref) - (e_l - e_l,ref)); > 0 where the policy prefers the
    winner more than the reference does (the implicit reward ranks the pair correctly)."""
    regulariser: torch.Tensor
    """(B,) e_w: the policy's flow-matching loss on the winner."""

    @property
    def reward_accuracy(self) -> torch.Tensor:
        """Scalar: fraction of pairs with logit > 0."""
        return (self.logit > 0).float().mean()


def diffusion_dpo_loss(
    err_w: torch.Tensor,
    err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    *,
    beta: float,
    fm_weight: float,
) -> DPOTerms:
    """Diffusion-DPO loss from per-pair errors (each (B,), fp32).

    Args:
        err_w, err_l: the policy's velocity MSE on the winners and the losers.
        ref_err_w, ref_err_l: the frozen reference's on the same inputs (no gradient needed).
        beta: DPO temperature (> 0).
        fm_weight: weight of the regulariser ``err_w`` (>= 0).
    """
    if beta <= 0:
        raise ValueError(f"beta={beta} must be > 0")
    ref_w, ref_l = ref_err_w.detach(), ref_err_l.detach()
    logit = -0.5 * beta * ((err_w - ref_w) - (err_l - ref_l))
    dpo = -F.logsigmoid(logit)
    return DPOTerms(
        loss=dpo.mean() + fm_weight * err_w.mean(), dpo=dpo, logit=logit, regulariser=err_w
    )
