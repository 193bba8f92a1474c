"""Conditions of a training clip, seen whole (teacher, critic) and chunk by chunk (students).

Legend: B batch, C latent channels, F latent frames of a clip (= chunks * Fc), Fc latent frames
per chunk, h/w latent grid, Lt text tokens, La audio tokens (one per video frame, La = 4 F).

The teacher and the critic see the whole clip bidirectionally with the whole audio track; a
student sees chunk c with the 3-s audio window ending with it (2 s history + 1 s current, cut
at the clip start), exactly the `ChunkConditions` the streaming engine builds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from lpm.config import ModelConfig
from lpm.diffusion.guidance import Conditions, GuidedModel
from lpm.inference.chunk_step import ChunkConditions
from lpm.inference.denoise import cue_interval, cues_of, guidance_levels, text_audio_conditions
from lpm.models.dit.model import LPMTransformer, References, TextCues
from lpm.train.batch import TrainBatch


@dataclass
class ClipConditions:
    """Conditions of a batch of clips."""

    text: torch.Tensor
    """(B, Lt, text_dim)."""
    text_mask: torch.Tensor
    """(B, Lt) bool."""
    speak_audio: torch.Tensor
    """(B, La, audio_dim) for the whole clip (token a at video frame a)."""
    listen_audio: torch.Tensor
    """(B, La, audio_dim)."""
    references: References | None
    """First frame and global reference (B, C, R, h, w), as a stream caches them."""
    cues: TextCues | None = None
    """Timed text cues, one index per latent frame of the clip, or None."""

    @property
    def batch(self) -> int:
        return self.text.shape[0]

    def chunk(self, index: int, cfg: ModelConfig) -> ChunkConditions:
        """Conditions of chunk ``index``: its 3-s audio window, cut at the clip start."""
        fpc, lpc = cfg.frames_per_chunk, cfg.latents_per_chunk
        a0, a1 = max(0, (index - 2) * fpc), (index + 1) * fpc
        cues = None
        if self.cues is not None:
            own = self.cues.index[:, index * lpc : (index + 1) * lpc]
            cues = TextCues(self.cues.features, self.cues.mask, own)
        return ChunkConditions(
            text=self.text,
            text_mask=self.text_mask,
            speak_audio=self.speak_audio[:, a0:a1],
            listen_audio=self.listen_audio[:, a0:a1],
            audio_offset=a0 - index * fpc,
            cues=cues,
        )

    def chunks(self, count: int, cfg: ModelConfig) -> list[ChunkConditions]:
        return [self.chunk(c, cfg) for c in range(count)]


def clip_conditions(batch: TrainBatch) -> ClipConditions:
    """Conditions of a batch: its text and audio, the clip's first latent frame as the
    ``first_frame`` reference and its global reference when every sample has one."""
    latents, kinds = [batch.latents[:, :, :1].float()], [("first_frame", 0)]
    if ("global", 0) in batch.reference_kinds:
        r = batch.reference_kinds.index(("global", 0))
        latents.append(batch.references[:, :, r : r + 1].float())
        kinds.append(("global", 0))
    return ClipConditions(
        text=batch.text.float(),
        text_mask=batch.text_mask,
        speak_audio=batch.speak_audio.float(),
        listen_audio=batch.listen_audio.float(),
        references=References(torch.cat(latents, dim=2), tuple(kinds)),
        cues=batch.cues,
    )


def _tile_references(refs: References | None, batch: int) -> References | None:
    if refs is None or refs.latents.shape[0] == batch:
        return refs
    return References(refs.latents.repeat(batch // refs.latents.shape[0], 1, 1, 1, 1), refs.kinds)


def clip_velocity(
    model: LPMTransformer,
    x: torch.Tensor,
    sigma: torch.Tensor,
    clip: ClipConditions,
    conds: Conditions | None = None,
) -> torch.Tensor:
    """Velocity (B, C, F, h, w) of a whole clip x at per-sample noise levels sigma (B,).

    ``conds`` (guidance passes) replaces the clip's text/audio and carries their drop masks.
    """
    if conds is None:
        conds = _conditions(clip)
    return model(
        x,
        1000.0 * sigma,
        text=conds["text"]["features"],
        text_mask=conds["text"]["mask"],
        speak_audio=conds["audio"]["speak"],
        listen_audio=conds["audio"]["listen"],
        references=_tile_references(clip.references, x.shape[0]),
        attention="bidirectional",
        drop_text=conds["text"].get("drop"),
        drop_audio=conds["audio"].get("drop"),
        cues=cues_of(conds),
    )


def _conditions(clip: ClipConditions, *, cue_level: bool = False) -> Conditions:
    return text_audio_conditions(
        clip.text, clip.text_mask, clip.speak_audio, clip.listen_audio, clip.cues,
        cue_level=cue_level,
    )  # fmt: skip


def guided_teacher(
    model: LPMTransformer,
    clip: ClipConditions,
    *,
    text_scale: float,
    audio_scale: float,
    cue_scale: float = 0.0,
    cue_min_sigma: float = 0.0,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The real score: ``(x (B, C, F, h, w), sigma (B,)) -> v`` with nested text/audio guidance
    (``v_u + s_text (v_t - v_u) + s_audio (v_ta - v_t)``); all passes run as one batch. With
    ``cue_scale`` > 0 and timed cues, the cues get their own level between text and audio, as
    Base's sampler does (`lpm.inference.denoise.guided_velocity`), guided on the frames they
    cover and at noise levels σ ≥ ``cue_min_sigma``."""
    conditions = _conditions(clip, cue_level=cue_scale > 0)
    guided = GuidedModel(
        lambda x, sigma, conds: clip_velocity(model, x, sigma, clip, conds),
        conditions,
        guidance_levels(conditions, text_scale, audio_scale, cue_scale),
    )
    return cue_interval(guided, cue_min_sigma)
