"""Offline generation end to end on a tiny random bundle: mp4 out, long-audio continuation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lpm.config import get_model_config
from lpm.inference.bundle import BundleSpec, ModelBundle, SamplingDefaults
from lpm.inference.pipeline import (
    Pipeline,
    ReferenceImage,
    ScriptSegment,
    _place,
    load_script,
    plan_segments,
)
from lpm.models.audio import AudioLoadError, LogMelConfig, LogMelFeatures
from lpm.models.dit.model import LPMTransformer
from lpm.models.text import NanoTextEncoder, NanoTextEncoderConfig
from lpm.models.vae import LightDecoder, LightDecoderConfig, WanVAEConfig, build_wan_vae

SR = 16000


def tiny_bundle(decoder: str = "vae", text_cues: bool = False) -> ModelBundle:
    torch.manual_seed(0)
    mel = LogMelFeatures(LogMelConfig(sample_rate=SR, fps=24, n_mels=16, mels_per_frame=2))
    text = NanoTextEncoder(NanoTextEncoderConfig(vocab_size=256, dim=32, num_layers=1, num_heads=2))
    cfg = get_model_config("lpm-nano").replace(
        num_layers=2,
        dim=32,
        num_heads=2,
        ffn_dim=64,
        freq_dim=32,
        text_dim=32,
        audio_dim=mel.feature_dim,
        text_cues=text_cues,
    )
    spec = BundleSpec(
        name="tiny",
        height=32,
        width=32,
        sample_rate=SR,
        decoder="vae" if decoder == "speech" else decoder,
        segment_latents=8,
        context_latents=2,
        blend_latents=1,
        sampling=SamplingDefaults(steps=2, shift=3.0, text_scale=2.0, audio_scale=2.0),
    )
    light = LightDecoder(LightDecoderConfig(frame_dim=8, stage_dims=(8, 8, 8)))
    vae = build_wan_vae(WanVAEConfig.tiny())
    if decoder == "speech":  # lpm-nano's kind: a nano VAE whose decoder reads the speech
        vae = speech_vae(mel.feature_dim)
    return ModelBundle(
        spec,
        transformer=LPMTransformer(cfg),
        vae=vae,
        text_encoder=text,
        audio_encoder=mel,
        light_decoder=light,
    )


def speech_vae(speech_dim: int):
    """A small `NanoVAE` with a speech path that already modulates (as a trained one does)."""
    from lpm.models.vae import NanoVAE, NanoVAEConfig

    dec = LightDecoderConfig(frame_dim=8, stage_dims=(8, 8, 8), speech_dim=speech_dim,
                             speech_hidden=8)  # fmt: skip
    vae = NanoVAE(NanoVAEConfig(enc_dims=(8, 8, 16), decoder=dec))
    with torch.no_grad():
        for layer in (vae.decoder.speech_film, vae.decoder.speech_film_stage):
            layer.weight.normal_(0, 0.5)
    return vae.eval()


def face(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)


def tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_plan_segments_cover_with_context_and_blend():
    plans = plan_segments(20, segment=8, context=2, blend=1)
    assert plans[0].start == 0 and plans[0].context == 0
    for prev, nxt in zip(plans, plans[1:], strict=False):
        assert nxt.start == prev.start + prev.length - 3 and nxt.context == 2
    assert plans[-1].start + plans[-1].length == 20
    with pytest.raises(ValueError, match="no latent frames"):
        plan_segments(0, 8, 2, 1)


def test_place_keeps_context_and_crossfades_blend():
    latents = torch.zeros(1, 1, 10, 1, 1)
    latents[:, :, :8] = 1.0
    out = torch.full((1, 1, 5, 1, 1), 3.0)
    from lpm.inference.pipeline import SegmentPlan

    _place(latents, out, SegmentPlan(start=5, length=5, context=2, blend=1))
    assert latents[0, 0, :7, 0, 0].tolist() == [1.0] * 7  # context untouched
    assert latents[0, 0, 7, 0, 0].item() == pytest.approx(2.0)  # halfway blend
    assert latents[0, 0, 8:, 0, 0].tolist() == [3.0, 3.0]


def test_generate_writes_a_playable_mp4_with_audio(tmp_path):
    pipe = Pipeline(tiny_bundle())
    calls = []
    video = pipe.generate(
        face(),
        speak_audio=tone(2.0),
        listen_audio=tone(2.0, 330.0) * 0.5,
        script=[
            ScriptSegment(start=0, end=1, text="nod"),
            ScriptSegment(start=1, end=2, text="wave"),
        ],
        references=[ReferenceImage(kind="body", subtype=1, image=face(1))],
        seed=3,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert video.frames.shape == (48, 32, 32, 3) and video.frames.dtype == np.uint8
    assert video.latents.shape[2] == 12 and len(video.audio) == 2 * SR
    assert calls[-1] == (4, 4)  # 2 segments x 2 steps
    path = video.save(tmp_path / "out.mp4")
    import av  # only here, so that the module's other tests run without PyAV

    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
        assert sum(1 for _ in container.decode(video=0)) == 48
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_timed_instructions_become_cues_of_their_latent_frames():
    bundle = tiny_bundle(text_cues=True)
    with torch.no_grad():
        bundle.transformer.cue_type.normal_(0, 1.0)
    pipe = Pipeline(bundle)
    whole = ScriptSegment(start=0, end=2, text="a calm character")
    nod = ScriptSegment(start=0.5, end=1.2, text="it nods")
    prepared = pipe.prepare(face(), speak_audio=tone(2.0), script=[whole, nod])
    # 12 latents of 4 frames at 24 fps; segments of 8 with 2 context + 1 blend latents.
    assert prepared.prompts == {0: "a calm character", 1: "a calm character"}
    cued = [f for f in range(8) if prepared.cues[0][f] == "it nods"]
    assert cued == [3, 4, 5, 6]  # latent middles (4f + 2) / 24 s in [0.5, 1.2)
    assert all(c is None for c in prepared.cues[1][2:])  # the second segment starts at latent 5
    cond = pipe.segment_conditions(prepared, 0)
    assert cond.cues.features.shape == (1, 1, 64, 32)
    assert cond.cues.index[0].tolist() == [-1, -1, -1, 0, 0, 0, 0, -1]
    with_cue = pipe.sample_latents(prepared, seed=1)
    without = pipe.sample_latents(
        pipe.prepare(face(), speak_audio=tone(2.0), script=[whole]), seed=1
    )
    change = (with_cue - without).abs().amax(dim=(0, 1, 3, 4))
    assert change[3:7].min() > 0 and change[3:7].mean() > change[:2].mean()
    # A guidance level of their own amplifies the cues; without cues it changes nothing.
    louder = pipe.sample_latents(prepared, seed=1, cue_scale=4.0)
    gain = (louder - without).abs().amax(dim=(0, 1, 3, 4))
    assert gain[3:7].mean() > change[3:7].mean()
    bare_prep = pipe.prepare(face(), speak_audio=tone(2.0), script=[whole])
    assert torch.equal(pipe.sample_latents(bare_prep, seed=1, cue_scale=4.0), without)
    # Consecutive instructions: each segment's prompt is the one covering most of it; the
    # frames of the other become its cue.
    steps = pipe.prepare(
        face(),
        speak_audio=tone(2.0),
        script=[
            ScriptSegment(start=0, end=1, text="nod"),
            ScriptSegment(start=1, end=2, text="wave"),
        ],
    )
    assert steps.prompts == {0: "nod", 1: "wave"}
    assert steps.cues[0] == [None] * 6 + ["wave"] * 2
    assert steps.cues[1] == ["nod"] + [None] * 6
    # Without a script nothing is cued.
    bare = pipe.prepare(face(), speak_audio=tone(2.0))
    assert pipe.segment_conditions(bare, 0).cues is None


def test_generation_is_seeded_and_survives_a_bundle_round_trip(tmp_path):
    bundle = tiny_bundle(decoder="light")
    a = Pipeline(bundle).generate(face(), speak_audio=tone(1.0), seed=1)
    b = Pipeline(bundle).generate(face(), speak_audio=tone(1.0), seed=1)
    c = Pipeline(bundle).generate(face(), speak_audio=tone(1.0), seed=2)
    assert torch.equal(a.latents, b.latents) and not torch.equal(a.latents, c.latents)
    bundle.save(tmp_path / "bundle")
    spec = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert spec["format"] == "lpm-bundle" and spec["decoder"] == "light"
    d = Pipeline.from_pretrained(tmp_path / "bundle").generate(
        face(), speak_audio=tone(1.0), seed=1
    )
    assert torch.allclose(a.latents, d.latents, atol=1e-5)
    assert np.abs(a.frames.astype(int) - d.frames.astype(int)).max() <= 1


def test_context_sigma_noises_the_continuation_context_only():
    bundle = tiny_bundle()
    seen = []
    forward = bundle.transformer.forward

    def spy(x, timestep, **kw):
        seen.append(timestep.clone())
        return forward(x, timestep, **kw)

    bundle.transformer.forward = spy
    pipe = Pipeline(bundle)
    clean = pipe.generate(face(), speak_audio=tone(2.0), seed=1)
    second = [t for t in seen if t.shape[1] == 7]  # segment 1: 2 context + 5 new latents
    assert second and all((t[:, :2] == 0).all() for t in second)  # clean context
    seen.clear()
    noisy = pipe.generate(face(), speak_audio=tone(2.0), seed=1, context_sigma=0.1)
    second = [t for t in seen if t.shape[1] == 7]
    assert second and all(torch.allclose(t[:, :2], torch.tensor(100.0)) for t in second)
    assert all((t[:, 2:] > 100).all() for t in second)
    n0 = plan_segments(12, 8, 2, 1)[1].start + 2  # segment 0 alone made these latents
    assert torch.equal(noisy.latents[:, :, :n0], clean.latents[:, :, :n0])
    assert not torch.equal(noisy.latents, clean.latents)
    again = pipe.generate(face(), speak_audio=tone(2.0), seed=1, context_sigma=0.1)
    assert torch.equal(again.latents, noisy.latents)
    with pytest.raises(ValueError, match="context_sigma"):
        pipe.generate(face(), speak_audio=tone(2.0), context_sigma=1.5)
    with pytest.raises(ValueError, match="context_sigma"):
        SamplingDefaults(context_sigma=-0.1)


def test_seconds_loops_short_audio_and_idle_needs_seconds():
    pipe = Pipeline(tiny_bundle())
    video = pipe.generate(face(), speak_audio=tone(0.5), seconds=1.5)
    assert video.frames.shape[0] == 36 and len(video.audio) == round(1.5 * SR)
    assert np.allclose(video.audio[: SR // 2], video.audio[SR // 2 : SR])  # looped
    idle = pipe.generate(face(), seconds=0.5)
    assert idle.frames.shape[0] == 12 and not idle.audio.any()
    with pytest.raises(ValueError, match="--seconds"):
        pipe.generate(face())


def test_bad_inputs_are_reported(tmp_path):
    pipe = Pipeline(tiny_bundle())
    not_audio = tmp_path / "speech.wav"
    not_audio.write_text("this is not audio")
    with pytest.raises(AudioLoadError):
        pipe.generate(face(), speak_audio=not_audio)
    bad = tmp_path / "script.json"
    bad.write_text('[{"start": 0, "text": "nod"}]')
    with pytest.raises(ValueError, match="start, end and text"):
        load_script(bad)
    bad.write_text('{"oops": 1')
    with pytest.raises(ValueError, match="not valid JSON"):
        load_script(bad)
    with pytest.raises(ValueError, match="start < end"):
        ScriptSegment(start=2, end=1, text="x")
    with pytest.raises(FileNotFoundError, match="bundle.json"):
        ModelBundle.load(tmp_path)


def test_the_decoder_hears_the_speak_audio_only():
    bundle = tiny_bundle(decoder="speech")
    pipe = Pipeline(bundle)
    prepared = pipe.prepare(face(), speak_audio=tone(1.0), listen_audio=tone(1.0, 330.0))
    latents = pipe.sample_latents(prepared, seed=0)
    heard = pipe.video(prepared, latents).frames
    speech = prepared.audio_features["speak"]
    with torch.no_grad():
        direct = bundle.vae.decode(latents, speech=speech)
    direct = ((direct[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).numpy()
    assert np.array_equal(heard[3:], direct)
    silent = pipe.decode(latents)  # no speak features: the performer is silent
    assert np.abs(silent.astype(int) - heard.astype(int)).max() > 0
    with pytest.raises(ValueError, match="speech features"):
        pipe.decode(latents, speech[:, :, :5])


def test_a_bf16_transformer_runs_at_its_precision_and_follows_the_fp32_one(tmp_path):
    """``dtype="bf16"`` (the default on a GPU) stores the transformer in bf16 and runs it under
    autocast with float32 in and out; checked here on the CPU, which runs bf16 too."""
    from lpm.inference.bundle import transformer_dtype

    tiny_bundle().save(tmp_path / "b")
    runs = {}
    for dtype in ("fp32", "bf16"):
        pipe = Pipeline.from_pretrained(tmp_path / "b", dtype=dtype)
        assert {p.dtype for p in pipe.bundle.transformer.parameters()} == {
            torch.float32 if dtype == "fp32" else torch.bfloat16
        }
        assert next(pipe.bundle.vae.parameters()).dtype == torch.float32  # decoders stay fp32
        runs[dtype] = pipe.generate(face(), speak_audio=tone(1.0), seed=1)
    a, b = runs["fp32"].latents, runs["bf16"].latents
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert ((a - b).norm() / a.norm()).item() < 0.05
    assert transformer_dtype("auto", torch.device("cpu")) == torch.float32
    assert transformer_dtype(None, torch.device("cuda")) == torch.bfloat16
    with pytest.raises(ValueError, match="must be auto or one of"):
        transformer_dtype("int8", torch.device("cpu"))


@pytest.mark.gpu
def test_on_a_gpu_the_default_is_a_bf16_transformer_that_follows_the_cpu(tmp_path):
    tiny_bundle().save(tmp_path / "b")
    cpu = Pipeline.from_pretrained(tmp_path / "b").generate(face(), speak_audio=tone(1.0), seed=1)
    pipe = Pipeline.from_pretrained(tmp_path / "b", device="cuda")
    assert next(pipe.bundle.transformer.parameters()).dtype == torch.bfloat16
    gpu = pipe.generate(face(), speak_audio=tone(1.0), seed=1)
    a, b = cpu.latents, gpu.latents.cpu()
    assert ((a - b).norm() / a.norm()).item() < 0.05
