"""umT5 text encoder (Wan2.1's text tower) loaded from a local directory.

Shape legend
    B  batch (prompts)
    L  padded token length (``max_length``; Wan uses 512)
    D  embedding width (umT5-XXL: 4096)

Wan's convention: prompts are tokenized with padding to L, encoded with the attention mask, and
the embeddings past each prompt's real length are set to zero.

Expected local directory layout for `load_umt5`::

    <path>/config.json            UMT5 config (``model_type: umt5``)
    <path>/model.safetensors      weights (or a sharded set with model.safetensors.index.json)
    <path>/tokenizer.json         fast tokenizer (or spiece.model), tokenizer_config.json,
                                  special_tokens_map.json

A Wan diffusers root with ``<path>/text_encoder/`` and ``<path>/tokenizer/`` subfolders is
accepted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["UMT5TextEncoder", "load_umt5", "word_tokenizer"]

_TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


class UMT5TextEncoder(nn.Module):
    """umT5 encoder + tokenizer: `encode(texts)` → ((B, L, D) embeddings, (B, L) mask)."""

    def __init__(self, model: nn.Module, tokenizer, *, max_length: int = 512) -> None:
        super().__init__()
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def dim(self) -> int:
        """Embedding width D."""
        return int(self.model.config.d_model)

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask, both (B, L); prompts longer than L are truncated."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not a single string")
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"].bool()

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (B, L, D), zero past each prompt's length, and the bool mask (B, L)."""
        device = next(self.model.parameters()).device
        ids_bl, mask_bl = self.tokenize(texts)
        ids_bl, mask_bl = ids_bl.to(device), mask_bl.to(device)
        hidden_bld = self.model(input_ids=ids_bl, attention_mask=mask_bl).last_hidden_state
        return hidden_bld * mask_bl[..., None].to(hidden_bld.dtype), mask_bl


def _resolve(root: Path, sub: str, marker: Sequence[str]) -> Path:
    if any((root / m).is_file() for m in marker):
        return root
    if any((root / sub / m).is_file() for m in marker):
        return root / sub
    return root


def load_umt5(
    path: str | Path,
    *,
    max_length: int = 512,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> UMT5TextEncoder:
    """Load `UMT5EncoderModel` and its tokenizer from a local directory (module docstring).

    Never contacts a model hub. Raises `FileNotFoundError` naming what is missing.
    """
    from transformers import AutoTokenizer, UMT5EncoderModel

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"umT5 directory {root} does not exist; pass the local folder holding config.json, "
            "model.safetensors and the tokenizer files"
        )
    model_dir = _resolve(root, "text_encoder", ("config.json",))
    tok_dir = _resolve(root, "tokenizer", _TOKENIZER_FILES)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {root} (nor in {root / 'text_encoder'})")
    if not any(model_dir.glob("*.safetensors")) and not any(model_dir.glob("*.bin")):
        raise FileNotFoundError(
            f"no weights in {model_dir}: expected model.safetensors (or a sharded set)"
        )
    if not any((tok_dir / f).is_file() for f in _TOKENIZER_FILES):
        raise FileNotFoundError(
            f"no tokenizer in {root}: expected tokenizer.json or spiece.model (in the folder "
            "or its tokenizer/ subfolder)"
        )
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    model = UMT5EncoderModel.from_pretrained(model_dir, local_files_only=True, dtype=dtype)
    return UMT5TextEncoder(model.eval().to(device), tokenizer, max_length=max_length)


def word_tokenizer(words: Sequence[str]):
    """A whitespace word-level tokenizer with umT5's special tokens (pad 0, ``</s>`` 1, unk 2)
    and umT5's ``</s>`` after every prompt: for random-weight umT5 models (tests, speed runs),
    since the real SentencePiece vocabulary ships with the real weights only."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
