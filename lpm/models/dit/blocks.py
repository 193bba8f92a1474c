"""Blocks of the LPM DiT: self-attention, multimodal cross-attention, FFN, output head.

Legend: B batch, N tokens (refs then video), Nf frames (reference images then latent frames),
S tokens per frame, D width, H heads, Dh head dim, Lt text tokens, La audio tokens.
Modulation is per frame: every frame carries its own timestep, reference frames carry 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from lpm.config import ModelConfig
from lpm.models.common.attention import attention
from lpm.models.common.kv_cache import StreamingKVCache, kept_chunk_indices
from lpm.models.common.norms import FP32LayerNorm, RMSNorm
from lpm.models.common.rope import apply_rope, grid_positions, rope_cos_sin


class MLP(nn.Module):
    """Linear -> activation -> Linear."""

    def __init__(self, dim_in: int, dim_hidden: int, dim_out: int, act: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim_in, dim_hidden)
        self.act = act
        self.fc2 = nn.Linear(dim_hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


@dataclass
class WindowPlan:
    """Full-sequence chunk-causal attention with the streaming cache's sink/window layout.

    Each query chunk sees the reference tokens, the chunks a streaming cache would still hold
    when that chunk is generated, and itself, with slot positions as the cache assigns them.
    """

    chunk_frames: list[int]
    """Temporal positions per video chunk, in order."""
    sink_chunks: int
    window_chunks: int | None


@dataclass
class BlockContext:
    """Everything a block needs besides its input; built once per forward."""

    n_ref_tokens: int
    tokens_per_frame: int
    grid_hw: tuple[int, int]
    rope_q: tuple[torch.Tensor, torch.Tensor]
    """cos/sin (N, Dh) at the query tokens' positions."""
    self_mask: torch.Tensor | None
    """(N, N) bool for the full forward, None when every key is visible."""
    window: WindowPlan | None
    ref_positions: torch.Tensor | None
    """(N_ref, 3) integer positions of the reference tokens."""
    rope_theta: float
    backend: str
    text: torch.Tensor | None
    """(B, Lt, D) embedded text, or None."""
    text_mask: torch.Tensor | None
    """(B, 1, 1, Lt) bool, or None."""
    text_keep: torch.Tensor | None
    """(B, 1, 1) float: 0 where the text condition is dropped."""
    audio: dict[str, torch.Tensor | None]
    """stream -> (B, La, D) embedded audio, or None."""
    audio_mask: dict[str, tuple[torch.Tensor, torch.Tensor] | None]
    """stream -> ((Nv, La) bool visibility, (Nv, 1) float row has any audio)."""
    audio_keep: torch.Tensor | None
    cache: StreamingKVCache | None = None
    cache_rope: tuple[torch.Tensor, torch.Tensor] | None = None
    cache_write: bool = False
    cache_read: dict[int, tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=dict)
    """layer -> the cache context it read in this forward. A block recomputed by activation
    checkpointing (in backward, after the cache has moved on) reads it from here and does not
    stage its keys again."""


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_q = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, ctx: BlockContext, layer: int) -> torch.Tensor:
        heads = (self.num_heads, self.head_dim)
        q = self.norm_q(self.q(x)).unflatten(2, heads)
        k = self.norm_k(self.k(x)).unflatten(2, heads)
        v = self.v(x).unflatten(2, heads)
        cos, sin = ctx.rope_q
        if ctx.cache is not None:
            out = self._cached(q, k, v, ctx, layer)
        elif ctx.window is not None:
            out = self._windowed(q, k, v, ctx)
        else:
            out = attention(
                apply_rope(q, cos, sin), apply_rope(k, cos, sin), v, ctx.self_mask, ctx.backend
            )
        return self.o(out.flatten(2))

    def _cached(self, q, k, v, ctx: BlockContext, layer: int) -> torch.Tensor:
        """Queries of the current chunk (or of the references) against the cache plus itself."""
        cos, sin = ctx.rope_q
        if layer in ctx.cache_read:  # a recomputation: the forward already read and staged
            previous = ctx.cache_read[layer]
        else:
            previous = ctx.cache.context(layer)
            if torch.is_grad_enabled():  # only a forward that can be recomputed keeps it
                ctx.cache_read[layer] = previous
            if ctx.cache_write:
                ctx.cache.stage(layer, k, v)
        k_rot = apply_rope(k, cos, sin)
        if previous is not None:
            k_prev, v_prev = previous
            c_cos, c_sin = ctx.cache_rope
            k_rot = torch.cat((apply_rope(k_prev, c_cos, c_sin), k_rot), dim=1)
            v = torch.cat((v_prev, v), dim=1)
        return attention(apply_rope(q, cos, sin), k_rot, v, None, ctx.backend)

    def _windowed(self, q, k, v, ctx: BlockContext) -> torch.Tensor:
        """Chunk-causal attention where each chunk sees what the streaming cache would keep."""
        plan, n_ref, dh = ctx.window, ctx.n_ref_tokens, self.head_dim
        ref_cos, ref_sin = ctx.rope_q[0][:n_ref], ctx.rope_q[1][:n_ref]
        q_ref, k_ref = (
            apply_rope(q[:, :n_ref], ref_cos, ref_sin),
            apply_rope(k[:, :n_ref], ref_cos, ref_sin),
        )
        outs = [attention(q_ref, k_ref, v[:, :n_ref], None, ctx.backend)] if n_ref else []
        s = ctx.tokens_per_frame
        starts = [n_ref]
        for frames in plan.chunk_frames:
            starts.append(starts[-1] + frames * s)
        for i in range(len(plan.chunk_frames)):
            visible = kept_chunk_indices(i, plan.sink_chunks, plan.window_chunks) + [i]
            keys, values, slot = [k_ref], [v[:, :n_ref]], 0
            for j in visible:  # the current chunk i comes last, right after the kept slots
                t = torch.arange(slot, slot + plan.chunk_frames[j], device=q.device)
                cos, sin = rope_cos_sin(grid_positions(t, *ctx.grid_hw), dh, ctx.rope_theta)
                keys.append(apply_rope(k[:, starts[j] : starts[j + 1]], cos, sin))
                values.append(v[:, starts[j] : starts[j + 1]])
                slot += plan.chunk_frames[j]
            q_i = apply_rope(q[:, starts[i] : starts[i + 1]], cos, sin)  # cos/sin of chunk i
            outs.append(attention(q_i, torch.cat(keys, 1), torch.cat(values, 1), None, ctx.backend))
        return torch.cat(outs, dim=1)


