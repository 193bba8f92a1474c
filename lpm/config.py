"""Typed configs for every LPM scale, and the registry of named model configs.

One class, `ModelConfig`, describes the DiT at every scale (DESIGN §1); only the numbers differ.
All geometry that code needs (tokens per frame, latent frames per chunk, cache length) is
derived here as properties, never hard-coded elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

AttentionMode = Literal["bidirectional", "chunk_causal"]
AttentionBackend = Literal["sdpa", "flex", "flash"]

#: Reference-image types and how many subtypes each may have (DESIGN §2).
REFERENCE_TYPES: dict[str, int] = {"first_frame": 1, "global": 1, "body": 4, "expression": 8}
#: Body-view subtypes, in subtype order.
BODY_VIEWS: tuple[str, ...] = ("front", "left", "right", "back")


@dataclass(kw_only=True, frozen=True)
class ModelConfig:
    """Geometry and conditioning of one `LPMTransformer`."""

    name: str
    """Registry name, e.g. ``lpm-nano``."""
    in_channels: int = 16
    """Latent channels entering the patch embedding (Wan2.1 VAE: 16)."""
    out_channels: int = 16
    """Latent channels predicted (velocity)."""
    patch_size: tuple[int, int, int] = (1, 2, 2)
    """Patch size (frames, height, width) in latent units."""
    dim: int = 1536
    """Hidden width of every block."""
    num_heads: int = 12
    """Attention heads; ``dim`` must divide evenly."""
    ffn_dim: int = 8960
    """Hidden width of the feed-forward network."""
    num_layers: int = 30
    """Number of transformer blocks. Even layers hear speak audio, odd layers listen audio."""
    freq_dim: int = 256
    """Width of the sinusoidal timestep features."""
    text_dim: int = 4096
    """Width of the text encoder's token features (umT5-XXL: 4096)."""
    text_len: int = 512
    """Text tokens per prompt after padding (umT5: 512)."""
    audio_dim: int = 1024
    """Width of the audio encoder's per-frame features."""
    eps: float = 1e-6
    """Epsilon of every LayerNorm and RMSNorm."""
    qk_norm: bool = True
    """RMSNorm on queries and keys over the full width, as in Wan2.1."""
    cross_attn_norm: bool = True
    """Affine LayerNorm before cross-attention, as in Wan2.1."""
    rope_theta: float = 10000.0
    """Base of the rotary position frequencies."""
    fps: int = 24
    """Video frames per second."""
    temporal_compression: int = 4
    """Video frames per latent frame (the VAE's temporal stride)."""
    spatial_compression: int = 8
    """Pixels per latent pixel (the VAE's spatial stride)."""
    chunk_seconds: float = 1.0
    """Length of one streaming chunk in seconds (1 s in the paper)."""
    speak_window: tuple[int, int] = (4, 4)
    """Speak audio seen by a latent frame: (frames before its span, after it), in video frames."""
    speak_tokens_per_latent: int = 0
    """How speak audio becomes cross-attention tokens. 0: one token per video frame, attended as
    a set within ``speak_window`` (which frame of the window a token came from is lost). n > 0:
    n tokens per latent frame, made by an MLP from the features of that frame's window **in
    order**, so a latent frame holding 4 video frames can tell which sound goes with which of
    them (docs/architecture.md, "Ordered speak audio")."""
    speak_token_width: int = 16
    """With ``speak_tokens_per_latent`` > 0: width each audio frame is projected to before the
    frames of a window are concatenated."""
    text_cues: bool = False
    """Timed text cues (docs/architecture.md, "Timed text cues"): besides the prompt, the text
    cross-attention of each latent frame also sees the tokens of the cue active at that frame
    (a short timed instruction such as "... nods."), marked by a learned cue embedding."""
    cue_action_classes: int = 0
    """With ``text_cues``: n > 0 adds a linear head that names, from each cue's modulation
    vector, which of n labelled actions it asks for (0: none). Training adds its cross-entropy
    (`TrainRecipe.cue_action_weight`) on cues with a labelled action, so that cues asking for
    different motions ("... to the left", "... to the right") get different vectors; the head
    is not used in generation (docs/architecture.md, "Timed text cues")."""
    listen_window: tuple[int, int] = (48, 8)
    """Listen audio seen by a latent frame: (frames before, frames after), in video frames."""
    reference_offsets: dict[str, int] = field(
        default_factory=lambda: {"first_frame": -1, "global": -4, "body": -8, "expression": -16}
    )
    """Temporal RoPE position of each reference type; a subtype s sits at ``offset - s``."""
    attention: AttentionMode = "bidirectional"
    """Default self-attention mode: Base LPM is bidirectional, Online LPM chunk-causal."""
    attention_backend: AttentionBackend = "sdpa"
    """Attention kernel; every backend must match SDPA."""
    sink_chunks: int = 3
    """Streaming KV cache: the first N chunks are kept for ever (attention sink)."""
    window_chunks: int = 2
    """Streaming KV cache: the last M chunks before the current one are kept."""

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim={self.head_dim} must be even and at least 6 for 3D RoPE")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size={self.patch_size} must be three positive integers")
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers} must be at least 1")
        frames_per_chunk = self.fps * self.chunk_seconds
        if frames_per_chunk != int(frames_per_chunk) or int(frames_per_chunk) % (
            self.temporal_compression * self.patch_size[0]
        ):
            raise ValueError(
                f"chunk_seconds={self.chunk_seconds} at fps={self.fps} gives {frames_per_chunk} "
                f"frames, which must be a whole multiple of temporal_compression*patch_t="
                f"{self.temporal_compression * self.patch_size[0]}"
            )
        if self.cue_action_classes < 0 or (self.cue_action_classes and not self.text_cues):
            raise ValueError(
                f"cue_action_classes={self.cue_action_classes} must be >= 0, and > 0 only with "
                "text_cues=true (it classifies the cues)"
            )
        for name in ("speak_window", "listen_window"):
            window = getattr(self, name)
            if len(window) != 2 or min(window) < 0:
                raise ValueError(f"{name}={window} must be two non-negative frame counts")
        if self.speak_tokens_per_latent < 0 or self.speak_token_width < 1:
            raise ValueError(
                f"speak_tokens_per_latent={self.speak_tokens_per_latent} must be >= 0 and "
                f"speak_token_width={self.speak_token_width} >= 1"
            )
        missing = set(REFERENCE_TYPES) - set(self.reference_offsets)
        if missing:
            raise ValueError(f"reference_offsets lacks {sorted(missing)}")
        if self.attention not in ("bidirectional", "chunk_causal"):
            raise ValueError(f"attention={self.attention!r} must be bidirectional|chunk_causal")
        if self.attention_backend not in ("sdpa", "flex", "flash"):
            raise ValueError(f"attention_backend={self.attention_backend!r} is not sdpa|flex|flash")
        if self.sink_chunks < 0 or self.window_chunks < 1:
            raise ValueError("sink_chunks must be >= 0 and window_chunks >= 1")

    # ---- derived geometry -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def frames_per_chunk(self) -> int:
        """Video frames in one streaming chunk."""
        return int(self.fps * self.chunk_seconds)

    @property
    def latents_per_chunk(self) -> int:
        """Latent frames in one streaming chunk (before temporal patching)."""
        return self.frames_per_chunk // self.temporal_compression

    def latent_grid(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) for a video of ``height`` x ``width`` pixels."""
        s = self.spatial_compression
        ph, pw = self.patch_size[1:]
        if height % (s * ph) or width % (s * pw):
            raise ValueError(
                f"resolution {height}x{width} must be a multiple of {s * ph}x{s * pw} "
                f"(VAE stride {s} times patch size {ph}x{pw})"
            )
        return height // s, width // s

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Transformer tokens per latent frame at ``height`` x ``width`` pixels."""
        h, w = self.latent_grid(height, width)
        return (h // self.patch_size[1]) * (w // self.patch_size[2])

    def tokens_per_chunk(self, height: int, width: int) -> int:
        """Transformer tokens in one 1-s (``chunk_seconds``) chunk."""
        return self.tokens_per_frame(height, width) * self.latents_per_chunk // self.patch_size[0]

    def audio_stream(self, layer: int) -> Literal["speak", "listen"]:
        """Interleaved dual audio: even layers hear speak audio, odd layers listen audio."""
        return "speak" if layer % 2 == 0 else "listen"

    # ---- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown ModelConfig fields {sorted(unknown)}; known: {sorted(known)}"
            )
        data = dict(data)
        for key in ("patch_size", "speak_window", "listen_window"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _online(base: ModelConfig) -> ModelConfig:
    return base.replace(name=f"{base.name}-online", attention="chunk_causal")


_LPM_17B = ModelConfig(
    name="lpm-17b",
    dim=5120,
    num_heads=40,
    ffn_dim=13824,
    num_layers=40,
    text_dim=4096,
    audio_dim=1024,
)
_LPM_1_3B = ModelConfig(
    name="lpm-1.3b",
    dim=1536,
    num_heads=12,
    ffn_dim=8960,
    num_layers=30,
    text_dim=4096,
    audio_dim=1024,
)
_LPM_NANO = ModelConfig(
    name="lpm-nano",
    in_channels=16,
    out_channels=16,
    dim=192,
    num_heads=3,
    ffn_dim=768,
    num_layers=8,
    freq_dim=128,
    text_dim=128,
    text_len=64,
    audio_dim=320,
)

MODEL_CONFIGS: dict[str, ModelConfig] = {
    c.name: c for base in (_LPM_17B, _LPM_1_3B, _LPM_NANO) for c in (base, _online(base))
}

#: Resolutions (height, width) reported by `lpm model info`.
RESOLUTIONS: dict[str, tuple[int, int]] = {"480p": (480, 832), "720p": (720, 1280)}


def get_model_config(name: str) -> ModelConfig:
    """The named config; raises ``ValueError`` listing the known names otherwise."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        raise ValueError(
            f"unknown model config {name!r}; choose one of {sorted(MODEL_CONFIGS)}"
        ) from None
