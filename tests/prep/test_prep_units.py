"""Operators alone: configs, decision table, smoothing, re-ranking, audio, filters, shots."""

from __future__ import annotations

import numpy as np
import pytest

from lpm.data.prep import labels as L
from lpm.data.prep.audio import audio_variants
from lpm.data.prep.config import FilterConfig, LabelConfig, PrepConfig, ReferenceConfig
from lpm.data.prep.filters import colour_cast, flicker, pip_score, sharpness, static_edges
from lpm.data.prep.rebalance import rebalance
from lpm.data.prep.refs import view_of


def test_config_validation():
    with pytest.raises(ValueError, match="detect.backend"):
        PrepConfig.from_dict({"detect": {"backend": "magic"}})
    with pytest.raises(ValueError, match="unknown fields"):
        PrepConfig.from_dict({"labels": {"nope": 1}})
    with pytest.raises(ValueError, match="until"):
        PrepConfig(until="everything")
    cfg = PrepConfig.from_dict({"filters": {"max_people": 1}})
    assert PrepConfig.from_dict(cfg.to_dict()) == cfg


def test_decision_table():
    fps, n = 24, 96
    t = np.arange(n)
    env = -60 + 40 * (np.sin(t / 1.0) > 0)  # syllables, ~4 per second
    mouth_sync = np.clip((env + 60) / 40, 0, 1) * 0.6  # follows the audio
    mouth_still = np.zeros(n)
    mouth_wrong = np.random.default_rng(0).uniform(0, 0.6, n)  # moves, unrelated to the audio
    speech, silence = np.ones(n, bool), np.zeros(n, bool)
    cfg = LabelConfig()
    mid = slice(12, -12)
    assert (L.decide(mouth_sync, env, speech, fps, cfg)[0][mid] == L.SPEAK).all()
    assert (L.decide(mouth_still, env, speech, fps, cfg)[0][mid] == L.LISTEN).all()
    assert (L.decide(mouth_still, env, silence, fps, cfg)[0][mid] == L.IDLE).all()
    assert (L.decide(mouth_sync, env, silence, fps, cfg)[0][mid] == L.DISCARD).all()
    codes = L.decide(mouth_wrong, env, speech, fps, cfg)[0][mid]
    assert (codes == L.DISCARD).mean() > 0.5


def test_smoothing_and_rerank():
    cfg = LabelConfig()
    codes = np.array([L.LISTEN] * 30 + [L.SPEAK] * 2 + [L.LISTEN] * 30, np.int8)
    assert (L.smooth(codes, 24, cfg) == L.LISTEN).all()  # a 2-frame blip is merged
    a = np.full(10, L.SPEAK, np.int8)
    b = np.full(10, L.SPEAK, np.int8)
    L.rerank([a, b], [np.full(10, 0.9), np.full(10, 0.3)], cfg)
    assert (a == L.SPEAK).all() and (b == L.LISTEN).all()
    a, b = np.full(10, L.SPEAK, np.int8), np.full(10, L.SPEAK, np.int8)
    L.rerank([a, b], [np.full(10, 0.9), np.full(10, 0.8)], cfg)  # both truly speak
    assert (a == L.SPEAK).all() and (b == L.SPEAK).all()


def _talk(n_before: int, n_speech: int, n_after: int, lead: int = 0):
    """Mouth, envelope and VAD frames of one utterance between silences (24 fps): the mouth
    opens on every syllable, `lead` frames ahead of the voice, and is shut otherwise."""
    n = n_before + n_speech + n_after
    speech = np.zeros(n, bool)
    speech[n_before : n_before + n_speech] = True
    syllables = np.sin(np.arange(n) / 1.0) > 0
    env = np.where(speech & syllables, -20.0, -60.0)
    mouth = np.where(speech & syllables, 0.6, 0.0)
    mouth[n_before - lead : n_before] = 0.6
    return mouth, env, speech


