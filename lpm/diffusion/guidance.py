"""Multi-condition classifier-free guidance with nested conditions and one scale per level.

Conditions are grouped into ordered levels; level k enables levels 1..k. With N levels and
scales s_1..s_N, v_k being the prediction with levels 1..k enabled (v_0 unconditional):

    v = v_0 + s_1 (v_1 - v_0) + s_2 (v_2 - v_1) + ... + s_N (v_N - v_{N-1})

For LPM the levels are text then audio (speak and listen audio together, or one level each):

    v = v_uncond + s_text (v_text - v_uncond) + s_audio (v_text_audio - v_text)

Why nested, and why text first: N conditions need N + 1 passes instead of the 2^N of a full
factorial design, and each scale multiplies a difference that isolates one condition given
everything before it. The audio direction v_text_audio - v_text is measured with the prompt
present, so s_audio amplifies what the audio adds beyond the text (lip motion, rhythm,
reactions) without re-amplifying the text. Text is the global, coarse condition (character,
scene, style) and audio the local, per-frame one, and a local direction is most meaningful once
the global content is fixed. Training drops text and audio independently, so every pass is in
distribution.

Expanding gives a linear combination ``v = sum_k c_k v_k`` with ``c_k = s_k - s_{k+1}``
(``s_0 = 1``, ``s_{N+1} = 0``); a pass whose coefficient is 0 is skipped. Scale 1 means "use the
condition without guidance", 0 means "ignore it": text scale 1 and audio scale 0 give exactly
v_text (one pass); all scales 1 give the fully conditional prediction (one pass).

The model decides what a dropped condition means. Conditions are a mapping from a condition
name to a dict of batch-first tensors, plus an optional ``"drop"`` bool mask of shape (B,); the
guidance only ORs its own drops into that mask, and conditions in no level are never touched.

A level's scale may also be a tensor that broadcasts against the prediction, e.g. one scale per
frame of shape (B, 1, F, 1, 1): guidance then varies over the output (timed cues are amplified
on the frames they cover and left at scale 1 elsewhere). A pass is skipped only where its
coefficient is 0 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

Condition = dict[str, torch.Tensor]
Conditions = dict[str, Condition]
Scale = float | torch.Tensor
ConditionalModel = Callable[[torch.Tensor, torch.Tensor, Conditions], torch.Tensor]

DROP_KEY = "drop"


@dataclass(frozen=True, kw_only=True)
class GuidanceLevel:
    """One nested guidance level."""

    name: str
    """Label for the level, e.g. ``"text"`` or ``"audio"``."""
    keys: tuple[str, ...]
    """Condition names this level enables, e.g. ``("speak_audio", "listen_audio")``."""
    scale: Scale
    """Guidance scale: 1 = no guidance, 0 = condition ignored, > 1 = amplified; a float, or a
    tensor broadcasting against the prediction for a scale that varies over it."""

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError(f"GuidanceLevel {self.name!r}: keys must not be empty")


def guidance_coefficients(scales: Sequence[Scale]) -> tuple[Scale, ...]:
    """Coefficients ``c_0..c_N`` of the passes ``v_0..v_N`` for nested scales ``s_1..s_N``.

    ``c_k = s_k - s_{k+1}`` with ``s_0 = 1`` and ``s_{N+1} = 0``; they always sum to 1. A tensor
    scale gives tensor coefficients.
    """
    padded = [1.0, *[s if torch.is_tensor(s) else float(s) for s in scales], 0.0]
    return tuple(padded[k] - padded[k + 1] for k in range(len(padded) - 1))


def needed_passes(scales: Sequence[Scale]) -> tuple[int, ...]:
    """Indices k of the passes v_k with a coefficient that is non-zero somewhere, ascending."""
    return tuple(
        k
        for k, c in enumerate(guidance_coefficients(scales))
        if bool(torch.any(torch.as_tensor(c) != 0))
    )


def combine_guidance(preds: Mapping[int, torch.Tensor], scales: Sequence[Scale]) -> torch.Tensor:
    """Combine pass predictions ``{k: v_k}`` (at least the :func:`needed_passes`) into v."""
    passes = needed_passes(scales)
    missing = [k for k in passes if k not in preds]
    if missing:
        raise ValueError(f"preds lacks passes {missing}; scales {list(scales)} need {passes}")
    coeffs = guidance_coefficients(scales)
    out = preds[passes[0]] * coeffs[passes[0]]
    for k in passes[1:]:
        out = out + preds[k] * coeffs[k]
    return out


def text_audio_guidance(
    v_uncond: torch.Tensor | None,
    v_text: torch.Tensor | None,
    v_text_audio: torch.Tensor | None,
    text_scale: float,
    audio_scale: float,
) -> torch.Tensor:
    """``v_uncond + s_text (v_text - v_uncond) + s_audio (v_text_audio - v_text)``.

    Predictions that :func:`needed_passes` ``([text_scale, audio_scale])`` does not list may be
    None.
    """
    preds = {k: v for k, v in enumerate((v_uncond, v_text, v_text_audio)) if v is not None}
    return combine_guidance(preds, [text_scale, audio_scale])


def drop_conditions(conditions: Conditions, keys: Sequence[str], batch: int) -> Conditions:
    """Copy of ``conditions`` with ``drop`` set for every sample of the named conditions.

    Every condition in the result carries a (B,) bool ``drop`` mask (all False where absent);
    tensors are shared, not copied. Names in ``keys`` that are absent are ignored.
    """
    out: Conditions = {}
    for name, cond in conditions.items():
        new = dict(cond)
        drop = cond.get(DROP_KEY)
        if drop is None:
            device = next((t.device for t in cond.values()), torch.device("cpu"))
            drop = torch.zeros(batch, dtype=torch.bool, device=device)
        elif drop.shape != (batch,):
            raise ValueError(
                f"condition {name!r}: drop must have shape ({batch},), got {tuple(drop.shape)}"
            )
        new[DROP_KEY] = drop.bool() | (name in keys)
        out[name] = new
    return out


def _concat_conditions(per_pass: Sequence[Conditions]) -> Conditions:
    """Concatenate the passes' conditions along the batch dimension."""
    return {
        name: {key: torch.cat([c[name][key] for c in per_pass]) for key in cond}
        for name, cond in per_pass[0].items()
    }


