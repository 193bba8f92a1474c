"""StreamingSession: pipelined == sequential, chunk-boundary conditions, flat memory, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lpm.inference.chunk_step import ChunkStepper, OnlineSchedule
from lpm.inference.streaming import StreamingSession, _AudioBuffer
from lpm.models.dit.model import LPMTransformer
from tests.inference.test_pipeline import face, tiny_bundle, tone


def online_bundle(decoder: str = "light", refiner: bool = True, text_cues: bool = False):
    bundle = tiny_bundle(decoder=decoder, text_cues=text_cues)
    cfg = bundle.cfg.replace(
        name="tiny-online", attention="chunk_causal", sink_chunks=1, window_chunks=1
    )
    backbone = LPMTransformer(cfg)
    backbone.load_state_dict(bundle.transformer.state_dict())
    for block in backbone.blocks:  # make audio matter, so audio routing is exercised
        torch.nn.init.normal_(block.cross_attn.audio_v.weight, std=0.3)
    bundle.transformer = backbone
    if refiner:
        bundle.refiner = LPMTransformer(cfg)
        bundle.refiner.load_state_dict(backbone.state_dict())
    return bundle


def session(bundle, **kw):
    s = StreamingSession(bundle, face(), prompt="hello", seed=0, **kw)
    s.push_audio("speak", tone(4.0))
    return s


def test_pipelined_stream_equals_sequential_stream():
    bundle = online_bundle()
    a = [c.frames for c in session(bundle).chunks(5)]
    b = [c.frames for c in session(bundle).chunks(5, pipelined=True, lookahead=1)]
    assert len(a) == len(b) == 5
    assert all(x.shape == (24, 32, 32, 3) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_vae_decoder_stream_and_no_refiner():
    bundle = online_bundle(decoder="vae", refiner=False)
    chunks = list(session(bundle).chunks(2))
    assert [c.frames.shape[0] for c in chunks] == [24, 24]
    assert chunks[0].timings["refiner"] < 0.05


def test_prompt_and_audio_changes_apply_at_chunk_boundaries():
    bundle = online_bundle()
    base = session(bundle)
    other = session(bundle)
    first = [base.step(), other.step()]
    assert np.array_equal(first[0].frames, first[1].frames)
    other.set_prompt("a completely different prompt")
    a, b = base.step(), other.step()
    assert not np.array_equal(a.frames, b.frames)
    # listen audio arriving late still lands in the window of the chunk it belongs to
    late = session(bundle)
    late.push_audio("listen", tone(3.0, 440.0))
    c, d = session(bundle).step(), late.step()
    assert not np.array_equal(c.frames, d.frames)


def test_cues_apply_to_their_latent_frames_at_the_next_chunk():
    bundle = online_bundle(text_cues=True)
    with torch.no_grad():
        for model in (bundle.transformer, bundle.refiner):
            model.cue_embed.out.fc2.weight.normal_(0, 0.5)
    base, cued = session(bundle), session(bundle)
    assert np.array_equal(base.step().frames, cued.step().frames)
    per = bundle.cfg.latents_per_chunk
    cued.set_cues([None] * (per - 2) + ["it nods", "it nods"])
    a, b = base.step(), cued.step()
    assert not np.array_equal(a.frames, b.frames)
    cued.set_cues(None)  # cleared: the same conditions again (the history differs)
    assert cued.conditions(2).cues is None and base.conditions(2).cues is None
    with pytest.raises(ValueError, match="one per latent"):
        cued.set_cues(["a"] * (per + 1))


def cue_session():
    """A tiny cue model whose cues matter, its backbone, a session and latents per chunk."""
    bundle = online_bundle(text_cues=True)
    with torch.no_grad():
        bundle.transformer.cue_embed.out.fc2.weight.normal_(0, 0.5)
    return bundle.transformer, session(bundle), bundle.cfg.latents_per_chunk


def test_cue_guidance_amplifies_the_cued_frames_of_a_chunk_only():
    from dataclasses import replace

    from lpm.inference.chunk_step import backbone_chunk
    from lpm.models.dit.model import TextCues

    model, s, per = cue_session()
    s.set_cues([None] * (per - 2) + ["it nods", "it nods"])
    cond = s.conditions(0)
    uncued = replace(
        cond, cues=TextCues(cond.cues.features, cond.cues.mask, cond.cues.index * 0 - 1)
    )
    noise = torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(0))

    def x0(c, scale):
        schedule = OnlineSchedule(backbone_timesteps=(1000.0,), cue_scale=scale)
        cache = model.new_cache(history="noisy", history_sigma=0.1)
        with torch.no_grad():
            return backbone_chunk(model, cache, c, noise, schedule, write_history=False)

    plain, without = x0(cond, 1.0), x0(uncued, 1.0)
    guided = x0(cond, 3.0)
    cued = slice(per - 2, per)
    torch.testing.assert_close(
        guided[:, :, cued], without[:, :, cued] + 3.0 * (plain - without)[:, :, cued]
    )
    torch.testing.assert_close(guided[:, :, : per - 2], plain[:, :, : per - 2])
    assert (plain - without)[:, :, cued].abs().amax() > 1e-3  # the cue matters
    assert torch.equal(x0(uncued, 3.0), without)  # a chunk without a cue: no guidance
    with pytest.raises(ValueError, match="cue_scale"):
        OnlineSchedule(cue_scale=-1.0)


def test_cue_guidance_can_spare_cues_that_name_only_an_expression():
    from lpm.data.stage.captions import names_action
    from lpm.inference.chunk_step import backbone_chunk

    assert names_action("The character nods.") and names_action("The character waves its hand.")
    assert names_action("The character leans toward the camera. The character, smiling.")
    assert not names_action("The character, smiling.") and not names_action("It looks sad.")
    model, s, per = cue_session()
    noise = torch.randn(s.latent_shape, generator=torch.Generator().manual_seed(0))

    def x0(cues, scale, actions_only):
        s.set_cues(cues)
        schedule = OnlineSchedule(backbone_timesteps=(1000.0,), cue_scale=scale,
                                  cue_actions_only=actions_only)  # fmt: skip
        cache = model.new_cache(history="noisy", history_sigma=0.1)
        with torch.no_grad():
            return backbone_chunk(model, cache, s.conditions(0), noise, schedule,
                                  write_history=False)  # fmt: skip

    smile = [None] * (per - 2) + ["The character, smiling."] * 2
    mixed = ["The character, smiling."] * (per - 2) + ["The character nods."] * 2
    assert s.conditions(0).cue_actions is not None
    # an expression cue: followed as distilled, not amplified
    assert torch.equal(x0(smile, 3.0, True), x0(smile, 1.0, True))
    assert not torch.equal(x0(smile, 3.0, False), x0(smile, 1.0, False))
    # an action cue is guided; the expression frames of the same chunk are not
    spared, every = x0(mixed, 3.0, True), x0(mixed, 3.0, False)
    plain = x0(mixed, 1.0, True)
    torch.testing.assert_close(spared[:, :, : per - 2], plain[:, :, : per - 2])
    torch.testing.assert_close(spared[:, :, per - 2 :], every[:, :, per - 2 :])
    assert not torch.allclose(every[:, :, : per - 2], plain[:, :, : per - 2])


def test_memory_is_flat_over_a_long_stream():
    bundle = online_bundle()
    s = session(bundle)
    sizes, buffered = [], []
    for _ in range(8):
        s.push_audio("speak", tone(1.0))
        s.step()
        sizes.append(s.stepper.backbone_cache.nbytes() + s.stepper.refiner_cache.nbytes())
        buffered.append(len(s.audio["speak"].samples))
        assert s.stepper.backbone_cache.next_frame_offset() <= 2 * bundle.cfg.latents_per_chunk
    assert len(set(sizes[2:])) == 1
    assert len(set(buffered[2:])) == 1  # audio pushed ahead stays bounded, history is dropped


def test_audio_buffer_windows_and_trimming():
    buf = _AudioBuffer(window=30, chunk=10)
    buf.push(np.arange(1, 26, dtype=np.float32))
    w0 = buf.window_for(0)
    assert np.array_equal(w0[:20], np.zeros(20)) and np.array_equal(w0[20:], np.arange(1, 11))
    w1 = buf.window_for(1)
    assert np.array_equal(w1[10:], np.arange(1, 21))
    w2 = buf.window_for(2)
    assert np.array_equal(w2[:25], np.arange(1, 26)) and not w2[25:].any()  # not yet arrived
    assert buf.start > 0  # samples no window will read again are dropped


def test_chunk_stepper_is_deterministic_and_noisy_history_differs_from_clean():
    bundle = online_bundle()
    s = session(bundle)
    cond = s.conditions(0)
    shape = s.latent_shape
    refs = None
    runs = []
    for sigma in (0.1, 0.1, 0.0):
        stepper = ChunkStepper(
            bundle.transformer, bundle.refiner, refs, OnlineSchedule(history_sigma=sigma), seed=3
        )
        runs.append([stepper.step(cond, shape, torch.device("cpu")) for _ in range(2)])
    assert torch.equal(runs[0][1], runs[1][1])
    assert not torch.allclose(runs[0][1], runs[2][1])


def test_errors_are_clear_and_pipeline_failures_surface():
    offline = tiny_bundle(decoder="light")
    with pytest.raises(ValueError, match="not an online model"):
        StreamingSession(offline, face())
    s = session(online_bundle())
    with pytest.raises(ValueError, match="speak' or 'listen"):
        s.push_audio("partner", tone(1.0))
    with pytest.raises(ValueError, match="descending"):
        OnlineSchedule(backbone_timesteps=(500.0, 900.0))

    def broken(*_args):
        raise RuntimeError("decoder exploded")

    s.decode = broken
    with pytest.raises(RuntimeError, match="decoder exploded"):
        list(s.chunks(3, pipelined=True))


def test_saved_online_bundle_loads_its_refiner(tmp_path):
    from lpm.inference.bundle import ModelBundle

    bundle = online_bundle()
    bundle.save(tmp_path / "online")
    loaded = ModelBundle.load(tmp_path / "online")
    assert loaded.refiner is not None
    for k, v in bundle.refiner.state_dict().items():
        assert torch.equal(loaded.refiner.state_dict()[k], v), k
    assert ModelBundle.load(_offline(tmp_path)).refiner is None


def _offline(tmp_path):
    tiny_bundle().save(tmp_path / "offline")
    return tmp_path / "offline"


@pytest.mark.parametrize("decoder", ["light", "vae", "speech"])
def test_chunks_in_parts_deliver_the_same_frames_sooner(decoder):
    bundle = online_bundle(decoder=decoder)
    whole = [c.frames for c in session(bundle).chunks(3)]
    for pipelined in (False, True):
        parts = list(session(bundle).chunks(3, pipelined=pipelined, part_latents=2))
        per_chunk = bundle.cfg.latents_per_chunk // 2
        assert [(p.index, p.part, p.last) for p in parts] == [
            (i, k, k == per_chunk - 1) for i in range(3) for k in range(per_chunk)
        ]
        assert all(p.frames.shape[0] == 8 for p in parts)
        for i in range(3):
            joined = np.concatenate([p.frames for p in parts if p.index == i])
            diff = np.abs(joined.astype(int) - whole[i].astype(int)).max()
            assert diff <= (0 if decoder == "light" else 1), (pipelined, i, diff)
    if decoder == "speech":  # the decoder reads the speak audio of each chunk's frames
        deaf = session(bundle)
        deaf.chunk_speech = lambda cond: None  # the same latents, decoded without the speech
        assert np.abs(deaf.step().frames.astype(int) - whole[0].astype(int)).max() > 0
    with pytest.raises(ValueError, match="part_latents"):
        next(session(bundle).chunks(1, part_latents=0))


def test_a_speech_decoder_looks_ahead_only_into_audio_that_has_arrived():
    bundle = online_bundle(decoder="speech")
    fpc = bundle.cfg.frames_per_chunk
    wave = tone(3.0, 180.0) * np.linspace(0, 1, 3 * 16000, dtype=np.float32)
    early = StreamingSession(bundle, face(), seed=0)
    early.push_audio("speak", wave[:16000])  # exactly one chunk: nothing after it yet
    assert early.conditions(0).speak_ahead is None
    full = StreamingSession(bundle, face(), seed=0)
    full.push_audio("speak", wave)
    cond = full.conditions(0)
    assert cond.speak_ahead.shape == (1, 4, cond.speak_audio.shape[2])
    # the frames after the chunk as the whole recording gives them (the window starts 2 s back)
    padded = torch.from_numpy(np.concatenate([np.zeros(32000, np.float32), wave]))[None]
    whole = bundle.audio_encoder(padded, 3 * fpc + 4)[:, -4:]
    torch.testing.assert_close(cond.speak_ahead, whole, atol=1e-4, rtol=1e-4)
    speech = full.chunk_speech(cond)
    assert speech.shape[1] == fpc + 4
    assert (
        online_bundle().light_decoder is not None
        and session(online_bundle()).chunk_speech(cond) is None
    )  # a light decoder reads no speech


@pytest.mark.gpu
def test_stream_on_a_gpu_follows_the_bundle_and_matches_the_cpu():
    """A session streams on the device its bundle was loaded to (``lpm serve --device cuda``)."""
    bundle = online_bundle()
    cpu = [c.frames for c in session(bundle).chunks(2)]
    for module in bundle.modules().values():
        module.to("cuda")
    s = session(bundle)
    assert s.device.type == "cuda"
    gpu = [c.frames for c in s.chunks(2, pipelined=True, lookahead=1)]
    assert all(np.abs(x.astype(int) - y).max() <= 8 for x, y in zip(cpu, gpu, strict=True))


def test_a_bf16_stream_follows_the_fp32_stream():
    """Backbone and refiner stored in bf16 stream the chunks an fp32 pair streams, within
    bf16's precision; the KV caches hold bf16 keys and values."""
    bundle = online_bundle()
    fp32 = [c.frames for c in session(bundle).chunks(3)]
    for module in (bundle.transformer, bundle.refiner):
        module.to(torch.bfloat16)
    s = session(bundle)
    bf16 = [c.frames for c in s.chunks(3, pipelined=True, lookahead=1)]
    diff = np.mean([np.abs(x.astype(int) - y).mean() for x, y in zip(fp32, bf16, strict=True)])
    assert diff < 4.0, diff
    keys, values = s.stepper.backbone_cache.context(0)
    assert keys.dtype == values.dtype == torch.bfloat16
