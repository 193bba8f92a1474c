"""LPMTransformer on tiny configs: modes, streaming cache, audio paths, references, backends."""

from __future__ import annotations

import copy

import pytest
import torch

from lpm.config import MODEL_CONFIGS, ModelConfig, get_model_config
from lpm.models.common.attention import attention, available_backends
from lpm.models.common.kv_cache import StreamingKVCache, kept_chunk_indices
from lpm.models.dit.model import LPMTransformer, References, TextCues

B, C, H, W = 2, 16, 4, 4


def tiny_cfg(**changes) -> ModelConfig:
    base = dict(
        num_layers=2,
        dim=48,
        num_heads=2,
        ffn_dim=64,
        freq_dim=32,
        text_dim=16,
        audio_dim=8,
        fps=8,
        sink_chunks=1,
        window_chunks=1,
    )
    base.update(changes)
    return get_model_config("lpm-nano").replace(**base)


def make_model(cfg: ModelConfig, audio_live: bool = True) -> LPMTransformer:
    model = LPMTransformer(cfg).eval()
    if audio_live:  # give the zero-initialised audio path weights so its masks matter
        for block in model.blocks:
            torch.nn.init.normal_(block.cross_attn.audio_v.weight, std=0.2)
    return model


def inputs(cfg: ModelConfig, chunks: int):
    f = chunks * cfg.latents_per_chunk
    x = torch.randn(B, C, f, H, W)
    per_chunk = torch.rand(B, chunks) * 1000
    t = per_chunk.repeat_interleave(cfg.latents_per_chunk, dim=1)
    frames = f * cfg.temporal_compression
    cond = dict(
        text=torch.randn(B, 5, cfg.text_dim),
        speak_audio=torch.randn(B, frames, cfg.audio_dim),
        listen_audio=torch.randn(B, frames, cfg.audio_dim),
    )
    refs = References(torch.randn(B, C, 3, H, W), (("first_frame", 0), ("global", 0), ("body", 2)))
    return x, t, cond, refs


