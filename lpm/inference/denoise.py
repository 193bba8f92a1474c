"""The LPM transformer as a guided velocity model for the samplers.

Legend: B batch, C latent channels, F latent frames, k clean context frames, h/w latent grid,
T audio tokens (one per video frame), D feature width.

Conditions follow `lpm.diffusion.guidance`: a mapping of condition name to a dict of batch-first
tensors with an optional (B,) ``drop`` mask. LPM uses two nested levels, ``text`` then ``audio``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
) -> GuidedModel:
    """A ``(x, sigma) -> v`` callable with nested text/audio guidance and clean context frames.

    Context frames are held at their given values with timestep ``context_sigma`` (0: clean)
    and get zero velocity, so any sampler leaves them as they are.
    """
    conditions: Conditions = {
        "text": {"features": cond.text, "mask": cond.text_mask},
        "audio": {"speak": cond.speak_audio, "listen": cond.listen_audio},
    }

    cue_level = cond.cues is not None and cue_scale > 0
    if cond.cues is not None:  # with the text (dropping the text drops its cues) or own level
        cue = {"cue_features": cond.cues.features, "cue_mask": cond.cues.mask,
               "cue_index": cond.cues.index}  # fmt: skip
        if cue_level:
            conditions["cue"] = cue
        else:
            conditions["text"].update(cue)

    def velocity(x: torch.Tensor, sigma: torch.Tensor, conds: Conditions) -> torch.Tensor:
        b, f = x.shape[0], x.shape[2]
        t = conds.get("cue", conds["text"])
        cues = None
        if "cue_index" in t:
            index = t["cue_index"]
            if "cue" in conds and conds["cue"].get("drop") is not None:
                index = torch.where(conds["cue"]["drop"][:, None], -1, index)
            cues = TextCues(t["cue_features"], t["cue_mask"], index)
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

    levels = (
        GuidanceLevel(name="text", keys=("text",), scale=text_scale),
        *([GuidanceLevel(name="cue", keys=("cue",), scale=cue_scale)] if cue_level else []),
        GuidanceLevel(name="audio", keys=("audio",), scale=audio_scale),
    )
    return GuidedModel(velocity, conditions, levels)
