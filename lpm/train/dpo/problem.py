"""A batch of pairs -> the noisy inputs of one DPO step, and the per-sample errors of a model.

Legend: B pairs, C latent channels, F latent frames, h/w latent grid.

Each pair draws one noise level (Base training's sampler and shift), one noise tensor and its
dropout flags from a generator seeded by (seed, step, pair index, purpose): winner and loser get
the *same* noise at the *same* level, so their errors differ only by their content, and the
draws do not depend on the rank, the batch composition or global RNG state (a resumed run
draws the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lpm.diffusion import add_noise, flow_matching_loss, sample_training_sigmas
from lpm.models.dit.model import LPMTransformer, References, TextCues
from lpm.train.batch import mix_seed
from lpm.train.dpo.data import PairBatch
from lpm.train.dpo.recipe import DPORecipe

TRAIN_DRAWS = 3
"""Purpose tag of the training draws (evaluation uses its own tags)."""


@dataclass(kw_only=True)
class PairInputs:
    """Model inputs of 2B samples: the B winners, then the B losers."""

    x0: torch.Tensor
    """(2B, C, F, h, w) clean latents."""
    noise: torch.Tensor
    """(2B, C, F, h, w) noise; rows b and B + b are equal."""
    x_t: torch.Tensor
    """(2B, C, F, h, w) noisy latents."""
    timestep: torch.Tensor
    """(2B,) network timesteps in [0, 1000]; rows b and B + b are equal."""
    model_kwargs: dict[str, Any]
    """`LPMTransformer.forward` keyword arguments (the pairs' conditions, twice)."""


def pair_inputs(
    batch: PairBatch, recipe: DPORecipe, step: int, device: torch.device, tag: int = TRAIN_DRAWS
) -> PairInputs:
    """The inputs of ``batch`` at ``step`` (draws seeded by (seed, step, pair index, tag))."""
    shape = batch.x0_w.shape[1:]
    sigmas, noises, drops = [], [], []
    for index in batch.indices:
        g = torch.Generator().manual_seed(mix_seed(recipe.seed, step, index, tag))
        sigmas.append(
            sample_training_sigmas(
                (1,), g, method=recipe.timestep_sampling, shift=recipe.shift, dtype=torch.float32
            )
        )
        noises.append(torch.randn(shape, generator=g))
        u_text, u_audio = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        drops.append((u_text < recipe.text_drop_prob, u_audio < recipe.audio_drop_prob))
    twice = lambda t: torch.cat([t, t]).to(device)  # noqa: E731
    sigma = twice(torch.cat(sigmas))
    noise = twice(torch.stack(noises))
    x0 = torch.cat([batch.x0_w, batch.x0_l]).float().to(device)
    kwargs = {
        "text": twice(batch.text), "text_mask": twice(batch.text_mask),
        "speak_audio": twice(batch.speak_audio), "listen_audio": twice(batch.listen_audio),
        "audio_offset": batch.audio_offset,
        "references": References(twice(batch.references.latents), batch.references.kinds),
        "drop_text": twice(torch.tensor([d[0] for d in drops])),
        "drop_audio": twice(torch.tensor([d[1] for d in drops])),
    }  # fmt: skip
    if batch.cues is not None:
        c = batch.cues
        kwargs["cues"] = TextCues(twice(c.features), twice(c.mask), twice(c.index))
    return PairInputs(
        x0=x0, noise=noise, x_t=add_noise(x0, noise, sigma), timestep=1000.0 * sigma,
        model_kwargs=kwargs,
    )  # fmt: skip


def pair_errors(
    model: LPMTransformer | torch.nn.Module, inputs: PairInputs
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) velocity MSEs of the winners and of the losers (fp32, averaged per sample)."""
    v = model(inputs.x_t, inputs.timestep, **inputs.model_kwargs)
    err = flow_matching_loss(v, inputs.x0, inputs.noise, reduction="none")
    e_w, e_l = err.chunk(2)
    return e_w, e_l
