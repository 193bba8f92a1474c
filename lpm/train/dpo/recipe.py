"""Typed DPO post-training recipes (DESIGN §2 e), the registry and ``--set`` overrides.

A DPO recipe holds where the candidates are, which model the policy and the frozen reference
start from, how pairs are selected (dimensions, tie tolerance, margin), the loss (``beta``, the
flow-matching regulariser's weight) and the optimiser and run settings shared with `lpm train`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any

from lpm.train.dpo.pareto import DIMENSIONS
from lpm.train.recipes import MixedPrecision, TimestepSampling, override_fields


@dataclass(kw_only=True, frozen=True)
class DPORecipe:
    """Everything a DPO run needs besides where it writes."""

    name: str
    """Registry name."""
    candidates: str = ""
    """Directory written by ``lpm dpo candidates`` (conditions, candidate latents, scores)."""
    init: str = ""
    """Model the policy and the frozen reference start from: a bundle, an LPM checkpoint or a
    training run directory. Empty: the bundle that generated the candidates."""
    dimensions: tuple[str, ...] = ("lip_sync", "stillness", "identity", "text")
    """Scores compared for Pareto preference (`lpm.train.dpo.pareto.DIMENSIONS`)."""
    tie_tolerance: float = 0.01
    """A winner may trail the loser by at most this much on any dimension (score noise)."""
    margin: float = 0.05
    """A winner must lead the loser by more than this on at least one dimension."""
    max_pairs_per_condition: int = 0
    """Keep at most this many pairs per condition (largest summed lead first); 0 keeps all."""
    beta: float = 500.0
    """Diffusion-DPO temperature: the logit is ``-beta / 2`` times the policy's error gain on the
    winner over the loser, relative to the reference."""
    fm_weight: float = 1.0
    """lambda: weight of the flow-matching regulariser (the policy's loss on the winner)."""
    batch_size: int = 4
    """Global batch in pairs (each pair is two samples for the policy and the reference)."""
    lr: float = 1e-5
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (0: decay would pull the policy away from the reference)."""
    warmup_steps: int = 10
    """Linear warm-up steps; then cosine decay to ``min_lr_ratio * lr``."""
    min_lr_ratio: float = 1.0
    """Final learning rate as a fraction of ``lr`` (1 = constant after warm-up)."""
    steps: int = 100
    """Optimiser steps."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    ema_decay: float = 0.0
    """EMA of the policy; 0 disables it."""
    timestep_sampling: TimestepSampling = "logit_normal"
    """How noise levels are drawn (as in Base training)."""
    shift: float = 3.0
    """Wan timestep shift applied to the drawn noise levels."""
    text_drop_prob: float = 0.0
    """Per-pair probability of dropping the text condition (the same for winner and loser)."""
    audio_drop_prob: float = 0.0
    """Per-pair probability of dropping both audio streams."""
    seed: int = 0
    """Seed of the pair order and every per-pair draw (noise level, noise, dropout)."""
    checkpoint_every: int = 50
    """Steps between checkpoints (a final one is always written); 0 = only the final one."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept on disk; 0 keeps all."""
    log_every: int = 5
    """Steps between metric records and progress-bar updates."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms(True)``."""
    mixed_precision: MixedPrecision = "bf16"
    """``bf16`` autocast / FSDP compute on CUDA; CPU always runs fp32."""
    activation_checkpointing: bool = False
    """Recompute the policy's block activations in backward."""
    compile: bool = False
    """``torch.compile`` each block of the policy."""

    def __post_init__(self) -> None:
        if not self.dimensions:
            raise ValueError("dimensions must name at least one score")
        unknown = [d for d in self.dimensions if d not in DIMENSIONS]
        if unknown:
            raise ValueError(f"dimensions has unknown {unknown}; known: {sorted(DIMENSIONS)}")
        if len(set(self.dimensions)) != len(self.dimensions):
            raise ValueError(f"dimensions={self.dimensions} has duplicates")
        if self.tie_tolerance < 0:
            raise ValueError(f"tie_tolerance={self.tie_tolerance} must be >= 0")
        if self.margin < self.tie_tolerance:
            # Otherwise two candidates could each be preferred to the other.
            raise ValueError(f"margin={self.margin} must be >= tie_tolerance={self.tie_tolerance}")
        for name in ("beta", "lr", "shift"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("fm_weight", "weight_decay", "grad_clip", "warmup_steps", "checkpoint_every",
                     "keep_checkpoints", "max_pairs_per_condition"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("batch_size", "steps", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas} must be two values in [0, 1)")
        for name in ("min_lr_ratio", "text_drop_prob", "audio_drop_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1)")
        for name, options in (("timestep_sampling", TimestepSampling),
                              ("mixed_precision", MixedPrecision)):  # fmt: skip
            if getattr(self, name) not in typing.get_args(options):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} must be one of {typing.get_args(options)}"
                )

    @property
    def total_steps(self) -> int:
        """Optimiser steps this run makes."""
        return self.steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DPORecipe:
        """Inverse of `to_dict` (lists become tuples); unknown fields raise ValueError."""
        hints = typing.get_type_hints(cls)
        unknown = set(data) - set(hints)
        if unknown:
            raise ValueError(f"unknown DPORecipe fields {sorted(unknown)}")
        is_tuple = lambda k: typing.get_origin(hints[k]) is tuple  # noqa: E731
        return cls(**{k: tuple(v) if is_tuple(k) and isinstance(v, list) else v
                      for k, v in data.items()})  # fmt: skip


def apply_overrides(recipe: DPORecipe, assignments: list[str]) -> DPORecipe:
    """Apply ``key=value`` overrides of recipe fields; unknown keys and bad values raise
    ValueError naming the key."""
    return override_fields(recipe, assignments, exclude=("name",))


RECIPES: dict[str, DPORecipe] = {
    r.name: r
    for r in (
        # fm_weight 100 (about beta / 5, the scale of the DPO term's gradient on e_w at the
        # start): at 1 the policy's error on winners grew by 20% within 100 steps (docs)
        DPORecipe(name="nano-dpo", fm_weight=100.0, log_every=1),
        DPORecipe(
            name="test-tiny-dpo",
            batch_size=2,
            lr=1e-3,
            beta=50.0,
            warmup_steps=1,
            steps=6,
            checkpoint_every=2,
            log_every=1,
            ema_decay=0.9,
            deterministic=True,
        ),  # fmt: skip
    )
}


def get_recipe(name: str) -> DPORecipe:
    """The named recipe; ValueError listing the known names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown DPO recipe {name!r}; choose one of {sorted(RECIPES)}") from None
