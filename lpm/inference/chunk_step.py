"""The one chunk step of Online LPM, shared by the streaming engine and the distillation rollout.

Legend: C latent channels, Fc latent frames per chunk, h/w latent grid, Ta audio tokens of a
3-s window (2 s history + 1 s current), D feature width.

Per chunk:
  backbone  few-step denoising T0 -> T1 -> 0 against a cache of *re-noised* history, then the
            finished chunk is re-noised to ``history_sigma`` and written to that cache;
  refiner   the backbone's output re-noised to T2, one step, against a cache of *clean* history,
            then the refined chunk is written (clean) to the refiner's cache.
Timesteps are in model units (t = 1000 sigma).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

import torch

from lpm.diffusion import renoise
from lpm.models.common.kv_cache import StreamingKVCache
from lpm.models.dit.model import LPMTransformer, References, TextCues
from lpm.parallel.parallelize import unsharded


@dataclass(kw_only=True, frozen=True)
class OnlineSchedule:
    """Timesteps of the distilled backbone and refiner, and the backbone's history noise."""

    backbone_timesteps: tuple[float, ...] = (1000.0, 750.0)
    """T0, T1, ...: the backbone's denoising steps (model timestep units, descending)."""
    refiner_timestep: float = 500.0
    """T2: the level the backbone output is re-noised to before the refiner's single step."""
    history_sigma: float = 0.1
    """Noise level (sigma) of the history the backbone's cache is built from."""
    cue_scale: float = 1.0
    """Guidance of timed cues in the backbone: 1 follows the cues as distilled; above 1 each
    backbone step of a chunk with a cue also runs without the cues and amplifies the
    difference on the cued frames (one more backbone pass on those chunks only)."""
    cue_min_sigma: float = 0.0
    """Cue guidance acts only on backbone steps at noise levels σ ≥ this (as Base's sampling)."""
    cue_actions_only: bool = False
    """Guide only the frames whose cue names an action (`ChunkConditions.cue_actions`); a cue
    naming only an expression is followed unguided (amplified, it opens a listening mouth)."""

    def __post_init__(self) -> None:
        ts = self.backbone_timesteps
        if not ts or any(not 0 < t <= 1000 for t in ts) or list(ts) != sorted(ts, reverse=True):
            raise ValueError(f"backbone_timesteps={ts} must be descending values in (0, 1000]")
        if not 0 < self.refiner_timestep <= 1000:
            raise ValueError(f"refiner_timestep={self.refiner_timestep} must be in (0, 1000]")
        if not 0 <= self.history_sigma < 1:
            raise ValueError(f"history_sigma={self.history_sigma} must be in [0, 1)")
        if self.cue_scale < 0:
            raise ValueError(f"cue_scale={self.cue_scale} must be >= 0 (1: no cue guidance)")
        if not 0 <= self.cue_min_sigma <= 1:
            raise ValueError(f"cue_min_sigma={self.cue_min_sigma} must be in [0, 1]")


@dataclass
class ChunkConditions:
    """Conditions of one chunk (applied at its boundary)."""

    text: torch.Tensor
    """(B, Lt, text_dim)."""
    text_mask: torch.Tensor
    """(B, Lt) bool."""
    speak_audio: torch.Tensor
    """(B, Ta, audio_dim): the 3-s window ending with this chunk."""
    listen_audio: torch.Tensor
    """(B, Ta, audio_dim)."""
    audio_offset: int
    """Video frame of audio token 0 relative to the chunk's first frame (-48 at 24 fps)."""
    speak_ahead: torch.Tensor | None = None
    """(B, n, audio_dim): speak features of the frames just after the chunk, where their audio
    has already arrived (read by a decoder with a speech path, not by the transformer)."""
    cues: TextCues | None = None
    """Timed text cues of the chunk's latent frames, or None."""
    cue_actions: torch.Tensor | None = None
    """(B, Fc) bool: the frames whose cue names an action (`OnlineSchedule.cue_actions_only`);
    None: every cued frame counts as one."""

    def kwargs(self) -> dict:
        out = {
            "text": self.text,
            "text_mask": self.text_mask,
            "speak_audio": self.speak_audio,
            "listen_audio": self.listen_audio,
            "audio_offset": self.audio_offset,
        }
        if self.cues is not None:
            out["cues"] = self.cues
        return out


def backbone_chunk(
    model: LPMTransformer,
    cache: StreamingKVCache,
    cond: ChunkConditions,
    noise: torch.Tensor,
    schedule: OnlineSchedule,
    generator: torch.Generator | None = None,
    write_history: bool = True,
    grad_steps: Collection[int] | None = None,
) -> torch.Tensor:
    """Denoise one chunk from ``noise`` (B, C, Fc, h, w) with the backbone; returns x0.

    ``grad_steps``: indices of the denoising steps that may record gradients (the distillation
    rollout trains through the last one); None leaves every step to the ambient grad mode.
    """
    b = noise.shape[0]
    sigmas = [t / 1000.0 for t in schedule.backbone_timesteps] + [0.0]
    x = noise if sigmas[0] == 1.0 else renoise(noise, sigmas[0], generator)
    x0 = x
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        t = torch.full((b,), 1000.0 * sigma, device=noise.device)
        grad = torch.is_grad_enabled() and (grad_steps is None or i in grad_steps)
        with torch.set_grad_enabled(grad):
            cue_scale = schedule.cue_scale if sigma >= schedule.cue_min_sigma else 1.0
            v = _cue_guided(model, x, t, cache, cond, cue_scale, schedule.cue_actions_only)
            x0 = x - sigma * v
        if sigma_next > 0:
            x = renoise(x0, sigma_next, generator)
    if write_history:
        model.write_history(x0.detach(), cache, generator=generator, **cond.kwargs())
    return x0


