"""`LPMTransformer`: the Base/Online LPM diffusion transformer, one class for every scale.

Legend
  B batch; C latent channels; F latent frames; h, w latent height/width
  R reference images (each one latent frame of the video's h x w)
  Fp, hp, wp = F/pt, h/ph, w/pw after patching; S = hp*wp tokens per frame
  Lt text tokens (text_dim); La audio tokens, one per video frame (audio_dim)

Forward, in the stages of the paper's figure:
  1. patchify the video and the references, 3D RoPE positions (references at per-type offsets)
  2. condition embeddings: per-frame timestep (references at t=0), text, speak and listen audio
  3. attention layout: bidirectional, chunk-causal, chunk-causal with a sink/window, or a
     streaming step against a `StreamingKVCache`
  4. blocks (even layers hear speak audio, odd layers listen audio)
  5. head and unpatchify (video tokens only)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from lpm.config import REFERENCE_TYPES, ModelConfig
from lpm.models.common.kv_cache import HistoryKind, StreamingKVCache
from lpm.models.common.rope import grid_positions, rope_cos_sin
from lpm.models.dit.blocks import MLP, BlockContext, Head, LPMBlock, WindowPlan


@dataclass
class References:
    """Clean reference latents and what each one is.

    ``latents`` is (B, C, R, h, w) with the video's latent grid; ``kinds[r]`` is (type, subtype)
    with type in ``first_frame | global | body | expression`` (body subtypes 0..3 = front, left,
    right, back; expression subtypes 0..7).
    """

    latents: torch.Tensor
    kinds: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if self.latents.ndim != 5:
            raise ValueError(
                f"reference latents must be (B, C, R, h, w), got {tuple(self.latents.shape)}"
            )
        if self.latents.shape[2] != len(self.kinds):
            raise ValueError(
                f"{self.latents.shape[2]} reference frames but {len(self.kinds)} kinds given"
            )
        for kind, sub in self.kinds:
            if kind not in REFERENCE_TYPES:
                raise ValueError(
                    f"unknown reference type {kind!r}; use one of {list(REFERENCE_TYPES)}"
                )
            if not 0 <= sub < REFERENCE_TYPES[kind]:
                raise ValueError(
                    f"reference {kind!r} subtype {sub} out of range 0..{REFERENCE_TYPES[kind] - 1}"
                )

    def temporal_positions(self, cfg: ModelConfig) -> torch.Tensor:
        return torch.tensor([cfg.reference_offsets[k] - s for k, s in self.kinds])


def _in_weight_precision(method):
    """Run ``method`` at the precision of the model's stored weights.

    Weights stored in bf16/fp16 (a bundle loaded with ``dtype=torch.bfloat16`` for inference)
    run under autocast at that precision, and the output comes back in the dtype of the input
    latents (float32 in, float32 out), so callers need not know. Float32 weights (training,
    FSDP2's float32 shards, CPU inference) run unchanged.
    """

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        weight = self.time_proj.weight
        low = weight.dtype in (torch.bfloat16, torch.float16)
        if not low or torch.is_autocast_enabled(weight.device.type):
            return method(self, *args, **kwargs)
        with torch.autocast(weight.device.type, dtype=weight.dtype):
            out = method(self, *args, **kwargs)
        x = args[0] if args else kwargs.get("x")
        if isinstance(out, torch.Tensor) and isinstance(x, torch.Tensor):
            return out.to(x.dtype)
        return out

    return run


@dataclass
class TextCues:
    """Timed text: S cue prompts and which of them each latent frame follows.

    ``features`` (B, S, Lc, text_dim) and ``mask`` (B, S, Lc) bool are the encoded cue prompts;
    ``index`` (B, F) long names the cue of each latent frame of the video, -1 for none.
    ``actions`` (B, S) long, training only: the labelled action each cue asks for (0: none),
    -1 where unknown; read by a model with ``cue_action_classes``.
    """

    features: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    actions: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.features.ndim != 4 or self.mask.shape != self.features.shape[:3]:
            raise ValueError(
                f"cue features must be (B, S, Lc, D) with a (B, S, Lc) mask, got "
                f"{tuple(self.features.shape)} and {tuple(self.mask.shape)}"
            )
        if self.index.ndim != 2 or self.index.shape[0] != self.features.shape[0]:
            raise ValueError(f"cue index must be (B, F), got {tuple(self.index.shape)}")
        if self.index.numel() and int(self.index.max()) >= self.features.shape[1]:
            raise ValueError(
                f"cue index {int(self.index.max())} names a cue beyond the "
                f"{self.features.shape[1]} given"
            )
        if self.actions is not None and self.actions.shape != self.features.shape[:2]:
            raise ValueError(
                f"cue actions must be (B, S)={tuple(self.features.shape[:2])}, "
                f"got {tuple(self.actions.shape)}"
            )


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features (..., dim) of timesteps t (...) in [0, 1000]: [cos, sin] halves."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[..., None] * freqs
    return torch.cat((torch.cos(args), torch.sin(args)), dim=-1)


class CueEmbed(nn.Module):
    """One vector per timed cue, added to the timestep embedding of the latent frames it covers
    (so it modulates every block there): the cue's tokens weighted by a learned score (attention
    pooling picks the words that name a motion out of the character description around them),
    then an MLP whose last layer starts at zero, so a fresh cue path changes nothing."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.token = MLP(cfg.text_dim, d, d, nn.GELU(approximate="tanh"))
        self.score = nn.Linear(d, 1)
        self.out = MLP(d, d, d, nn.SiLU())
        nn.init.zeros_(self.out.fc2.weight)
        nn.init.zeros_(self.out.fc2.bias)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S, Lc, text_dim) features, (B, S, Lc) mask -> (B, S, D)."""
        tokens = self.token(features)
        score = self.score(tokens)[..., 0].float().masked_fill(~mask, -1e4)
        weights = score.softmax(dim=-1) * mask.any(dim=-1, keepdim=True)
        return self.out((weights[..., None].to(tokens) * tokens).sum(dim=2))


class OrderedAudioEmbed(nn.Module):
    """Speak audio as ``n`` tokens per latent frame, each made from that frame's window in order.

    A latent frame holds ``span`` video frames (4 with Wan's VAE). Attended as a set, its window
    of per-frame audio tokens says how much speech there is but not which sound goes with which
    of the 4 frames, and a mouth opens and closes within 4 frames. Here every audio frame is
    projected to ``speak_token_width`` channels, the ``back + span + fwd`` frames of the window
    are concatenated in time order (frames outside the audio are zero) and an MLP maps them to
    ``n`` tokens. Token ``k`` of latent frame ``f`` is seen only by the video tokens of ``f``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.back, fwd = cfg.speak_window
        self.span = cfg.temporal_compression * cfg.patch_size[0]
        self.slots = self.back + self.span + fwd
        self.n = cfg.speak_tokens_per_latent
        self.down = nn.Linear(cfg.audio_dim, cfg.speak_token_width)
        self.mlp = MLP(
            self.slots * cfg.speak_token_width, cfg.dim, self.n * cfg.dim,
            nn.GELU(approximate="tanh"),
        )  # fmt: skip

    def forward(
        self, feats: torch.Tensor, fp: int, grid, offset: int
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """(B, La, audio_dim) features, token ``a`` at video frame ``a + offset`` ->
        ((B, fp*n, D) tokens, ((Nv, fp*n) visibility, (Nv, 1) has-any))."""
        b, n_audio, _ = feats.shape
        device = feats.device
        frames = torch.arange(fp, device=device)[:, None] * self.span
        index = frames + torch.arange(self.slots, device=device)[None, :] - self.back - offset
        valid = (index >= 0) & (index < n_audio)  # (fp, slots)
        z = self.down(feats)[:, index.clamp(0, max(n_audio - 1, 0))]  # (B, fp, slots, width)
        z = z * valid[None, :, :, None].to(z.dtype)
        tokens = self.mlp(z.flatten(2)).reshape(b, fp * self.n, -1)
        s = grid[0] * grid[1]
        own = torch.eye(fp, dtype=torch.bool, device=device)
        visible = own.repeat_interleave(s, dim=0).repeat_interleave(self.n, dim=1)
        has_any = valid.any(dim=1).repeat_interleave(s)[:, None].float()
        return tokens, (visible, has_any)


class LPMTransformer(nn.Module):
    """Video DiT with multimodal cross-attention, interleaved dual audio and reference tokens."""

    #: The repeated block type, read by activation checkpointing and FSDP wrapping.
    block_class = LPMBlock
    #: Parameter-name fragments kept in fp32 under mixed precision.
    fp32_modules = ("time_embed", "time_proj", "modulation", "norm")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embed = nn.Conv3d(cfg.in_channels, d, cfg.patch_size, stride=cfg.patch_size)
        self.time_embed = MLP(cfg.freq_dim, d, d, nn.SiLU())
        self.time_proj = nn.Linear(d, 6 * d)
        self.text_embed = MLP(cfg.text_dim, d, d, nn.GELU(approximate="tanh"))
        self.audio_embed = MLP(cfg.audio_dim, d, d, nn.GELU(approximate="tanh"))
        self.speak_embed = OrderedAudioEmbed(cfg) if cfg.speak_tokens_per_latent else None
        self.cue_type = nn.Parameter(torch.zeros(d)) if cfg.text_cues else None
        self.cue_embed = CueEmbed(cfg) if cfg.text_cues else None
        self.cue_action_head = (
            nn.Linear(d, cfg.cue_action_classes) if cfg.cue_action_classes else None
        )
        self.cue_action_loss: torch.Tensor | None = None
        """Set by each forward given labelled cues (`TextCues.actions`) with grad enabled: the
        cross-entropy of ``cue_action_head`` on them; the trainer adds it to the loss."""
        self.blocks = nn.ModuleList(LPMBlock(cfg, i) for i in range(cfg.num_layers))
        self.head = Head(cfg)

    # ---- public API ---------------------------------------------------------------------------
    def new_cache(
        self, history: HistoryKind = "clean", history_sigma: float = 0.0
    ) -> StreamingKVCache:
        """An empty streaming cache with this config's sink and window."""
        return StreamingKVCache(
            num_layers=self.cfg.num_layers,
            sink_chunks=self.cfg.sink_chunks,
            window_chunks=self.cfg.window_chunks,
            history=history,
            history_sigma=history_sigma,
        )

    @torch.no_grad()
    @_in_weight_precision
    def cache_references(self, references: References, cache: StreamingKVCache) -> None:
        """Write the reference tokens' keys and values into ``cache`` (once per stream)."""
        tokens, positions, grid = self._patchify_refs(references)
        b, n, _ = tokens.shape
        frames = references.latents.shape[2]
        t_feat = timestep_features(torch.zeros(b, frames, device=tokens.device), self.cfg.freq_dim)
        temb = self.time_embed(t_feat.to(self.time_proj.weight.dtype))
        mod = self.time_proj(nn.functional.silu(temb)).unflatten(2, (6, -1))
        ctx = self._context(
            n_ref=n,
            grid=grid,
            rope_q=rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta),
            ref_positions=positions,
            text=None,
            text_mask=None,
            audio={},
            audio_mask={},
        )
        ctx.cache, ctx.cache_write = cache, True
        cache.begin_references(positions, grid)
        try:
            for block in self.blocks:
                tokens = block(tokens, mod, ctx)
            cache.commit()
        except BaseException:
            cache.abort()
            raise

    @torch.no_grad()
    def write_history(
        self,
        clean_latents: torch.Tensor,
        cache: StreamingKVCache,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        **conditions,
    ) -> None:
        """Append a finished chunk to ``cache`` as history.

        A ``noisy`` cache (backbone) stores the chunk re-noised to ``cache.history_sigma`` so the
        model learns to tolerate its own errors; a ``clean`` cache (refiner) stores it as is.
        ``conditions`` are the keyword arguments of `forward` (text, audio, ...).
        """
        sigma = cache.history_sigma
        if sigma > 0:
            if noise is None:  # drawn where the generator lives (the CPU for a seeded stream)
                draw_device = generator.device if generator is not None else clean_latents.device
                noise = torch.randn(
                    clean_latents.shape,
                    generator=generator,
                    device=draw_device,
                    dtype=clean_latents.dtype,
                ).to(clean_latents.device)
            clean_latents = (1 - sigma) * clean_latents + sigma * noise
        t = torch.full((clean_latents.shape[0],), 1000.0 * sigma, device=clean_latents.device)
        self(
            clean_latents,
            t,
            attention="chunk_causal",
            kv_cache=cache,
            cache_write=True,
            **conditions,
        )

    @_in_weight_precision
    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        *,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        speak_audio: torch.Tensor | None = None,
        listen_audio: torch.Tensor | None = None,
        audio_offset: int = 0,
        references: References | None = None,
        attention: str | None = None,
        window: tuple[int, int | None] | None = None,
        kv_cache: StreamingKVCache | None = None,
        cache_write: bool = False,
        drop_text: torch.Tensor | None = None,
        drop_audio: torch.Tensor | None = None,
        cues: TextCues | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity for noisy latents.

        Args:
            x: (B, C, F, h, w) noisy latents.
            timestep: (B,) or per latent frame (B, F), in [0, 1000].
            text: (B, Lt, text_dim) text features; ``text_mask`` (B, Lt) bool, True = real token.
            speak_audio, listen_audio: (B, La, audio_dim) features, one token per video frame;
                token ``a`` sits at video frame ``a + audio_offset`` counted from x's first frame.
            references: clean first-frame / identity references, or None.
            attention: ``bidirectional`` or ``chunk_causal``; defaults to the config's mode.
            window: (sink_chunks, window_chunks) for chunk-causal attention that sees exactly what
                a streaming cache with that layout would keep (None window = unbounded).
            kv_cache: stream step: x is one chunk attending to the cache (refs via
                `cache_references`); with ``cache_write`` its keys/values are appended.
            drop_text, drop_audio: (B,) bool, True drops that condition (classifier-free guidance).
                Dropping the text drops the cues with it.
            cues: timed text cues, one index per latent frame of x; read only by a model with
                ``cfg.text_cues`` (others ignore them) and only together with ``text``. With
                labelled cues a ``cue_action_classes`` model sets ``self.cue_action_loss``.
        Returns:
            (B, C_out, F, h, w) predicted velocity.
        """
        cfg = self.cfg
        self.cue_action_loss = None
        mode = attention or cfg.attention
        if mode not in ("bidirectional", "chunk_causal"):
            raise ValueError(f"attention={mode!r} must be 'bidirectional' or 'chunk_causal'")
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (B, {cfg.in_channels}, F, h, w), got {tuple(x.shape)}")
        b, _, f, h, w = x.shape
        pt, ph, pw = cfg.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(
                f"latent shape {(f, h, w)} must be divisible by patch_size {cfg.patch_size}"
            )
        if kv_cache is not None:
            if mode != "chunk_causal":
                raise ValueError("a KV cache needs attention='chunk_causal'")
            if references is not None:
                raise ValueError("with a KV cache, pass references once via cache_references()")
            if f > cfg.latents_per_chunk:
                raise ValueError(
                    f"a cached step takes one chunk (<= {cfg.latents_per_chunk} latent frames), "
                    f"got {f}"
                )

        # 1. patchify + positions
        fp, grid = f // pt, (h // ph, w // pw)
        video = self.patch_embed(x).flatten(2).transpose(1, 2)
        t0 = kv_cache.next_frame_offset() if kv_cache is not None else 0
        positions = grid_positions(torch.arange(t0, t0 + fp, device=x.device), *grid)
        n_ref, ref_positions, ref_frames = 0, None, 0
        if references is not None:
            ref_tokens, ref_positions, ref_grid = self._patchify_refs(references)
            if ref_grid != grid or ref_tokens.shape[0] != b:
                raise ValueError(
                    f"references have grid {ref_grid} and batch {ref_tokens.shape[0]}; "
                    f"the video has {grid} and {b}: resize references to the video resolution"
                )
            n_ref, ref_frames = ref_tokens.shape[1], references.latents.shape[2]
            video = torch.cat((ref_tokens, video), dim=1)
            positions = torch.cat((ref_positions, positions))
        tokens = video

        # 2. condition embeddings
        frame_t = self._frame_timesteps(timestep, b, f).to(x.device)
        frame_t = torch.cat((frame_t.new_zeros(b, ref_frames), frame_t), dim=1)
        temb = self.time_embed(
            timestep_features(frame_t, cfg.freq_dim).to(self.time_proj.weight.dtype)
        )
        use_cues = cues is not None and self.cue_embed is not None and text is not None
        if use_cues:
            if cues.index.shape != (b, f):
                raise ValueError(
                    f"cue index must be (B, F)=({b}, {f}), got {tuple(cues.index.shape)}"
                )
            temb = self._cue_modulation(temb, cues, ref_frames, drop_text)
        mod = self.time_proj(nn.functional.silu(temb)).unflatten(2, (6, -1))
        text_tokens = self.text_embed(text) if text is not None else None
        text_vis = None if text_mask is None else text_mask.bool()[:, None, None, :]
        if use_cues:
            text_tokens, text_vis = self._with_cues(text_tokens, text_vis, cues, f, grid)
        audio, audio_mask = {}, {}
        for stream, feats in (("speak", speak_audio), ("listen", listen_audio)):
            if feats is None:
                audio[stream] = audio_mask[stream] = None
            elif stream == "speak" and self.speak_embed is not None:
                audio[stream], audio_mask[stream] = self.speak_embed(feats, fp, grid, audio_offset)
            else:
                audio[stream] = self.audio_embed(feats)
                audio_mask[stream] = self._audio_mask(
                    stream, fp, grid, feats.shape[1], audio_offset, x.device
                )

        # 3. attention layout
        ctx = self._context(
            n_ref=n_ref,
            grid=grid,
            rope_q=rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta),
            ref_positions=ref_positions,
            text=text_tokens,
            text_mask=text_vis,
            audio=audio,
            audio_mask=audio_mask,
        )
        ctx.text_keep = None if drop_text is None else (~drop_text.bool()).float().view(b, 1, 1)
        ctx.audio_keep = None if drop_audio is None else (~drop_audio.bool()).float().view(b, 1, 1)
        if kv_cache is not None:
            ctx.cache, ctx.cache_write = kv_cache, cache_write
            ctx.cache_rope = kv_cache.context_rope(cfg.head_dim, cfg.rope_theta, x.device)
            if cache_write:
                kv_cache.begin_chunk(fp, grid)
        elif mode == "chunk_causal":
            chunk_frames = self._chunk_frames(fp)
            if window is not None:
                ctx.window = WindowPlan(chunk_frames, window[0], window[1])
            else:
                ctx.self_mask = self._chunk_causal_mask(n_ref, chunk_frames, grid, x.device)

        # 4. blocks
        try:
            for block in self.blocks:
                tokens = block(tokens, mod, ctx)
            if kv_cache is not None and cache_write:
                kv_cache.commit()
        except BaseException:
            if kv_cache is not None:
                kv_cache.abort()
            raise

        # 5. head + unpatchify
        out = self.head(tokens[:, n_ref:], temb[:, ref_frames:], grid[0] * grid[1])
        out = out.reshape(b, fp, grid[0], grid[1], pt, ph, pw, cfg.out_channels)
        return out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, cfg.out_channels, f, h, w)

    # ---- helpers ------------------------------------------------------------------------------
    def _patchify_refs(self, refs: References):
        if self.cfg.patch_size[0] != 1:
            raise ValueError("reference images need a temporal patch size of 1")
        lat = refs.latents
        tokens = self.patch_embed(lat).flatten(2).transpose(1, 2)
        grid = (lat.shape[3] // self.cfg.patch_size[1], lat.shape[4] // self.cfg.patch_size[2])
        positions = grid_positions(refs.temporal_positions(self.cfg).to(lat.device), *grid)
        return tokens, positions, grid

    def _cue_modulation(self, temb, cues: TextCues, ref_frames: int, drop_text) -> torch.Tensor:
        """``temb`` (B, R + fp, D) with each video frame's cue vector added (none: zero)."""
        b, s = cues.features.shape[:2]
        index = cues.index[:, :: self.cfg.patch_size[0]].to(temb.device)
        if s == 0:
            return temb
        vec = self.cue_embed(cues.features.to(temb), cues.mask.bool().to(temb.device))
        if self.cue_action_head is not None and cues.actions is not None:
            labels = cues.actions.to(temb.device).flatten()
            if torch.is_grad_enabled():
                logits = self.cue_action_head(vec).float().flatten(0, 1)
                known = labels >= 0  # a batch with none still touches the head (zero loss)
                self.cue_action_loss = (
                    nn.functional.cross_entropy(logits[known], labels[known])
                    if bool(known.any())
                    else logits.sum() * 0.0
                )
        vec = torch.cat((vec.new_zeros(b, 1, vec.shape[-1]), vec), dim=1)  # slot 0: no cue
        per_frame = torch.gather(vec, 1, (index + 1)[..., None].expand(-1, -1, vec.shape[-1]))
        if drop_text is not None:
            per_frame = per_frame * (~drop_text.bool()).to(per_frame)[:, None, None]
        return torch.cat((temb[:, :ref_frames], temb[:, ref_frames:] + per_frame), dim=1)

    def _with_cues(self, text_tokens, text_vis, cues: TextCues, f: int, grid):
        """Text tokens with every cue's tokens appended, and a (B, 1, Nv, Lt + S*Lc) mask that
        shows each video token the prompt and the cue of its own latent frame only."""
        b, s, lc, _ = cues.features.shape
        if s == 0:
            return text_tokens, text_vis
        dev = text_tokens.device
        cue_tokens = self.text_embed(cues.features.flatten(1, 2).to(text_tokens)) + self.cue_type
        index = cues.index[:, :: self.cfg.patch_size[0]].to(dev)  # (B, fp)
        own = index[:, :, None] == torch.arange(s, device=dev)[None, None, :]  # (B, fp, S)
        vis = (own[..., None] & cues.mask.bool().to(dev)[:, None]).flatten(2)  # (B, fp, S*Lc)
        vis = vis.repeat_interleave(grid[0] * grid[1], dim=1)  # (B, Nv, S*Lc)
        n_text = text_tokens.shape[1]
        prompt = (
            torch.ones(b, 1, 1, n_text, dtype=torch.bool, device=dev)
            if text_vis is None
            else text_vis
        )
        prompt = prompt.expand(b, 1, vis.shape[1], n_text)
        return torch.cat((text_tokens, cue_tokens), 1), torch.cat((prompt, vis[:, None]), dim=-1)

    def _frame_timesteps(self, timestep: torch.Tensor, b: int, f: int) -> torch.Tensor:
        pt = self.cfg.patch_size[0]
        t = torch.as_tensor(timestep)
        if t.ndim == 0:
            t = t.expand(b)
        if t.ndim == 1:
            if t.shape[0] != b:
                raise ValueError(f"timestep has {t.shape[0]} entries for batch {b}")
            return t[:, None].expand(b, f // pt)
        if t.shape != (b, f):
            raise ValueError(f"per-frame timestep must be (B, F)=({b}, {f}), got {tuple(t.shape)}")
        return t[:, ::pt]

    def _chunk_frames(self, fp: int) -> list[int]:
        per = self.cfg.latents_per_chunk // self.cfg.patch_size[0]
        return [min(per, fp - s) for s in range(0, fp, per)]

    @staticmethod
    def _chunk_causal_mask(n_ref: int, chunk_frames: list[int], grid, device) -> torch.Tensor:
        s = grid[0] * grid[1]
        ids = [torch.full((n_ref,), -1, dtype=torch.long)]
        ids += [torch.full((n * s,), i, dtype=torch.long) for i, n in enumerate(chunk_frames)]
        chunk = torch.cat(ids).to(device)
        q, k = chunk[:, None], chunk[None, :]
        return (k == -1) | ((q >= 0) & (k <= q))

    def _audio_mask(self, stream: str, fp: int, grid, n_audio: int, offset: int, device):
        """(Nv, La) visibility and (Nv, 1) has-any for one audio stream."""
        cfg = self.cfg
        back, fwd = cfg.speak_window if stream == "speak" else cfg.listen_window
        span = cfg.temporal_compression * cfg.patch_size[0]
        start = torch.arange(fp, device=device)[:, None] * span
        t_audio = torch.arange(n_audio, device=device)[None, :] + offset
        visible = (t_audio >= start - back) & (t_audio <= start + span - 1 + fwd)
        visible = visible.repeat_interleave(grid[0] * grid[1], dim=0)
        return visible, visible.any(dim=1, keepdim=True).float()

    def _context(self, *, n_ref, grid, rope_q, ref_positions, text, text_mask, audio, audio_mask):
        return BlockContext(
            n_ref_tokens=n_ref,
            tokens_per_frame=grid[0] * grid[1],
            grid_hw=grid,
            rope_q=rope_q,
            self_mask=None,
            window=None,
            ref_positions=ref_positions,
            rope_theta=self.cfg.rope_theta,
            backend=self.cfg.attention_backend,
            text=text,
            text_mask=text_mask,
            text_keep=None,
            audio=audio,
            audio_mask=audio_mask,
            audio_keep=None,
        )
