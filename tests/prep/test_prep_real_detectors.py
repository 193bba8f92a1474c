"""The real detectors on a real photograph and real (espeak-ng) speech."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from lpm.data.prep.config import DetectConfig, LabelConfig
from lpm.data.prep.detect import make_backend


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data", reason="needs scikit-image (test extra)")
    return data.astronaut()  # 512x512 RGB photograph with one face


def _check_face(faces, w):
    assert len(faces) == 1
    f = faces[0]
    x0, y0, x1, y1 = f.box
    # the astronaut's face sits around x 170-270, y 70-180 in the 512 px image
    assert 140 < (x0 + x1) / 2 < 260 and 80 < (y0 + y1) / 2 < 180 and 50 < x1 - x0 < 160
    assert np.isfinite(f.mouth) and 0 <= f.mouth < 0.6 and abs(f.yaw) < 45


def test_mediapipe_face_and_mesh(astronaut):
    pytest.importorskip("mediapipe", reason="mediapipe 0.10.21 (pip install --no-deps)")
    faces = make_backend(DetectConfig(backend="mediapipe")).detect(astronaut)
    _check_face(faces, astronaut.shape[1])


def test_dlib_face_landmarks_embedding(astronaut):
    pytest.importorskip("dlib", reason="needs dlib-bin (prep extra)")
    try:
        from lpm.data.prep.detect import dlib_model_dir

        dlib_model_dir()
    except ImportError:
        pytest.skip("needs face_recognition_models (prep extra)")
    faces = make_backend(DetectConfig(backend="dlib", embeddings=True)).detect(astronaut)
    _check_face(faces, astronaut.shape[1])
    emb = faces[0].feature
    assert emb.shape == (128,) and 0.5 < np.linalg.norm(emb) < 2.0
    # the same face flipped is still the same person by dlib's 0.6 distance rule
    flip = make_backend(DetectConfig(backend="dlib", embeddings=True)).detect(
        np.ascontiguousarray(astronaut[:, ::-1])
    )
    assert np.linalg.norm(flip[0].feature - emb) < 0.6


def test_real_detectors_do_not_fire_on_noise():
    pytest.importorskip("mediapipe")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    assert make_backend(DetectConfig(backend="mediapipe")).detect(img) == []


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_silero_separates_speech_from_silence_and_noise(tmp_path):
    pytest.importorskip("silero_vad", reason="needs silero-vad (prep extra)")
    from lpm.data.prep.labels import speech_frames
    from lpm.data.prep.media import _resample

    wav = tmp_path / "s.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "The quick brown fox jumps over the lazy dog today."],
        check=True,
    )
    speech, sr = sf.read(wav, dtype="float32")
    speech = _resample(speech, sr, 16_000)
    rng = np.random.default_rng(0)
    silence = np.zeros(16_000, np.float32)
    noise = (0.05 * rng.standard_normal(32_000)).astype(np.float32)
    audio = np.concatenate([silence, noise, speech, silence])
    fps, n = 25, int(len(audio) / 16_000 * 25)
    sp = speech_frames(audio, 16_000, fps, n, LabelConfig(vad="silero"))
    a, b = 75, 75 + int(len(speech) / 16_000 * fps)
    assert sp[a:b].mean() > 0.7  # speech found
    assert sp[:25].mean() == 0 and sp[30:70].mean() < 0.1  # silence and noise rejected
    assert sp[b + 8 :].mean() < 0.1


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_silero_segments_start_and_end_on_time(tmp_path):
    """Speech segments end where the voice stops, not a few frames later (silero's lag)."""
    pytest.importorskip("silero_vad", reason="needs silero-vad (prep extra)")
    from lpm.data.prep.labels import speech_frames
    from lpm.data.prep.media import _resample

    sr, fps = 16_000, 25
    parts, spans, t = [np.zeros(sr, np.float32)], [], sr
    for i, text in enumerate(
        (
            "We should fix something in the morning.",
            "Honestly, my bike was quiet, and I loved it.",
            "I think my neighbour is boring.",
        )
    ):
        subprocess.run(["espeak-ng", "-w", str(tmp_path / f"{i}.wav"), text], check=True)
        x, rate = sf.read(tmp_path / f"{i}.wav", dtype="float32")
        x = _resample(x, rate, sr)
        voiced = np.nonzero(np.abs(x) > 0.01)[0]
        x = x[voiced[0] : voiced[-1] + 1]
        parts += [x, np.zeros(sr, np.float32)]
        spans.append((t / sr * fps, (t + len(x)) / sr * fps))
        t += len(x) + sr
    audio = np.concatenate(parts)
    sp = speech_frames(audio, sr, fps, int(len(audio) / sr * fps), LabelConfig(vad="silero"))
    d = np.diff(np.r_[0, sp.astype(np.int8), 0])
    on, off = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    assert len(on) == len(spans)
    # mean signed error in frames: onsets +0.4, ends +1.0 (padded and uncorrected: -0.6, +2.3)
    assert abs(np.mean(on - [a for a, _ in spans])) < 1.5
    assert abs(np.mean(off - [b for _, b in spans])) < 1.5