def stream(model, cache, x, t, cond, refs):
    """Run chunk by chunk through the cache; audio stays whole, offset to each chunk's start."""
    cfg = model.cfg
    model.cache_references(refs, cache)
    out, per = [], cfg.latents_per_chunk
    for c in range(x.shape[2] // per):
        sl = slice(c * per, (c + 1) * per)
        offset = -c * cfg.frames_per_chunk
        out.append(
            model(
                x[:, :, sl],
                t[:, sl],
                attention="chunk_causal",
                kv_cache=cache,
                cache_write=True,
                audio_offset=offset,
                **cond,
            )
        )
    return torch.cat(out, dim=2)


@pytest.mark.parametrize("ordered", [0, 2])
@torch.no_grad()
def test_streaming_equals_full_chunk_causal_forward(ordered):
    cfg = tiny_cfg(speak_tokens_per_latent=ordered)
    model = make_model(cfg)
    x, t, cond, refs = inputs(cfg, chunks=4)
    full = model(x, t, references=refs, attention="chunk_causal", **cond)
    cache = StreamingKVCache(num_layers=cfg.num_layers, sink_chunks=0, window_chunks=None)
    streamed = stream(model, cache, x, t, cond, refs)
    assert (streamed - full).abs().max() <= 1e-5
    # chunk-causal really is causal: the future does not change the past
    x2 = x.clone()
    x2[:, :, -cfg.latents_per_chunk :] += 1
    full2 = model(x2, t, references=refs, attention="chunk_causal", **cond)
    past = slice(0, x.shape[2] - cfg.latents_per_chunk)
    assert torch.allclose(full2[:, :, past], full[:, :, past], atol=1e-6)
    assert not torch.allclose(full2, full, atol=1e-3)


@pytest.mark.parametrize(
    "sink,window,ordered", [(1, 1, 0), (0, 2, 0), (2, 1, 0), (1, 3, 0), (1, 1, 2)]
)
@torch.no_grad()
def test_streaming_with_eviction_equals_windowed_full_forward(sink, window, ordered):
    cfg = tiny_cfg(speak_tokens_per_latent=ordered)
    model = make_model(cfg)
    x, t, cond, refs = inputs(cfg, chunks=5)
    cache = StreamingKVCache(num_layers=cfg.num_layers, sink_chunks=sink, window_chunks=window)
    streamed = stream(model, cache, x, t, cond, refs)
    windowed = model(x, t, references=refs, attention="chunk_causal", window=(sink, window), **cond)
    assert (streamed - windowed).abs().max() <= 1e-5
    # the cache holds exactly the sink plus the window, and positions stay bounded
    assert [e.index for e in cache.kept] == kept_chunk_indices(5, sink, window)
    assert cache.next_frame_offset() == (sink + window) * cfg.latents_per_chunk
    # eviction really drops context once chunks fall out of the window
    full = model(x, t, references=refs, attention="chunk_causal", **cond)
    evicts = any(len(kept_chunk_indices(i, sink, window)) < i for i in range(5))
    assert evicts == (not torch.allclose(windowed, full, atol=1e-4))


@torch.no_grad()
def test_windowed_full_forward_without_eviction_equals_masked_forward():
    cfg = tiny_cfg()
    model = make_model(cfg)
    x, t, cond, refs = inputs(cfg, chunks=3)
    masked = model(x, t, references=refs, attention="chunk_causal", **cond)
    for window in [(0, None), (3, 1), (0, 3)]:
        windowed = model(x, t, references=refs, attention="chunk_causal", window=window, **cond)
        assert (windowed - masked).abs().max() <= 1e-5


def test_kept_chunk_indices_sink_and_window():
    assert kept_chunk_indices(0, 3, 2) == []
    assert kept_chunk_indices(4, 3, 2) == [0, 1, 2, 3]
    assert kept_chunk_indices(10, 3, 2) == [0, 1, 2, 8, 9]
    assert kept_chunk_indices(10, 0, 2) == [8, 9]
    assert kept_chunk_indices(3, 3, None) == [0, 1, 2]


@torch.no_grad()
def test_cache_memory_is_flat_over_a_long_stream():
    cfg = tiny_cfg(num_layers=1)
    model = make_model(cfg)
    x, t, cond, refs = inputs(cfg, chunks=1)
    cache = model.new_cache()
    model.cache_references(refs, cache)
    sizes = []
    for _ in range(12):
        model(x, t, attention="chunk_causal", kv_cache=cache, cache_write=True, **cond)
        sizes.append(cache.nbytes())
    full_from = cfg.sink_chunks + cfg.window_chunks - 1
    assert len(set(sizes[full_from:])) == 1
    assert cache.chunks_written == 12


@torch.no_grad()
def test_noisy_history_cache_matches_full_forward_on_renoised_history():
    """The backbone's cache holds history re-noised to sigma; the refiner's holds it clean."""
    cfg = tiny_cfg()
    model = make_model(cfg)
    per = cfg.latents_per_chunk
    x, _, cond, refs = inputs(cfg, chunks=3)
    noise = torch.randn_like(x)
    sigma = 0.3
    for history, s in (("noisy", sigma), ("clean", 0.0)):
        cache = model.new_cache(history=history, history_sigma=sigma)
        model.cache_references(refs, cache)
        for c in range(2):
            sl = slice(c * per, (c + 1) * per)
            model.write_history(
                x[:, :, sl],
                cache,
                noise=noise[:, :, sl],
                audio_offset=-c * cfg.frames_per_chunk,
                **cond,
            )
        t_now = torch.full((B,), 700.0)
        step = model(
            x[:, :, 2 * per :],
            t_now,
            attention="chunk_causal",
            kv_cache=cache,
            audio_offset=-2 * cfg.frames_per_chunk,
            **cond,
        )
        hist = (1 - s) * x[:, :, : 2 * per] + s * noise[:, :, : 2 * per]
        seq = torch.cat((hist, x[:, :, 2 * per :]), dim=2)
        t_seq = torch.cat((torch.full((B, 2 * per), 1000 * s), torch.full((B, per), 700.0)), dim=1)
        full = model(seq, t_seq, references=refs, attention="chunk_causal", **cond)
        assert (step - full[:, :, 2 * per :]).abs().max() <= 1e-5
        assert cache.chunks_written == 2  # a read-only step does not write


@pytest.mark.parametrize("ordered", [0, 2])
def test_zero_init_audio_is_identity_until_trained(ordered):
    cfg = tiny_cfg(speak_tokens_per_latent=ordered)
    model = LPMTransformer(cfg)
    x, t, cond, refs = inputs(cfg, chunks=2)
    other = dict(
        cond,
        speak_audio=torch.randn_like(cond["speak_audio"]) * 5,
        listen_audio=torch.randn_like(cond["listen_audio"]) * 5,
    )
    with torch.no_grad():
        a = model(x, t, references=refs, **cond)
        b = model(x, t, references=refs, **other)
        no_audio = model(x, t, references=refs, text=cond["text"])
    assert torch.equal(a, b) and torch.equal(a, no_audio)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = (model(x, t, references=refs, **cond) - torch.randn_like(x)).pow(2).mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        a = model(x, t, references=refs, **cond)
        b = model(x, t, references=refs, **other)
    assert (a - b).abs().max() > 1e-4


@torch.no_grad()
def test_audio_windows_are_local_and_streams_interleave():
    cfg = tiny_cfg(num_layers=2, fps=16)  # 4 latent frames per chunk, 16 video frames
    model = make_model(cfg)
    assert [cfg.audio_stream(i) for i in range(4)] == ["speak", "listen", "speak", "listen"]
    assert model.blocks[0].cross_attn.stream == "speak"
    assert model.blocks[1].cross_attn.stream == "listen"
    x, t, cond, _ = inputs(cfg, chunks=2)  # 8 latent frames = 32 video frames
    base = model(x, t, listen_audio=cond["listen_audio"])
    # listen audio enters only in the last layer, after which tokens do not mix: a change at
    # video frame 31 reaches latent frames whose listen window covers it, and no others.
    changed = cond["listen_audio"].clone()
    changed[:, 31] += 10
    out = model(x, t, listen_audio=changed)
    diff = (out - base).abs().amax(dim=(0, 1, 3, 4))
    back, fwd = cfg.listen_window
    for f in range(8):
        start, end = 4 * f - back, 4 * f + 3 + fwd
        assert (diff[f] > 0) == (start <= 31 <= end), f
    # speak audio is local: with one (speak) layer, frame 0 ignores audio far away
    one = make_model(tiny_cfg(num_layers=1, fps=16))
    sp = cond["speak_audio"].clone()
    base = one(x, t, speak_audio=sp)
    sp[:, 20:] += 10
    out = one(x, t, speak_audio=sp)
    diff = (out - base).abs().amax(dim=(0, 1, 3, 4))
    back, fwd = cfg.speak_window
    for f in range(8):
        assert (diff[f] > 0) == (4 * f + 3 + fwd >= 20), f


@torch.no_grad()
def test_ordered_speak_tokens_hear_the_order_within_a_latent_frame():
    x, t, cond, _ = inputs(tiny_cfg(fps=16), chunks=2)  # 8 latent frames = 32 video frames
    sp = cond["speak_audio"]
    swapped = sp.clone()
    swapped[:, [13, 14]] = sp[:, [14, 13]]  # two frames of latent frame 3's span
    back, fwd = tiny_cfg().speak_window
    sees = [f for f in range(8) if 4 * f - back <= 13 and 4 * f + 3 + fwd >= 14]
    for ordered in (0, 2):
        model = make_model(tiny_cfg(num_layers=1, fps=16, speak_tokens_per_latent=ordered))
        diff = (model(x, t, speak_audio=swapped) - model(x, t, speak_audio=sp)).abs()
        diff = diff.amax(dim=(0, 1, 3, 4))
        for f in range(8):
            # as a set, a window that holds both frames cannot tell them apart; in order it can
            assert (diff[f] > 1e-6) == (ordered > 0 and f in sees), (ordered, f)
    # ordered tokens stay local: audio from frame 20 on reaches only windows that include it
    model = make_model(tiny_cfg(num_layers=1, fps=16, speak_tokens_per_latent=2))
    far = sp.clone()
    far[:, 20:] += 10
    diff = (model(x, t, speak_audio=far) - model(x, t, speak_audio=sp)).abs()
    diff = diff.amax(dim=(0, 1, 3, 4))
    for f in range(8):
        assert (diff[f] > 0) == (4 * f + 3 + fwd >= 20), f


@torch.no_grad()
def test_references_any_subset_and_types_are_told_apart():
    cfg = tiny_cfg()
    model = make_model(cfg)
    x, t, cond, _ = inputs(cfg, chunks=1)
    lat = torch.randn(B, C, 14, H, W)
    kinds = (
        [("first_frame", 0), ("global", 0)]
        + [("body", i) for i in range(4)]
        + [("expression", i) for i in range(8)]
    )
    outs = {}
    for n in (0, 1, 2, 6, 14):
        refs = References(lat[:, :, :n], tuple(kinds[:n])) if n else None
        outs[n] = model(x, t, references=refs, **cond)
        assert outs[n].shape == x.shape and torch.isfinite(outs[n]).all()
    assert not torch.allclose(outs[0], outs[2])
    # same images, different declared types: RoPE offsets make them differ
    a = model(x, t, references=References(lat[:, :, :2], (("body", 0), ("body", 1))), **cond)
    b = model(x, t, references=References(lat[:, :, :2], (("body", 1), ("body", 0))), **cond)
    c = model(
        x, t, references=References(lat[:, :, :2], (("expression", 0), ("expression", 1))), **cond
    )
    assert not torch.allclose(a, b, atol=1e-5) and not torch.allclose(a, c, atol=1e-5)


def test_references_validate():
    with pytest.raises(ValueError, match="unknown reference type"):
        References(torch.zeros(1, C, 1, H, W), (("face", 0),))
    with pytest.raises(ValueError, match="subtype 4"):
        References(torch.zeros(1, C, 1, H, W), (("body", 4),))
    with pytest.raises(ValueError, match="kinds"):
        References(torch.zeros(1, C, 2, H, W), (("global", 0),))
    model = LPMTransformer(tiny_cfg())
    with pytest.raises(ValueError, match="resize references"):
        model(
            torch.zeros(1, C, 2, H, W),
            torch.zeros(1),
            references=References(torch.zeros(1, C, 1, 2 * H, W), (("global", 0),)),
        )


@torch.no_grad()
def test_backends_match_sdpa():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 40, 3, 16) for _ in range(3))
    mask = torch.rand(40, 40) > 0.4
    mask[:, 0] = True
    for backend in available_backends():
        for m in (None, mask):
            ref = attention(q, k, v, m, "sdpa")
            assert (attention(q, k, v, m, backend) - ref).abs().max() <= 1e-5, backend
    cfg = tiny_cfg()
    x, t, cond, refs = inputs(cfg, chunks=2)
    model = make_model(cfg)
    for backend in available_backends():
        other = make_model(cfg.replace(attention_backend=backend))
        other.load_state_dict(model.state_dict())
        for mode in ("bidirectional", "chunk_causal"):
            ref = model(x, t, references=refs, attention=mode, **cond)
            out = other(x, t, references=refs, attention=mode, **cond)
            assert (out - ref).abs().max() <= 1e-5, (backend, mode)


