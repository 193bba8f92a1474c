"""The LPM transformer as a guided velocity model for the samplers.

Legend: B batch, C latent channels, F latent frames, k clean context frames, h/w latent grid,
T audio tokens (one per video frame), D feature width.

Conditions follow `lpm.diffusion.guidance`: a mapping of condition name to a dict of batch-first
tensors with an optional (B,) ``drop`` mask. LPM uses two nested levels, ``text`` then ``audio``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from lpm.diffusion.guidance import Conditions, GuidanceLevel, GuidedModel
from lpm.models.dit.model import LPMTransformer, References, TextCues


@dataclass
class SegmentConditions:
    """Everything but the noisy latents that one denoising run sees."""

    text: torch.Tensor
    """(1, Lt, text_dim) prompt features."""
    text_mask: torch.Tensor
    """(1, Lt) bool."""
    speak_audio: torch.Tensor
    """(1, T, audio_dim) features of the character's own speech."""
    listen_audio: torch.Tensor
    """(1, T, audio_dim) features of the partner's speech."""
    audio_offset: int
    """Video frame of audio token 0, counted from the segment's first frame."""
    references: References | None
    """Clean reference latents (first frame and identity references), or None."""
    context: torch.Tensor | None = None
    """(1, C, k, h, w) latents continuing the previous segment, or None."""
    context_sigma: float = 0.0
    """Noise level of ``context`` (already noised to it); 0: clean."""
    cues: TextCues | None = None
    """Timed text cues, one index per latent frame of the segment (context included), or None."""


def guided_velocity(
    model: LPMTransformer,
    cond: SegmentConditions,
    *,
    text_scale: float,
    audio_scale: float,
    cue_scale: float = 0.0,
    cue_min_sigma: float = 0.0,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``(x, sigma) -> v`` callable with nested text/audio guidance and clean context frames.

    Timed cues are guided at ``cue_scale`` on noise levels σ ≥ ``cue_min_sigma`` and followed
    unguided (scale 1) below it.

    Context frames are held at their given values with timestep ``context_sigma`` (0: clean)
    and get zero velocity, so any sampler leaves them as they are.
    """
    conditions = text_audio_conditions(
        cond.text, cond.text_mask, cond.speak_audio, cond.listen_audio, cond.cues,
        cue_level=cue_scale > 0,
    )  # fmt: skip

    def velocity(x: torch.Tensor, sigma: torch.Tensor, conds: Conditions) -> torch.Tensor:
        b, f = x.shape[0], x.shape[2]
        cues = cues_of(conds)
        k = 0 if cond.context is None else cond.context.shape[2]
        timestep = (1000.0 * sigma.reshape(b, 1)).expand(b, f).clone()
        if k:
            x = torch.cat((cond.context.expand(b, -1, -1, -1, -1).to(x), x[:, :, k:]), dim=2)
            timestep[:, :k] = 1000.0 * cond.context_sigma
        refs = cond.references
        if refs is not None:
            refs = References(refs.latents.expand(b, -1, -1, -1, -1), refs.kinds)
        v = model(
            x,
            timestep,
            text=conds["text"]["features"],
            text_mask=conds["text"]["mask"],
            speak_audio=conds["audio"]["speak"],
            listen_audio=conds["audio"]["listen"],
            audio_offset=cond.audio_offset,
            references=refs,
            drop_text=conds["text"].get("drop"),
            drop_audio=conds["audio"].get("drop"),
            cues=cues,
        )
        if k:
            v = torch.cat((torch.zeros_like(v[:, :, :k]), v[:, :, k:]), dim=2)
        return v

    guided = GuidedModel(
        velocity, conditions, guidance_levels(conditions, text_scale, audio_scale, cue_scale)
    )
    return cue_interval(guided, cue_min_sigma)


def cue_interval(
    guided: GuidedModel, cue_min_sigma: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``guided`` with its cue guidance limited to noise levels σ ≥ ``cue_min_sigma``: below,
    the cue level has scale 1 (followed, not amplified). Per sample when σ is (B,)."""
    if not 0.0 <= cue_min_sigma <= 1.0:
        raise ValueError(f"cue_min_sigma must be in [0, 1], got {cue_min_sigma}")
    names = [level.name for level in guided.levels]
    if cue_min_sigma <= 0 or "cue" not in names:
        return guided
    levels = [replace(lv, scale=1.0) if lv.name == "cue" else lv for lv in guided.levels]
    fine = GuidedModel(guided.model, guided.conditions, levels, batch_passes=guided.batch_passes)

    def model(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        coarse = sigma.reshape(sigma.shape[0], -1)[:, 0] >= cue_min_sigma  # (B,)
        if bool(coarse.all()):
            return guided(x, sigma)
        if not bool(coarse.any()):
            return fine(x, sigma)
        where = coarse.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(where, guided(x, sigma), fine(x, sigma))

    return model


def text_audio_conditions(
    text: torch.Tensor,
    text_mask: torch.Tensor,
    speak_audio: torch.Tensor,
    listen_audio: torch.Tensor,
    cues: TextCues | None,
    *,
    cue_level: bool,
) -> Conditions:
    """The guidance conditions ``text`` and ``audio``; timed cues ride with the text (dropping
    the text drops its cues) or, with ``cue_level``, form their own condition ``cue``."""
    conditions: Conditions = {
        "text": {"features": text, "mask": text_mask},
        "audio": {"speak": speak_audio, "listen": listen_audio},
    }
    if cues is not None:
        cue = {"cue_features": cues.features, "cue_mask": cues.mask, "cue_index": cues.index}
        if cue_level:
            conditions["cue"] = cue
        else:
            conditions["text"].update(cue)
    return conditions


def guidance_levels(
    conditions: Conditions, text_scale: float, audio_scale: float, cue_scale: float = 0.0
) -> tuple[GuidanceLevel, ...]:
    """Nested levels text, then cue (when ``conditions`` has its own ``cue``), then audio.

    Cue guidance acts only on the frames a cue covers: there the cue level has ``cue_scale``,
    on frames without a cue (index -1) scale 1, so amplifying an action leaves the frames
    around it (a listening mouth, say) as the unguided cue model has them."""
    cue = []
    if "cue" in conditions:
        cued = conditions["cue"]["cue_index"] >= 0  # (B, F)
        scale = torch.where(cued, cue_scale, 1.0)[:, None, :, None, None]
        cue = [GuidanceLevel(name="cue", keys=("cue",), scale=scale)]
    return (
        GuidanceLevel(name="text", keys=("text",), scale=text_scale),
        *cue,
        GuidanceLevel(name="audio", keys=("audio",), scale=audio_scale),
    )


def cues_of(conds: Conditions) -> TextCues | None:
    """The timed cues a guidance pass sees: from ``cue`` (its own level) or ``text``; frames of
    a pass that drops the cue level follow no cue (index -1)."""
    t = conds.get("cue", conds["text"])
    if "cue_index" not in t:
        return None
    index = t["cue_index"]
    if "cue" in conds and conds["cue"].get("drop") is not None:
        index = torch.where(conds["cue"]["drop"][:, None], -1, index)
    return TextCues(t["cue_features"], t["cue_mask"], index)