class GuidedModel:
    """A velocity model ``(x, sigma) -> v`` applying nested classifier-free guidance.

    Wraps ``model(x, sigma, conditions) -> v`` (x (B, ...), sigma (B,) or (B, F), conditions as in
    the module docstring) so it plugs into the samplers. Only the passes with a non-zero
    coefficient run; with ``batch_passes`` they run as one forward over a batch of P * B (faster
    on accelerators, P times the activation memory), otherwise one forward per pass.

    Args:
        model: the conditional velocity model.
        conditions: conditions for the batch, each a dict of batch-first tensors.
        levels: nested guidance levels, outermost (applied first) first.
        batch_passes: run all needed passes in one forward.
    """

    def __init__(
        self,
        model: ConditionalModel,
        conditions: Conditions,
        levels: Sequence[GuidanceLevel],
        *,
        batch_passes: bool = True,
    ) -> None:
        seen: set[str] = set()
        for level in levels:
            repeated = seen.intersection(level.keys)
            if repeated:
                raise ValueError(f"levels: condition(s) {sorted(repeated)} appear in two levels")
            seen.update(level.keys)
        self.model = model
        self.conditions = conditions
        self.levels = tuple(levels)
        self.batch_passes = batch_passes
        self.scales = tuple(level.scale for level in self.levels)
        self.passes = needed_passes(self.scales)

    def pass_conditions(self, k: int, batch: int) -> Conditions:
        """Conditions of pass k: levels 1..k enabled, the deeper levels' conditions dropped."""
        dropped = [key for level in self.levels[k:] for key in level.keys]
        return drop_conditions(self.conditions, dropped, batch)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Guided velocity for x (B, ...) at noise levels sigma (B,) or (B, F)."""
        batch = x.shape[0]
        per_pass = [self.pass_conditions(k, batch) for k in self.passes]
        if self.batch_passes and len(self.passes) > 1:
            n = len(self.passes)
            v_all = self.model(
                torch.cat([x] * n), torch.cat([sigma] * n), _concat_conditions(per_pass)
            )
            preds = dict(zip(self.passes, v_all.split(batch), strict=True))
        else:
            preds = {
                k: self.model(x, sigma, conds)
                for k, conds in zip(self.passes, per_pass, strict=True)
            }
        return combine_guidance(preds, self.scales)
