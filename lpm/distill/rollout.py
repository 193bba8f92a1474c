"""Chunk-by-chunk student forwards: teacher-forced (stages 1-2) and on-policy rollouts (3-4).

Legend: B batch, C latent channels, Fc latent frames per chunk, F = chunks * Fc, h/w grid.

`rollout` is the streaming loop of `lpm.inference.streaming.StreamingSession.step` without the
decoder, side by side:

    StreamingSession.step                       rollout
    cond = self.conditions(index)               cond = conditions[index]
    x0 = stepper.backbone_step(cond, ...)       x0 = stepper.backbone_step(cond, ...)
    x0 = stepper.refine_step(cond, x0)          refined = stepper.refine_step(cond, x0)
    frames = self.decode(x0)                    (kept as latents for the losses)

Both drive the same `ChunkStepper`, so for the same inputs and seed a rollout produces exactly
the chunks a live stream does (tests/distill/test_rollout.py). Training only chooses which
backbone denoising steps record gradients (``backbone_grad_steps``).

`teacher_forced` is the off-policy counterpart: the history cache is built from the teacher's
clip (re-noised to ``history_sigma``, as the stream's backbone cache would hold it) and the
student denoises each chunk from a given input in one step.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

from lpm.inference.chunk_step import ChunkConditions, ChunkStepper, OnlineSchedule
from lpm.models.dit.model import LPMTransformer, References
from lpm.parallel.parallelize import unsharded


@dataclass
class Rollout:
    """Chunks of one rollout, each (B, C, Fc, h, w)."""

    backbone: list[torch.Tensor]
    """The backbone's clean chunks."""
    refined: list[torch.Tensor]
    """The refiner's output per chunk (the backbone's chunks when there is no refiner)."""

    def video(self, which: str = "refined") -> torch.Tensor:
        """(B, C, F, h, w): the chunks of ``backbone`` or ``refined`` concatenated in time."""
        return torch.cat(getattr(self, which), dim=2)


def rollout(
    backbone: LPMTransformer,
    refiner: LPMTransformer | None,
    references: References | None,
    schedule: OnlineSchedule,
    conditions: Sequence[ChunkConditions],
    shape: tuple[int, ...],
    device: torch.device,
    *,
    seed: int,
    backbone_grad_steps: Collection[int] | None = None,
) -> Rollout:
    """Generate ``len(conditions)`` chunks of ``shape`` (B, C, Fc, h, w) autoregressively.

    Gradients follow the ambient grad mode, restricted for the backbone to the denoising steps in
    ``backbone_grad_steps`` (None = all). Histories are written detached, as in streaming.
    """
    stepper = ChunkStepper(
        backbone, refiner, references, schedule, seed, backbone_grad_steps=backbone_grad_steps
    )
    out = Rollout(backbone=[], refined=[])
    for cond in conditions:
        x0 = stepper.backbone_step(cond, shape, device)
        refined = stepper.refine_step(cond, x0)
        out.backbone.append(x0)
        out.refined.append(refined)
    return out


def teacher_forced(
    model: LPMTransformer,
    references: References | None,
    conditions: Sequence[ChunkConditions],
    inputs: Sequence[torch.Tensor],
    sigmas: Sequence[float],
    history: Sequence[torch.Tensor],
    *,
    history_sigma: float,
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """One-step clean predictions of every chunk given the teacher's history.

    Args:
        model: a chunk-causal student.
        references: cached once, as a stream does.
        conditions: per chunk.
        inputs: per chunk (B, C, Fc, h, w) noisy latents at level ``sigmas[c]``.
        sigmas: per chunk noise level of ``inputs[c]``.
        history: per chunk (B, C, Fc, h, w) clean teacher latents; chunk c sees chunks < c of
            it through a cache of kind ``noisy`` (``history_sigma`` > 0) or ``clean``.
        history_sigma: noise level of the history cache (the backbone's) or 0 (the refiner's).
        generator: draws the history's re-noising.

    Returns:
        Per chunk (B, C, Fc, h, w) predictions ``x - sigma v`` (with gradients if enabled).
    """
    kind = "noisy" if history_sigma > 0 else "clean"
    cache = model.new_cache(history=kind, history_sigma=history_sigma)
    if references is not None:
        with unsharded(model):
            model.cache_references(references, cache)
    preds = []
    for c, (cond, x, sigma) in enumerate(zip(conditions, inputs, sigmas, strict=True)):
        t = torch.full((x.shape[0],), 1000.0 * sigma, device=x.device)
        v = model(x, t, attention="chunk_causal", kv_cache=cache, **cond.kwargs())
        preds.append(x - sigma * v)
        if c + 1 < len(conditions):
            model.write_history(history[c], cache, generator=generator, **cond.kwargs())
    return preds