class CrossAttention(nn.Module):
    """Text and audio cross-attention in parallel, each with its own output projection, summed.

    The audio branch's value and output projections start at zero, so a fresh audio path adds
    nothing and leaves a pretrained video prior intact.
    """

    def __init__(self, cfg: ModelConfig, stream: str) -> None:
        super().__init__()
        d = cfg.dim
        self.stream = stream
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.norm_q = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.norm_k = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.audio_k = nn.Linear(d, d)
        self.audio_v = nn.Linear(d, d)
        self.audio_o = nn.Linear(d, d)
        self.norm_audio_k = RMSNorm(d, cfg.eps) if cfg.qk_norm else nn.Identity()
        self.reset_audio_parameters()

    def reset_audio_parameters(self) -> None:
        nn.init.zeros_(self.audio_v.weight)
        nn.init.zeros_(self.audio_v.bias)
        nn.init.zeros_(self.audio_o.bias)

    def forward(self, x: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        heads = (self.num_heads, self.head_dim)
        q = self.norm_q(self.q(x)).unflatten(2, heads)
        out = torch.zeros_like(x)
        if ctx.text is not None:
            k = self.norm_k(self.k(ctx.text)).unflatten(2, heads)
            v = self.v(ctx.text).unflatten(2, heads)
            text_out = self.o(attention(q, k, v, ctx.text_mask, ctx.backend).flatten(2))
            out = out + (
                text_out if ctx.text_keep is None else text_out * ctx.text_keep.to(x.dtype)
            )
        audio = ctx.audio.get(self.stream)
        if audio is not None:
            visible, has_any = ctx.audio_mask[self.stream]
            k = self.norm_audio_k(self.audio_k(audio)).unflatten(2, heads)
            v = self.audio_v(audio).unflatten(2, heads)
            # Rows with no audio in their window would be all-masked; let them see every key and
            # zero their output instead, so no NaN appears.
            safe = visible | ~has_any.bool()
            audio_out = attention(q, k, v, safe, ctx.backend).flatten(2) * has_any.to(q.dtype)
            audio_out = self.audio_o(audio_out)
            out = out + (
                audio_out if ctx.audio_keep is None else audio_out * ctx.audio_keep.to(x.dtype)
            )
        return out


class LPMBlock(nn.Module):
    """AdaLN self-attention -> text+audio cross-attention -> AdaLN FFN."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.norm1 = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg)
        self.norm2 = (
            FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=True)
            if cfg.cross_attn_norm
            else nn.Identity()
        )
        self.cross_attn = CrossAttention(cfg, cfg.audio_stream(layer))
        self.norm3 = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.ffn = MLP(cfg.dim, cfg.ffn_dim, cfg.dim, nn.GELU(approximate="tanh"))
        self.modulation = nn.Parameter(torch.randn(1, 1, 6, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, mod_bf6d: torch.Tensor, ctx: BlockContext) -> torch.Tensor:
        """x (B, N, D); mod (B, Nf, 6, D) per-frame timestep projection."""
        b, n, d = x.shape
        frames = n // ctx.tokens_per_frame
        shift, scale, gate, c_shift, c_scale, c_gate = (
            (self.modulation + mod_bf6d.float()).unsqueeze(3).unbind(2)
        )  # each (B, Nf, 1, D)

        def per_frame(t: torch.Tensor) -> torch.Tensor:
            return t.float().view(b, frames, ctx.tokens_per_frame, d)

        h = (per_frame(self.norm1(x)) * (1 + scale) + shift).view(b, n, d).type_as(x)
        attn = self.self_attn(h, ctx, self.layer)
        x = (per_frame(x) + per_frame(attn) * gate).view(b, n, d).type_as(x)

        n_ref = ctx.n_ref_tokens
        h = self.norm2(x[:, n_ref:])
        x = torch.cat((x[:, :n_ref], x[:, n_ref:] + self.cross_attn(h, ctx)), dim=1)

        h = (per_frame(self.norm3(x)) * (1 + c_scale) + c_shift).view(b, n, d).type_as(x)
        ff = self.ffn(h)
        # Expand the gate to tokens so the block returns a fresh tensor, not a view (FSDP2).
        gate_tokens = c_gate.expand(b, frames, ctx.tokens_per_frame, d).reshape(b, n, d)
        return (x.float() + ff.float() * gate_tokens).type_as(x)


class Head(nn.Module):
    """AdaLN output norm and projection back to patches."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        patch = cfg.patch_size[0] * cfg.patch_size[1] * cfg.patch_size[2]
        self.norm = FP32LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.proj = nn.Linear(cfg.dim, cfg.out_channels * patch)
        self.modulation = nn.Parameter(torch.randn(1, 1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(
        self, x: torch.Tensor, temb_bfd: torch.Tensor, tokens_per_frame: int
    ) -> torch.Tensor:
        """x (B, Nv, D) video tokens; temb (B, Fv, D) per video frame -> (B, Nv, C*prod(patch))."""
        b, n, d = x.shape
        frames = n // tokens_per_frame
        shift, scale = (self.modulation + temb_bfd.float().unsqueeze(2)).unsqueeze(3).unbind(2)
        h = self.norm(x).float().view(b, frames, tokens_per_frame, d) * (1 + scale) + shift
        return self.proj(h.view(b, n, d).type_as(x))