@torch.no_grad()
def test_condition_dropout_masks_per_sample():
    cfg = tiny_cfg()
    model = make_model(cfg)
    x, t, cond, refs = inputs(cfg, chunks=1)
    drop = torch.tensor([True, False])
    out = model(x, t, references=refs, drop_text=drop, drop_audio=drop, **cond)
    full = model(x, t, references=refs, **cond)
    bare = model(x, t, references=refs)
    assert torch.allclose(out[0], bare[0], atol=1e-6)
    assert torch.allclose(out[1], full[1], atol=1e-6)


def test_text_cues_reach_their_own_frames_only_and_drop_with_the_text():
    cfg = tiny_cfg(text_cues=True)
    model = make_model(cfg)
    with torch.no_grad():  # give the cue paths weights (the pooled one starts at zero)
        model.cue_type.normal_(0, 1.0)
        model.cue_embed.out.fc2.weight.normal_(0, 0.5)
    x, t, cond, refs = inputs(cfg, chunks=3)
    f = x.shape[2]
    feats = torch.randn(B, 2, 5, cfg.text_dim)
    mask = torch.ones(B, 2, 5, dtype=torch.bool)
    index = torch.full((B, f), -1)
    index[0, 1], index[0, 2] = 0, 1
    cued = model(x, t, references=refs, cues=TextCues(feats, mask, index), **cond)
    plain = model(x, t, references=refs, **cond)
    change = (cued - plain).abs().amax(dim=(1, 3, 4))  # (B, F)
    assert change[1].max() < 1e-5  # sample 1 has no cue (masked keys: rounding only)
    # Cued frames change most; the rest only through self-attention, far less.
    assert change[0, 1:3].min() > 3 * max(change[0, 0], change[0, 3:].max())
    # No cue anywhere is exactly no cues; dropping the text drops the cues.
    none = model(x, t, references=refs, cues=TextCues(feats, mask, torch.full((B, f), -1)), **cond)
    assert torch.allclose(none, plain, atol=1e-5)
    drop = torch.tensor([True, True])
    dropped = model(
        x, t, references=refs, cues=TextCues(feats, mask, index), drop_text=drop, **cond
    )
    assert torch.allclose(dropped, model(x, t, references=refs, drop_text=drop, **cond), atol=1e-6)
    # A model without the cue path ignores cues; a bad index is refused.
    base = make_model(tiny_cfg())
    assert torch.equal(base(x, t, cues=TextCues(feats, mask, index), **cond), base(x, t, **cond))
    with pytest.raises(ValueError, match="cue index must be"):
        model(x, t, cues=TextCues(feats, mask, index[:, :2]), **cond)
    with pytest.raises(ValueError, match="beyond"):
        TextCues(feats, mask, index + 2)