def test_motion_near_speech_edges_is_not_silent_mouthing():
    """Silence beside an utterance is idle: a motion window that crossed the speech edge (or the
    lips opening just before the voice) must not read as moving lips in silence (discard)."""
    cfg = LabelConfig()
    mouth, env, speech = _talk(24, 48, 24, lead=2)
    codes = L.decide(mouth, env, speech, 24, cfg)[0]
    assert (codes[:24] == L.IDLE).all() and (codes[72:] == L.IDLE).all(), codes
    assert (codes[24:72] == L.SPEAK).mean() > 0.8
    # a mouth that keeps moving through a long silence is still discarded
    moving = np.where(np.sin(np.arange(96) / 1.0) > 0, 0.6, 0.0)
    codes = L.decide(moving, env, speech, 24, cfg)[0]
    assert (codes[6:18] == L.DISCARD).all() and (codes[78:90] == L.DISCARD).all()


def test_smoothing_keeps_the_vad_edges():
    """A pause the VAD found survives smoothing; blips inside one segment are still merged."""
    cfg = LabelConfig()
    codes = np.array([L.SPEAK] * 30 + [L.IDLE] * 4 + [L.SPEAK] * 30, np.int8)
    speech = codes != L.IDLE
    out = L.smooth(codes, 24, cfg, speech)
    assert (out == codes).all()
    assert (L.smooth(codes, 24, cfg)[30:34] == L.SPEAK).all()  # without segments: merged
    codes[10:12] = L.LISTEN  # a 2-frame blip inside the first speech segment
    out = L.smooth(codes, 24, cfg, speech)
    assert (out[:30] == L.SPEAK).all() and (out[30:34] == L.IDLE).all()


def test_label_error_breakdown():
    from lpm.data.prep.evaluate import label_errors

    truth = ["idle"] * 20 + ["speak"] * 20 + ["idle"] * 4 + ["speak"] * 20 + ["listen"] * 20
    ours = ["idle"] * 18 + ["speak"] * 2 + ["idle"] * 2 + ["speak"] * 45 + ["listen"] * 17
    ours[78] = "speak"
    assert label_errors(truth, ours) == {
        "idle->speak early": 2,  # frames 18-19: ours starts speaking before the truth
        "idle->speak late": 2,  # 20-21: idle again while the truth already speaks
        "missed idle run": 4,  # 40-43: a pause the labels do not resolve
        "speak->listen late": 3,  # 64-66: ours still speaks after the turn changed
        "interior listen->speak": 1,  # 78: far from any change
    }


def test_audio_variants_masks_and_channels():
    fps, sr = 24, 16_000
    states = np.array([L.SPEAK] * 24 + [L.LISTEN] * 24 + [L.IDLE] * 24, np.int8)
    mix = np.ones(3 * sr, np.float32)
    speak, listen, how = audio_variants(mix, states, fps, sr)
    assert how == "masks"
    assert speak[: sr - 200].min() > 0.99 and abs(speak[sr + 200 :]).max() < 1e-3
    assert listen[sr + 200 : 2 * sr - 200].min() > 0.99 and abs(listen[: sr - 200]).max() < 1e-3
    own = np.r_[np.ones(sr), np.zeros(2 * sr)].astype(np.float32)
    other = np.r_[np.zeros(sr), np.ones(sr), np.zeros(sr)].astype(np.float32)
    speak, listen, how = audio_variants(own + other, states, fps, sr, np.stack([other, own]))
    assert how == "channels" and np.allclose(speak, own) and np.allclose(listen, other)


