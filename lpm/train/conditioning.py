"""Turn a `TrainBatch` into one flow-matching training problem for a curriculum stage.

Legend: B batch, C latent channels, F latent frames, h, w latent grid, R references.

Randomness is drawn from generators seeded by (seed, step) for choices shared by the batch
(which reference kinds are present: `References` kinds are per batch) and by (seed, step,
dataset index) for per-sample choices (noise level, noise, condition dropout, context length).
Nothing depends on the rank, the local batch size or global RNG state, so 1 process and N
processes with the same global batch, and a resumed run, draw exactly the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lpm.config import REFERENCE_TYPES
from lpm.diffusion import add_noise, sample_training_sigmas, sigma_to_timestep
from lpm.models.dit.model import References
from lpm.train.batch import TrainBatch, mix_seed
from lpm.train.recipes import StageRecipe, TrainRecipe


@dataclass(kw_only=True)
class FlowProblem:
    """Inputs and targets of one training forward."""

    x0: torch.Tensor
    """(B, C, F, h, w) clean latents."""
    noise: torch.Tensor
    """(B, C, F, h, w) standard normal noise."""
    sigma: torch.Tensor
    """(B, F) noise level per frame (0 on clean context frames)."""
    x_t: torch.Tensor
    """(B, C, F, h, w) noisy model input."""
    loss_mask: torch.Tensor
    """(B, F) bool: frames that carry a denoising target."""
    model_kwargs: dict[str, Any]
    """Keyword arguments for `LPMTransformer.forward` besides x and timestep."""
    loss_weight: torch.Tensor | None = None
    """(B, 1, F, h, w) per-position loss weight (`motion_weights`), or None."""

    @property
    def timestep(self) -> torch.Tensor:
        """(B, F) network timesteps in [0, 1000]."""
        return sigma_to_timestep(self.sigma)


def choose_reference_kinds(
    stage: StageRecipe, available: tuple[tuple[str, int], ...], g: torch.Generator
) -> list[tuple[str, int]]:
    """The identity references used this step: global with ``global_reference_prob``; then, with
    ``extra_reference_prob``, a random non-empty subset of body views and of expressions."""
    chosen: list[tuple[str, int]] = []
    u_global, u_extra = torch.rand(2, generator=g, dtype=torch.float64).tolist()
    if ("global", 0) not in available or u_global >= stage.global_reference_prob:
        return chosen
    chosen.append(("global", 0))
    if u_extra >= stage.extra_reference_prob:
        return chosen
    for kind in ("body", "expression"):
        subs = [k for k in available if k[0] == kind]
        if subs:
            n = int(torch.randint(1, len(subs) + 1, (1,), generator=g))
            pick = torch.randperm(len(subs), generator=g)[:n].sort().values.tolist()
            chosen.extend(subs[i] for i in pick)
    return chosen


def _references(batch: TrainBatch, stage: StageRecipe, g: torch.Generator) -> References | None:
    kinds: list[tuple[str, int]] = []
    latents: list[torch.Tensor] = []
    if stage.first_frame_reference:
        kinds.append(("first_frame", 0))
        latents.append(batch.latents[:, :, :1])
    for kind in choose_reference_kinds(stage, batch.reference_kinds, g):
        r = batch.reference_kinds.index(kind)
        kinds.append(kind)
        latents.append(batch.references[:, :, r : r + 1])
    if not kinds:
        return None
    assert all(k in REFERENCE_TYPES for k, _ in kinds)
    return References(latents=torch.cat(latents, dim=2), kinds=tuple(kinds))


def _per_sample(recipe: TrainRecipe, stage: StageRecipe, step: int, index: int, shape, frames: int):
    """Noise level, noise, dropout flags and context length of one sample."""
    g = torch.Generator().manual_seed(mix_seed(recipe.seed, step, index, 3))
    sigma = sample_training_sigmas(
        (1,), g, method=recipe.timestep_sampling, shift=recipe.shift, dtype=torch.float32
    )
    noise = torch.randn(shape, generator=g)
    u_text, u_audio, u_ctx = torch.rand(3, generator=g, dtype=torch.float64).tolist()
    lo, hi = stage.context_frames
    n_ctx = int(torch.randint(lo, hi + 1, (1,), generator=g)) if hi > 0 else 0
    if u_ctx < stage.context_drop_prob:
        n_ctx = 0
    return (
        sigma,
        noise,
        u_text < recipe.text_drop_prob,
        u_audio < recipe.audio_drop_prob,
        min(n_ctx, frames - 1),
    )


def _context_sigmas(recipe: TrainRecipe, stage: StageRecipe, step: int, indices) -> torch.Tensor:
    """(B,) noise level of each sample's context frames: U(0, ``context_noise``), or 0. Drawn
    from a stream of its own, so a stage without context noise draws exactly what it always
    drew."""
    if stage.context_noise <= 0:
        return torch.zeros(len(indices))
    draws = []
    for i in indices:
        g = torch.Generator().manual_seed(mix_seed(recipe.seed, step, int(i), 6))
        draws.append(float(torch.rand((), generator=g, dtype=torch.float64)) * stage.context_noise)
    return torch.tensor(draws, dtype=torch.float32)


def build_problem(
    batch: TrainBatch, recipe: TrainRecipe, stage: StageRecipe, step: int
) -> FlowProblem:
    """The noisy input, target and model conditions of ``batch`` at optimiser step ``step``."""
    x0 = batch.latents.float()
    b, _, f = x0.shape[:3]
    draws = [_per_sample(recipe, stage, step, int(i), x0.shape[1:], f) for i in batch.indices]
    sigma_b = torch.cat([d[0] for d in draws])
    noise = torch.stack([d[1] for d in draws]).to(x0.device)
    drop_text = torch.tensor([d[2] for d in draws], dtype=torch.bool)
    drop_audio = torch.tensor([d[3] for d in draws], dtype=torch.bool)
    n_ctx = torch.tensor([d[4] for d in draws])
    context = torch.arange(f)[None, :] < n_ctx[:, None]  # (B, F)
    ctx_sigma = _context_sigmas(recipe, stage, step, batch.indices)
    sigma = torch.where(context, ctx_sigma[:, None], sigma_b[:, None].expand(b, f)).to(x0.device)
    g_step = torch.Generator().manual_seed(mix_seed(recipe.seed, step, 5))
    kwargs: dict[str, Any] = {
        "text": batch.text.float(),
        "text_mask": batch.text_mask,
        "speak_audio": batch.speak_audio.float(),
        "listen_audio": batch.listen_audio.float() if stage.listen_audio else None,
        "references": _references(batch, stage, g_step),
        "drop_text": drop_text.to(x0.device),
        "drop_audio": drop_audio.to(x0.device),
    }
    if batch.cues is not None:  # timed cues follow the text's dropout (read by text_cues models)
        kwargs["cues"] = batch.cues
    batch.flags.update(drop_text=drop_text, drop_audio=drop_audio, context_frames=n_ctx)
    weight = motion_weights(x0, recipe.motion_weight) if recipe.motion_weight > 0 else None
    if recipe.cue_weight > 0 and batch.cues is not None:
        cued = (batch.cues.index >= 0).to(x0)[:, None, :, None, None]  # (B, 1, F, 1, 1)
        extra = 1.0 + recipe.cue_weight * cued
        weight = extra if weight is None else weight * extra
        weight = weight / weight.mean(dim=(2, 3, 4), keepdim=True)
    return FlowProblem(
        x0=x0, noise=noise, sigma=sigma, x_t=add_noise(x0, noise, sigma),
        loss_mask=~context.to(x0.device), model_kwargs=kwargs, loss_weight=weight,
    )  # fmt: skip


def motion_weights(x0: torch.Tensor, strength: float) -> torch.Tensor:
    """(B, 1, F, h, w) loss weights that favour latent positions which change over the clip.

    The mouth of a speaking face is a few latent positions whose values move with the audio,
    while background, clothes and hair hardly change; an unweighted loss spends nearly all of
    its gradient on the static majority. The weight grows with each position's deviation from
    its clip mean (averaged over channels, normalised to mean 1 per sample) and the whole map is
    normalised to mean 1, so the overall loss scale is unchanged. ``strength`` 0 is uniform.
    """
    dev = (x0 - x0.mean(dim=2, keepdim=True)).abs().mean(dim=1, keepdim=True)
    dev = dev / dev.mean(dim=(2, 3, 4), keepdim=True).clamp_min(1e-3)
    weight = 1.0 + strength * dev.clamp(max=4.0)
    return weight / weight.mean(dim=(2, 3, 4), keepdim=True)
