"""Ground-truth sanity of the performance labels."""

from __future__ import annotations

import numpy as np
import pytest

from lpm.data.stage.clip import ClipSpec, clip_spec_for, render_clip
from lpm.data.stage.performance import audio_features
from lpm.data.stage.performance import lagged_correlation as _lc
from lpm.data.stage.schema import ACTIONS, EXPRESSIONS, STATES


def lag_corr(a, b, mask, lag):
    return _lc(a, b, lag, mask)


def _levels(clip):
    n = len(clip.frames)
    own = audio_features(clip.speak_audio, clip.spec.sample_rate, clip.spec.fps, n)["db"]
    other = audio_features(clip.listen_audio, clip.spec.sample_rate, clip.spec.fps, n)["db"]
    return np.clip((own + 40) / 30, 0, 1), np.clip((other + 40) / 30, 0, 1)


def test_listening_and_idle_frames_have_no_mouth_motion(conversation_clips):
    for clip in conversation_clips:
        state = np.array(clip.labels["state"])
        mouth = np.array(clip.labels["mouth_open"])
        assert (state == "listen").any() and (state == "speak").any()
        assert np.all(mouth[state != "speak"] == 0.0)


def test_mouth_follows_own_speech_not_partner(conversation_clips):
    for clip in conversation_clips:
        own, other = _levels(clip)
        mouth = np.array(clip.labels["mouth_open"])
        speaking = np.array(clip.labels["state"]) == "speak"
        everything = np.ones_like(speaking)
        best_own = max(lag_corr(mouth, own, speaking, lag) for lag in range(-3, 4))
        best_other = max(lag_corr(mouth, other, everything, lag) for lag in range(-3, 4))
        assert best_own > 0.6, best_own
        assert best_other < 0.2, best_other
        # the best lag is the character's lead of a few frames
        lags = [lag_corr(mouth, own, speaking, lag) for lag in range(-3, 4)]
        assert abs(int(np.argmax(lags)) - 3) <= 3


def test_the_envelope_opening_moved_by_the_characters_lead_is_the_labelled_mouth(
    conversation_clips,
):
    """The premise of benchmarks/lip_sync_bound.py: only the articulation gain is left over."""
    from lpm.data.stage.performance import speech_opening

    for clip in conversation_clips:
        n = len(clip.frames)
        db = audio_features(clip.speak_audio, clip.spec.sample_rate, clip.spec.fps, n)["db"]
        mouth = np.array(clip.labels["mouth_open"])
        speaking = np.array(clip.labels["state"]) == "speak"
        lead = clip.performer.lip_lead_frames
        # label frame t shows the opening of frame t + lead
        corr = {k: lag_corr(mouth, speech_opening(db), speaking, k) for k in range(-2, 5)}
        assert corr[lead] > 0.9, (lead, corr)
        assert max(corr, key=corr.get) == lead


def test_labels_are_complete_and_in_vocabulary(conversation_clips):
    clip = conversation_clips[0]
    n = len(clip.frames)
    for name, values in clip.labels.items():
        assert len(values) == n, name
    assert set(clip.labels["state"]) <= set(STATES)
    assert set(clip.labels["expression"]) <= set(EXPRESSIONS)
    assert set(clip.labels["action"]) <= set(ACTIONS)
    assert set(clip.labels["identity"]) == {clip.spec.performer_seed}


def test_listening_reactions_are_delayed_not_copies():
    clip = render_clip(
        ClipSpec(
            performer_seed=77,
            partner_seed=78,
            seed=5,
            seconds=10.0,
            size=32,
            mode="listen",
            backend="formant",
        ),
        references=False,
    )
    _, other = _levels(clip)
    pitch = np.array(clip.labels["head_pitch"])
    listening = np.array(clip.labels["state"]) == "listen"
    assert listening.mean() > 0.3
    assert abs(lag_corr(pitch, other, listening, 0)) < 0.5
    assert np.array(clip.labels["head_pitch"])[listening].std() > 0.5  # it does move


def test_determinism_for_a_seed():
    spec = clip_spec_for(3, 1, seconds=2.0, size=32, backend="formant")
    a, b = render_clip(spec), render_clip(spec)
    assert np.array_equal(a.frames, b.frames)
    assert a.labels == b.labels
    assert np.array_equal(a.mix_audio, b.mix_audio)
    assert [c.text for c in a.dense_captions] == [c.text for c in b.dense_captions]


def test_clip_content():
    clip = render_clip(clip_spec_for(0, 2, seconds=3.0, size=64, backend="formant"))
    assert clip.frames.shape == (72, 64, 64, 3)
    assert len(clip.speak_audio) == len(clip.listen_audio) == 3 * 16_000
    names = set(clip.references)
    assert {"view_front", "view_left", "view_right", "view_back"} <= names
    assert {f"expr_{e}" for e in EXPRESSIONS} <= names
    assert any(n.startswith("global_") for n in names)
    assert clip.dense_captions and clip.sentence_captions
    assert all(c.text.startswith("A ") for c in clip.dense_captions)


@pytest.mark.parametrize(
    "field,value",
    [("seconds", 0), ("size", 8), ("mode", "sing"), ("fps", 0), ("performer_seed", -5)],
)
def test_bad_spec(field, value):
    kwargs = dict(performer_seed=1, partner_seed=2, seed=0)
    kwargs[field] = value
    with pytest.raises(ValueError):
        ClipSpec(**kwargs)


def test_speech_moved_by_the_lead_lines_up_with_the_labelled_mouth(conversation_clips):
    """The premise of benchmarks/lip_lead_oracle.py: speech moved `lead` frames earlier is the
    speech the labelled mouth follows at lag 0."""
    import importlib.util
    from pathlib import Path

    from lpm.data.stage.performance import speech_opening

    path = Path(__file__).parents[2] / "benchmarks" / "lip_lead_oracle.py"
    spec = importlib.util.spec_from_file_location("lip_lead_oracle", path)
    oracle = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(oracle)
    for clip in conversation_clips:
        n, sr, fps = len(clip.frames), clip.spec.sample_rate, clip.spec.fps
        lead = clip.performer.lip_lead_frames
        moved = oracle.shift_speech(clip.speak_audio, lead, fps, sr)
        assert len(moved) == len(clip.speak_audio)
        mouth = np.array(clip.labels["mouth_open"])
        speaking = np.array(clip.labels["state"]) == "speak"
        opening = speech_opening(audio_features(moved, sr, fps, n)["db"])
        corr = {k: lag_corr(mouth, opening, speaking, k) for k in range(-2, 3)}
        assert corr[0] > 0.9, (lead, corr)
        assert max(corr, key=corr.get) == 0
