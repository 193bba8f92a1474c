"""A small trainable text encoder for lpm-nano, with a built-in hashing word tokenizer.

Shape legend
    B  batch (prompts)
    L  padded token length (``config.max_length``)
    D  embedding width (``config.dim``)

Tokenizer: text is lowercased and split into words (letters/digits/apostrophes) and single
punctuation marks; each word maps to ``2 + crc32(word) % (vocab_size - 2)``, id 0 is padding and
id 1 ends every prompt. No vocabulary file is needed, so the encoder is fully described by its
config and weights; hash collisions are rare at the prompt vocabularies lpm-nano sees.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["HashWordTokenizer", "NanoTextEncoder", "NanoTextEncoderConfig"]

PAD_ID = 0
EOS_ID = 1
_WORD_RE = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


@dataclass(kw_only=True)
class NanoTextEncoderConfig:
    """Geometry of the nano text encoder."""

    vocab_size: int = 4096
    """Hash buckets including the 2 reserved ids (pad, end)."""
    dim: int = 128
    """Embedding width D."""
    num_layers: int = 2
    """Transformer encoder layers."""
    num_heads: int = 4
    """Attention heads; must divide dim."""
    ffn_mult: int = 4
    """FFN hidden width as a multiple of dim."""
    max_length: int = 64
    """Padded token length L; longer prompts are truncated (the end token is kept)."""
    dropout: float = 0.0
    """Dropout inside the transformer layers during training."""

    def __post_init__(self) -> None:
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3, got {self.vocab_size}")
        if self.dim < 1 or self.num_heads < 1 or self.dim % self.num_heads:
            raise ValueError(f"dim ({self.dim}) must be a positive multiple of num_heads")
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.ffn_mult < 1:
            raise ValueError(f"ffn_mult must be >= 1, got {self.ffn_mult}")
        if self.max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {self.max_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class HashWordTokenizer:
    """Lowercased words → hashed ids (stable across processes and machines)."""

    def __init__(self, vocab_size: int, max_length: int) -> None:
        self.vocab_size = vocab_size
        self.max_length = max_length

    def words(self, text: str) -> list[str]:
        return _WORD_RE.findall(text.lower())

    def token_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 2)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids (B, L) int64 and bool mask (B, L)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        ids = torch.full((len(texts), self.max_length), PAD_ID, dtype=torch.long)
        for i, text in enumerate(texts):
            row = [self.token_id(w) for w in self.words(text)][: self.max_length - 1]
            row.append(EOS_ID)
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != PAD_ID


class NanoTextEncoder(nn.Module):
    """Hash tokenizer + small pre-norm transformer: texts → ((B, L, D), (B, L) mask)."""

    def __init__(self, config: NanoTextEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or NanoTextEncoderConfig()
        self.tokenizer = HashWordTokenizer(cfg.vocab_size, cfg.max_length)
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.dim, padding_idx=PAD_ID)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_length, cfg.dim))
        layer = nn.TransformerEncoderLayer(
            d_model=cfg.dim,
            nhead=cfg.num_heads,
            dim_feedforward=cfg.ffn_mult * cfg.dim,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.layers = nn.TransformerEncoder(
            layer, num_layers=cfg.num_layers, enable_nested_tensor=False
        )
        self.norm_out = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        with torch.no_grad():
            self.token_embed.weight[PAD_ID].zero_()

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def forward(self, ids_bl: torch.Tensor, mask_bl: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) and bool mask (B, L) → embeddings (B, L, D), zero where masked."""
        x_bld = self.token_embed(ids_bl) + self.pos_embed[:, : ids_bl.shape[1]]
        x_bld = self.layers(x_bld, src_key_padding_mask=~mask_bl)
        x_bld = self.norm_out(x_bld)
        return x_bld * mask_bl[..., None].to(x_bld.dtype)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts → (embeddings (B, L, D) zero-padded, bool mask (B, L)). Differentiable."""
        ids_bl, mask_bl = self.tokenizer(texts)
        device = self.pos_embed.device
        mask_bl = mask_bl.to(device)
        return self.forward(ids_bl.to(device), mask_bl), mask_bl