def test_cue_action_head_names_labelled_cues_in_training_only():
    cfg = tiny_cfg(text_cues=True, cue_action_classes=4)
    model = make_model(cfg)
    with torch.no_grad():  # the pooled cue path starts at zero
        model.cue_embed.out.fc2.weight.normal_(0, 0.5)
    x, t, cond, refs = inputs(cfg, chunks=2)
    f = x.shape[2]
    feats, mask = torch.randn(B, 2, 5, cfg.text_dim), torch.ones(B, 2, 5, dtype=torch.bool)
    index = torch.zeros((B, f), dtype=torch.int64)
    labels = torch.tensor([[3, -1], [0, 1]])
    cues = TextCues(feats, mask, index, labels)
    out = model(x, t, references=refs, cues=cues, **cond)
    # the labelled cues' cross-entropy, from the pooled cue vectors through the head
    vec = model.cue_embed(feats, mask).flatten(0, 1)
    keep = labels.flatten() >= 0
    want = torch.nn.functional.cross_entropy(
        model.cue_action_head(vec)[keep], labels.flatten()[keep]
    )
    assert torch.allclose(model.cue_action_loss, want, atol=1e-6)
    model.cue_action_loss.backward()
    assert model.cue_action_head.weight.grad.abs().sum() > 0
    assert model.cue_embed.token.fc1.weight.grad.abs().sum() > 0
    # the head does not change the prediction; unlabelled cues give no loss to learn from
    plain = model(x, t, references=refs, cues=TextCues(feats, mask, index), **cond)
    assert torch.equal(out, plain) and model.cue_action_loss is None
    model(x, t, references=refs, cues=TextCues(feats, mask, index, torch.full((B, 2), -1)), **cond)
    assert float(model.cue_action_loss.detach()) == 0.0
    with torch.no_grad():
        model(x, t, references=refs, cues=cues, **cond)
    assert model.cue_action_loss is None
    with pytest.raises(ValueError, match="cue actions must be"):
        TextCues(feats, mask, index, labels[:, :1])
    with pytest.raises(ValueError, match="only with text_cues"):
        tiny_cfg(cue_action_classes=4)


