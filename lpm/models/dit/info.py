"""Parameter, token, FLOP and KV-cache accounting for any `ModelConfig`, without building weights.

FLOPs count multiply-adds as 2 and cover every matmul, convolution and attention product of
one `LPMTransformer.forward`; `tests/dit/test_info.py` checks the formula against PyTorch's
`FlopCounterMode` on real forwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lpm.config import RESOLUTIONS, ModelConfig

#: Bytes a trained parameter holds on its GPU (summed over ranks under FSDP2): fp32 weights (4),
#: fp32 gradients (4), AdamW's two fp32 moments (8) and the fp32 EMA (4). Activations come on top.
TRAINING_BYTES_PER_PARAM = 20

#: Forward passes per online chunk: backbone steps at T0 and T1, the backbone's history write
#: (re-noised), the refiner's step at T2 and the refiner's history write (clean).
ONLINE_FORWARDS_PER_CHUNK = 5


@dataclass(kw_only=True, frozen=True)
class ForwardShape:
    """Token counts of one forward."""

    query_tokens: int
    """Tokens whose outputs are computed (video, plus references in an offline forward)."""
    key_tokens: int
    """Tokens each query attends to in self-attention (dense count)."""
    video_frames: int
    """Latent frames after temporal patching (AdaLN groups; audio/text cross-attention rows)."""
    ref_frames: int
    text_tokens: int
    audio_tokens: int
    """Audio tokens per stream (each layer hears one stream)."""
    tokens_per_frame: int


def count_parameters(cfg: ModelConfig) -> int:
    """Parameters of `LPMTransformer(cfg)`, built on the meta device (no memory)."""
    from lpm.models.dit.model import LPMTransformer

    with torch.device("meta"):
        model = LPMTransformer(cfg)
    return sum(p.numel() for p in model.parameters())


def forward_flops(cfg: ModelConfig, shape: ForwardShape) -> int:
    """FLOPs of one forward with the given token counts."""
    d, f = cfg.dim, cfg.ffn_dim
    patch = math.prod(cfg.patch_size)
    nq = shape.query_tokens
    nv = shape.video_frames * shape.tokens_per_frame
    lt, la = shape.text_tokens, shape.audio_tokens
    frames = shape.video_frames + shape.ref_frames
    per_layer = (
        2 * 4 * d * d * nq  # self-attention q, k, v, o
        + 4 * nq * shape.key_tokens * d  # QK^T and AV
        + 2 * 2 * d * d * nv  # cross-attention q and text o (video tokens only)
        + 2 * 2 * d * d * lt
        + 4 * nv * lt * d  # text k, v and attention
        + 2 * 2 * d * d * la
        + 2 * d * d * nv
        + 4 * nv * la * d  # audio k, v, o and attention
        + 2 * 2 * d * f * nq  # FFN
    )
    embed = (
        2 * cfg.in_channels * patch * d * nq  # patch embedding (video + references)
        + 2 * (cfg.freq_dim * d + d * d + 6 * d * d) * frames  # timestep MLP + projection
        + 2 * (cfg.text_dim * d + d * d) * lt
        + 2 * 2 * (cfg.audio_dim * d + d * d) * la  # both audio streams
    )
    head = 2 * d * cfg.out_channels * patch * nv
    return cfg.num_layers * per_layer + embed + head


def online_chunk_shape(
    cfg: ModelConfig, height: int, width: int, ref_images: int = 2
) -> ForwardShape:
    """One streaming step: a chunk attending to refs + a full sink and window."""
    s = cfg.tokens_per_frame(height, width)
    chunk = cfg.tokens_per_chunk(height, width)
    refs = ref_images * s
    cached = (cfg.sink_chunks + cfg.window_chunks) * chunk
    audio_window = 3 * cfg.fps  # 2 s history + 1 s current
    return ForwardShape(
        query_tokens=chunk,
        key_tokens=refs + cached + chunk,
        video_frames=cfg.latents_per_chunk // cfg.patch_size[0],
        ref_frames=0,
        text_tokens=cfg.text_len,
        audio_tokens=audio_window,
        tokens_per_frame=s,
    )


def kv_cache_bytes(
    cfg: ModelConfig, height: int, width: int, ref_images: int = 2, bytes_per=2
) -> int:
    """Bytes of one model's full streaming cache: keys + values of refs, sink and window."""
    s = cfg.tokens_per_frame(height, width)
    tokens = ref_images * s + (cfg.sink_chunks + cfg.window_chunks) * cfg.tokens_per_chunk(
        height, width
    )
    return cfg.num_layers * 2 * tokens * cfg.dim * bytes_per


def parse_resolution(text: str) -> tuple[str, tuple[int, int]]:
    """``"HxW"`` pixels, or a named resolution (``480p``, ``720p``) -> (label, (H, W))."""
    if text in RESOLUTIONS:
        return text, RESOLUTIONS[text]
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"resolution {text!r} is not HEIGHTxWIDTH in pixels (e.g. 320x576) or one of "
            f"{', '.join(RESOLUTIONS)}"
        )
    h, w = int(parts[0]), int(parts[1])
    return f"{h}x{w}", (h, w)


def model_report(
    cfg: ModelConfig, resolutions: dict[str, tuple[int, int]] | None = None
) -> dict[str, float | int | str]:
    """Everything `lpm model info` prints, as a flat dict, at ``resolutions`` (label -> (H, W);
    default 480p and 720p). Raises ``ValueError`` for a size the VAE and patching do not tile."""
    report: dict[str, float | int | str] = {
        "config": cfg.name,
        "params": count_parameters(cfg),
        "layers": cfg.num_layers,
        "dim": cfg.dim,
        "heads": cfg.num_heads,
        "attention": cfg.attention,
        "fps": cfg.fps,
        "latents_per_chunk": cfg.latents_per_chunk,
        "sink_chunks": cfg.sink_chunks,
        "window_chunks": cfg.window_chunks,
    }
    params = int(report["params"])
    report["weights_bf16_bytes"] = 2 * params
    report["training_state_bytes"] = TRAINING_BYTES_PER_PARAM * params
    for label, (h, w) in (resolutions or RESOLUTIONS).items():
        cfg.latent_grid(h, w)  # a size the VAE stride and patch do not tile: say so
        shape = online_chunk_shape(cfg, h, w)
        flops = forward_flops(cfg, shape)
        report[f"tokens_per_frame_{label}"] = shape.tokens_per_frame
        report[f"tokens_per_chunk_{label}"] = shape.query_tokens
        report[f"flops_per_chunk_{label}"] = flops
        report[f"flops_per_online_chunk_{label}"] = flops * ONLINE_FORWARDS_PER_CHUNK
        report[f"kv_cache_bytes_{label}"] = kv_cache_bytes(cfg, h, w)
        if cfg.attention == "chunk_causal":  # a backbone + refiner pair, each with its cache
            report[f"streaming_bytes_{label}"] = 2 * (2 * params + kv_cache_bytes(cfg, h, w))
    return report
