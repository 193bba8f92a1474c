"""load_audio: rates, channels, containers, and one distinct error per bad input."""

import subprocess
import warnings

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from lpm.models.audio import (
    ClippedAudioError,
    ClippedAudioWarning,
    EmptyAudioError,
    NotAudioError,
    SilentAudioError,
    load_audio,
)


def _tone(sr: int, seconds: float, freq: float = 440.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spec.argmax()])


@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_any_rate_and_stereo_file(tmp_path, sr):
    x = _tone(sr, 0.5)
    path = tmp_path / "a.wav"
    sf.write(path, np.stack([x, x], axis=1), sr, subtype="PCM_16")
    y = load_audio(path, 16000)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == 8000
    assert abs(_dominant_hz(y, 16000) - 440) < 5
    assert 0.28 < np.abs(y).max() < 0.32


def test_arrays_and_tensors():
    x = _tone(24000, 0.25)
    assert len(load_audio(x, 16000, source_sr=24000)) == 4000
    stereo_cn = np.stack([x, x])  # (channels, N)
    np.testing.assert_allclose(load_audio(stereo_cn, 24000, source_sr=24000), x, atol=1e-6)
    ints = (x * 32767).astype(np.int16)
    np.testing.assert_allclose(load_audio(ints, 24000, source_sr=24000), x, atol=1e-4)
    assert len(load_audio(torch.from_numpy(x), 48000, source_sr=24000)) == 12000
    with pytest.raises(ValueError, match="source_sr"):
        load_audio(x, 16000)


def test_container_fallback_m4a(tmp_path):
    path = tmp_path / "a.m4a"
    sr = 44100
    x = _tone(sr, 1.0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    y = load_audio(path, 16000)
    # AAC adds encoder priming/padding: about 1 s, not exactly.
    assert 15500 < len(y) < 17500
    assert abs(_dominant_hz(y, 16000) - 440) < 5


def test_espeak_speech(tmp_path):
    path = tmp_path / "speech.wav"
    try:
        subprocess.run(["espeak-ng", "-w", str(path), "hello there"], check=True, timeout=20)
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("espeak-ng not available")
    y = load_audio(path, 16000)
    assert len(y) > 8000 and np.abs(y).max() > 0.01


def test_empty_inputs(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty"):
        load_audio(empty, 16000)
    zero_len = tmp_path / "zero.wav"
    sf.write(zero_len, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(EmptyAudioError, match="no samples"):
        load_audio(zero_len, 16000)
    with pytest.raises(EmptyAudioError):
        load_audio(np.zeros(0, np.float32), 16000, source_sr=16000)
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav", 16000)


def test_silent_is_opt_in(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    with pytest.raises(SilentAudioError, match="silent.*allow_silent=True"):
        load_audio(path, 16000)
    quiet = _tone(16000, 0.5, amp=1e-5)
    with pytest.raises(SilentAudioError):
        load_audio(quiet, 16000, source_sr=16000)
    y = load_audio(path, 16000, allow_silent=True)
    assert len(y) == 16000 and not y.any()


def test_clipped_warns_or_errors():
    x = np.clip(_tone(16000, 0.5, amp=3.0), -1.0, 1.0)
    with pytest.warns(ClippedAudioWarning, match="clipped"):
        load_audio(x, 16000, source_sr=16000)
    with pytest.raises(ClippedAudioError, match="full scale"):
        load_audio(x, 16000, source_sr=16000, on_clipped="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_audio(x, 16000, source_sr=16000, on_clipped="ignore")
        load_audio(_tone(16000, 0.5, amp=0.9), 16000, source_sr=16000)


def test_not_audio(tmp_path):
    png = tmp_path / "image.wav"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(NotAudioError, match="not an audio file.*PNG"):
        load_audio(png, 16000)
    text = tmp_path / "notes.wav"
    text.write_text("these are meeting notes, not audio\n")
    with pytest.raises(NotAudioError, match="not an audio file.*text"):
        load_audio(text, 16000)