def test_determinism_state_dict_round_trip_and_gradients():
    cfg = tiny_cfg()
    x, t, cond, refs = inputs(cfg, chunks=2)
    torch.manual_seed(3)
    a = LPMTransformer(cfg)
    torch.manual_seed(3)
    b = LPMTransformer(cfg)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    c = LPMTransformer(cfg)
    c.load_state_dict(copy.deepcopy(a.state_dict()))
    with torch.no_grad():
        assert torch.equal(a(x, t, references=refs, **cond), c(x, t, references=refs, **cond))
    out = a(x, t, references=refs, **cond)
    out.pow(2).mean().backward()
    no_grad = [n for n, p in a.named_parameters() if p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in a.parameters())


def test_meta_device_build_for_every_config():
    for name, cfg in MODEL_CONFIGS.items():
        with torch.device("meta"):
            model = LPMTransformer(cfg)
        assert all(p.is_meta for p in model.parameters()), name


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="num_heads"):
        get_model_config("lpm-nano").replace(num_heads=5)
    with pytest.raises(ValueError, match="chunk_seconds"):
        get_model_config("lpm-nano").replace(fps=25)
    with pytest.raises(ValueError, match="unknown model config"):
        get_model_config("lpm-42b")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"name": "x", "bogus": 1})
    cfg = get_model_config("lpm-1.3b")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="resolution"):
        cfg.tokens_per_chunk(481, 832)