def test_filters_on_synthetic_frames():
    base = np.zeros((24, 128, 128, 3), np.uint8)
    base[:, 30:90, 40:100] = (200, 160, 120)
    base[:, 50:60, 55:65] = (20, 20, 20)
    assert sharpness(base[:4]) > 0.45
    import cv2

    blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 4) for f in base[:4]])
    assert sharpness(blurred) < 0.45
    flick = base.copy().astype(np.int16)
    flick[::2] += 40
    assert flicker(np.clip(flick, 0, 255).astype(np.uint8)) > FilterConfig().max_flicker
    assert flicker(base) < FilterConfig().max_flicker
    grey = np.repeat(np.linspace(20, 235, 64)[None, :, None], 64, 0).repeat(3, 2)
    natural = np.stack([grey, grey]).astype(np.uint8)
    natural[:, 10:16, 10:16] = (200, 60, 50)  # a few coloured objects on a grey scene
    natural[:, 35:41, 35:41] = (40, 90, 200)
    natural[:, 50:56, 20:26] = (60, 180, 60)
    tint = natural * np.array([1.0, 0.85, 0.55]) + [30, 10, 0]  # an orange cast everywhere
    tinted = np.clip(tint, 0, 255).astype(np.uint8)
    assert colour_cast(natural) < FilterConfig().max_colour_cast < colour_cast(tinted)
    inset = base.copy()
    inset[:, 80:120, 80:120] = 60
    cv2.rectangle(inset[0], (80, 80), (119, 119), (255, 255, 255), 1)
    for f in inset:
        cv2.rectangle(f, (80, 80), (119, 119), (255, 255, 255), 1)
    window = static_edges(inset[:8])  # a static rectangle: a window on the wall
    assert pip_score(window, FilterConfig(), inset[:8]) == 0
    inset[:, 90:110, 90:110] = np.random.default_rng(0).integers(0, 255, (24, 1, 1, 3))
    assert pip_score(static_edges(inset[:8]), FilterConfig(), inset[:8]) > 0  # it plays
    assert pip_score(static_edges(base[:8]), FilterConfig(), base[:8]) == 0


def test_views_and_rebalance():
    cfg = ReferenceConfig()
    assert view_of(170, 1, cfg) == "front" and view_of(30, 1, cfg) == "back"
    assert view_of(90, 1, cfg) == "right" and view_of(90, -1, cfg) == "left"
    entries = [
        {
            "dir": f"c{i}",
            "state_fraction": {"listen": 1.0},
            "tags": {"motion": float(i >= 8), "emotion": 0.0},
        }
        for i in range(10)
    ] + [{"dir": "s", "state_fraction": {"listen": 0.0}, "tags": {}}]
    out = rebalance(entries, PrepConfig().rebalance)
    tags = [e["tag"] for e in out]
    assert tags.count("expressive") == 5 and tags.count("neutral") == 5 and "other" in tags


def test_shot_cuts_on_synthetic_video():
    pytest.importorskip("scenedetect")
    from lpm.data.prep.shots import split_shots

    frames = np.zeros((150, 64, 64, 3), np.uint8)
    rng = np.random.default_rng(1)
    for k, (a, b) in enumerate(((0, 50), (50, 60), (60, 150))):
        frames[a:b] = rng.integers(0, 255, 3, dtype=np.uint8)
        frames[a:b, 10 + k * 5 : 30 + k * 5, 20:40] = 255 - frames[a, 0, 0]
    shots = split_shots(frames, 24)
    assert [(s.start, s.end) for s in shots] == [(0, 50), (50, 60), (60, 150)]
    assert [s.verdict for s in shots] == ["too_short", "too_short", "keep"]


def test_stage_detector_on_a_render():
    pytest.importorskip("dlib")
    from lpm.data.prep.stage_faces import StageFaces
    from lpm.data.stage import FrameState, make_character, render_frame

    ch = make_character(90123)
    closed = render_frame(ch, FrameState(mouth_open=0.0), 128)
    opened = render_frame(ch, FrameState(mouth_open=0.8), 128)
    det = StageFaces()
    a, b = det.detect(closed), det.detect(opened)
    assert len(a) == 1 and len(b) == 1
    cx = (a[0].box[0] + a[0].box[2]) / 2
    assert 48 < cx < 80  # the portrait's head is centred
    assert b[0].mouth > a[0].mouth + 0.2