def _cue_guided(
    model: LPMTransformer,
    x: torch.Tensor,
    t: torch.Tensor,
    cache: StreamingKVCache,
    cond: ChunkConditions,
    cue_scale: float,
    actions_only: bool = False,
) -> torch.Tensor:
    """The chunk's velocity with its timed cues guided at ``cue_scale`` on the frames they
    cover (scale 1 elsewhere): ``v_nocue + s (v - v_nocue)``, as Base guides its cues. With
    ``actions_only`` only the frames whose cue names an action are guided."""
    v = model(x, t, attention="chunk_causal", kv_cache=cache, **cond.kwargs())
    cues = cond.cues
    guided = None if cues is None else cues.index >= 0  # (B, Fc)
    if guided is not None and actions_only and cond.cue_actions is not None:
        guided = guided & cond.cue_actions.to(guided.device)
    if cue_scale == 1.0 or guided is None or not bool(guided.any()):
        return v
    uncued = replace(cond, cues=TextCues(cues.features, cues.mask, torch.full_like(cues.index, -1)))
    v_nocue = model(x, t, attention="chunk_causal", kv_cache=cache, **uncued.kwargs())
    scale = torch.where(guided, cue_scale, 1.0)[:, None, :, None, None].to(v)
    return v_nocue + scale * (v - v_nocue)


def refine_chunk(
    model: LPMTransformer,
    cache: StreamingKVCache,
    cond: ChunkConditions,
    x0: torch.Tensor,
    schedule: OnlineSchedule,
    generator: torch.Generator | None = None,
    write_history: bool = True,
) -> torch.Tensor:
    """Re-noise the backbone's output to T2 and restore detail in one refiner step."""
    sigma = schedule.refiner_timestep / 1000.0
    x = renoise(x0, sigma, generator)
    t = torch.full((x0.shape[0],), schedule.refiner_timestep, device=x0.device)
    refined = x - sigma * model(x, t, attention="chunk_causal", kv_cache=cache, **cond.kwargs())
    if write_history:
        model.write_history(refined.detach(), cache, **cond.kwargs())
    return refined


class ChunkStepper:
    """A backbone (and optional refiner) with their caches, advanced one chunk at a time.

    The streaming session and the distillation rollout both drive this object, so a rollout
    produces exactly the chunks a live stream would for the same inputs and seeds.
    """

    def __init__(
        self,
        backbone: LPMTransformer,
        refiner: LPMTransformer | None,
        references: References | None,
        schedule: OnlineSchedule,
        seed: int = 0,
        backbone_grad_steps: Collection[int] | None = None,
    ) -> None:
        self.backbone = backbone
        # Denoising steps of the backbone that record gradients (`backbone_chunk`); the
        # streaming engine runs under no_grad and leaves this None.
        self.backbone_grad_steps = backbone_grad_steps
        self.refiner = refiner
        self.schedule = schedule
        # One generator per stage, so pipelined stages in different threads stay deterministic.
        self.backbone_generator = torch.Generator(device="cpu").manual_seed(seed)
        self.refiner_generator = torch.Generator(device="cpu").manual_seed(seed + 1)
        self.backbone_cache = backbone.new_cache(
            history="noisy", history_sigma=schedule.history_sigma
        )
        self.refiner_cache = refiner.new_cache(history="clean") if refiner is not None else None
        if references is not None:
            with unsharded(backbone):  # a no-op unless FSDP2-sharded (distillation rollouts)
                backbone.cache_references(references, self.backbone_cache)
            if refiner is not None:
                with unsharded(refiner):
                    refiner.cache_references(references, self.refiner_cache)
        self.chunks = 0

    def noise(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.randn(shape, generator=self.backbone_generator).to(device)

    def backbone_step(self, cond: ChunkConditions, shape: tuple[int, ...], device) -> torch.Tensor:
        """Stage 1: the backbone's chunk (clean latents (B, C, Fc, h, w))."""
        x0 = backbone_chunk(
            self.backbone,
            self.backbone_cache,
            cond,
            self.noise(shape, device),
            self.schedule,
            self.backbone_generator,
            grad_steps=self.backbone_grad_steps,
        )
        self.chunks += 1
        return x0

    def refine_step(self, cond: ChunkConditions, x0: torch.Tensor) -> torch.Tensor:
        """Stage 2: the refiner's pass over a backbone chunk (identity without a refiner)."""
        if self.refiner is None:
            return x0
        return refine_chunk(
            self.refiner, self.refiner_cache, cond, x0, self.schedule, self.refiner_generator
        )

    def step(self, cond: ChunkConditions, shape: tuple[int, ...], device) -> torch.Tensor:
        return self.refine_step(cond, self.backbone_step(cond, shape, device))