def test_bad_inputs_are_clear():
    model = LPMTransformer(tiny_cfg())
    with pytest.raises(ValueError, match="x must be"):
        model(torch.zeros(1, 3, 2, H, W), torch.zeros(1))
    with pytest.raises(ValueError, match="per-frame timestep"):
        model(torch.zeros(1, C, 2, H, W), torch.zeros(1, 3))
    with pytest.raises(ValueError, match="chunk_causal"):
        model(
            torch.zeros(1, C, 2, H, W),
            torch.zeros(1),
            attention="bidirectional",
            kv_cache=model.new_cache(),
        )


@torch.no_grad()
def test_bf16_model_streams():
    cfg = tiny_cfg()
    model = make_model(cfg).to(torch.bfloat16)
    x, t, cond, refs = inputs(cfg, chunks=2)
    cond = {k: v.to(torch.bfloat16) for k, v in cond.items()}
    refs = References(refs.latents.to(torch.bfloat16), refs.kinds)
    cache = model.new_cache()
    out = stream(model, cache, x.to(torch.bfloat16), t, cond, refs)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_widened_latent_channels_start_as_the_old_model_and_predict_zero_on_the_new_ones():
    from lpm.train.trainer import widen_latent_channels

    torch.manual_seed(5)
    old_cfg = tiny_cfg()
    new_cfg = tiny_cfg(in_channels=C + 4, out_channels=C + 4)
    old = make_model(old_cfg)
    wide = LPMTransformer(new_cfg).eval()
    wide.load_state_dict(widen_latent_channels(old.state_dict(), old_cfg, new_cfg))
    x, t, cond, refs = inputs(old_cfg, 1)
    extra = torch.randn(B, 4, *x.shape[2:])
    refs_wide = References(torch.cat([refs.latents, torch.randn(B, 4, *refs.latents.shape[2:])], 1),
                           refs.kinds)  # fmt: skip
    with torch.no_grad():
        want = old(x, t, references=refs, **cond)
        got = wide(torch.cat([x, extra], 1), t, references=refs_wide, **cond)
    torch.testing.assert_close(got[:, :C], want)  # the new inputs are not read yet
    assert torch.equal(got[:, C:], torch.zeros_like(got[:, C:]))  # nor predicted
    with pytest.raises(ValueError, match="same number of input and output"):
        widen_latent_channels(old.state_dict(), old_cfg, tiny_cfg(in_channels=C + 4))
