"""Text encoders: umT5 (real scales), a nano transformer (lpm-nano), MiniLM (optional)."""

from lpm.models.text.minilm import MiniLMTextEncoder, load_minilm, minilm_available
from lpm.models.text.nano import HashWordTokenizer, NanoTextEncoder, NanoTextEncoderConfig
from lpm.models.text.umt5 import UMT5TextEncoder, load_umt5, word_tokenizer

__all__ = [
    "HashWordTokenizer",
    "MiniLMTextEncoder",
    "NanoTextEncoder",
    "NanoTextEncoderConfig",
    "UMT5TextEncoder",
    "load_minilm",
    "load_umt5",
    "word_tokenizer",
    "minilm_available",
]
