"""Speech backends: espeak-ng when installed, the formant synthesizer otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from lpm.data.stage import speech
from lpm.data.stage.character import make_character
from lpm.data.stage.clip import ClipSpec, render_clip

VOICE = make_character(8).voice


@pytest.mark.skipif(speech.find_espeak() is None, reason="espeak-ng not installed")
def test_espeak_backend():
    audio = speech.synthesize("Hello, how are you today?", VOICE, 16_000, "espeak")
    assert audio.dtype == np.float32 and 0.5 < len(audio) / 16_000 < 4.0
    assert np.sqrt(np.mean(audio**2)) == pytest.approx(speech.TARGET_RMS, rel=0.05)


def test_formant_backend_is_deterministic_and_speechlike():
    a = speech.synthesize("Hello, how are you today?", VOICE, 16_000, "formant", seed=3)
    b = speech.synthesize("Hello, how are you today?", VOICE, 16_000, "formant", seed=3)
    assert np.array_equal(a, b)
    assert 0.5 < len(a) / 16_000 < 4.0
    frames = a[: len(a) // 160 * 160].reshape(-1, 160)
    level = np.sqrt((frames**2).mean(1))
    assert level.std() / level.mean() > 0.3, "speech should have a varying envelope"


def test_fallback_when_espeak_is_hidden(monkeypatch):
    monkeypatch.setattr(speech, "find_espeak", lambda: None)
    assert speech.resolve_backend("auto") == "formant"
    with pytest.raises(ValueError, match="espeak-ng is not installed"):
        speech.resolve_backend("espeak")
    clip = render_clip(
        ClipSpec(
            performer_seed=1, partner_seed=2, seed=0, seconds=2.0, size=32, mode="conversation"
        ),
        references=False,
    )
    assert clip.backend == "formant"
    assert np.abs(clip.mix_audio).max() > 0


def test_bad_speech_arguments():
    with pytest.raises(ValueError, match="backend"):
        speech.resolve_backend("festival")
    with pytest.raises(ValueError, match="non-empty"):
        speech.synthesize("  ", VOICE)
