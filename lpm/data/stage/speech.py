"""Speech for Stage characters: espeak-ng when installed, else a built-in formant synthesizer.

Both backends return mono float32 audio at the requested sample rate, trimmed of leading and
trailing silence and normalised to the same RMS level, so the rest of the world (mouth motion,
mixing) does not care which one produced it.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
import zlib

import numpy as np
import soundfile as sf
from scipy.signal import lfilter, resample_poly

from lpm.data.stage.character import Voice

log = logging.getLogger(__name__)

BACKENDS = ("auto", "espeak", "formant")
TARGET_RMS = 0.08
"""RMS level (full scale = 1) of every synthesized utterance."""


def find_espeak() -> str | None:
    """Path of the espeak-ng executable, or None when it is not installed."""
    return shutil.which("espeak-ng")


def resolve_backend(backend: str = "auto") -> str:
    """Return the concrete backend (`espeak` or `formant`) for a requested one.

    Raises:
        ValueError: unknown backend, or `espeak` requested but not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"speech backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "espeak" if find_espeak() else "formant"
    if backend == "espeak" and find_espeak() is None:
        raise ValueError(
            "speech backend 'espeak' requested but espeak-ng is not installed "
            "(apt-get install espeak-ng), or use backend 'formant'"
        )
    return backend


def synthesize(
    text: str, voice: Voice, sample_rate: int = 16_000, backend: str = "auto", seed: int = 0
) -> np.ndarray:
    """Speak `text` in `voice`.

    Args:
        sample_rate: output rate (Hz).
        backend: `auto` (espeak-ng if installed), `espeak` or `formant`.
        seed: varies the formant synthesizer's noise and intonation (ignored by espeak-ng).

    Returns:
        float32 mono samples in [-1, 1], trimmed, RMS-normalised to `TARGET_RMS`.
    """
    if not text.strip():
        raise ValueError("synthesize needs non-empty text")
    if sample_rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {sample_rate}")
    kind = resolve_backend(backend)
    if kind == "espeak":
        audio = _espeak(text, voice, sample_rate)
    else:
        audio = formant_synthesize(text, voice, sample_rate, seed=seed)
    return _normalise(_trim(audio, sample_rate))


def _espeak(text: str, voice: Voice, sample_rate: int) -> np.ndarray:
    exe = find_espeak()
    if exe is None:
        raise RuntimeError("espeak-ng disappeared between lookup and use")
    fd, path = tempfile.mkstemp(suffix=".wav", prefix="lpm-stage-")
    os.close(fd)
    try:
        cmd = [
            exe,
            "-v",
            voice.espeak_voice,
            "-s",
            str(voice.rate_wpm),
            "-p",
            str(voice.pitch),
            "-w",
            path,
            text,
        ]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        audio, sr = sf.read(path, dtype="float32", always_2d=False)
    finally:
        os.unlink(path)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sr != sample_rate:
        g = math.gcd(int(sr), int(sample_rate))
        audio = resample_poly(audio, sample_rate // g, int(sr) // g).astype(np.float32)
    return audio


def _trim(audio: np.ndarray, sample_rate: int, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold * max(1e-9, float(np.abs(audio).max())))
    if loud.size == 0:
        return audio
    pad = int(0.01 * sample_rate)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad]


def _normalise(audio: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    if rms < 1e-8:
        return audio.astype(np.float32)
    out = audio * (TARGET_RMS / rms)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# --- built-in formant synthesizer -------------------------------------------------------------

# phone class, formants F1..F3 (Hz), voiced gain, noise gain, duration (s)
_VOWELS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (300, 2200, 2950),
    "o": (570, 840, 2410),
    "u": (320, 900, 2240),
    "y": (300, 2100, 2900),
}
_SONORANTS = {
    "l": (360, 1300, 2500),
    "r": (420, 1250, 1600),
    "w": (300, 650, 2200),
    "m": (250, 1100, 2300),
    "n": (250, 1400, 2500),
    "j": (280, 2100, 2800),
}
_FRICATIVES = {"s": 5200, "z": 4800, "f": 3500, "v": 3000, "h": 1500, "x": 4200, "c": 4600}
_STOPS = {"p": 2500, "b": 1200, "t": 4000, "d": 3000, "k": 2200, "g": 1800, "q": 2200}


def _phones(text: str) -> list[tuple[str, tuple[float, float, float], float, float, float, float]]:
    """Letters -> (kind, formants, voiced gain, noise gain, duration s, noise centre Hz)."""
    out = []
    prev_vowel = (500.0, 1500.0, 2500.0)
    for word in text.lower().replace("-", " ").split():
        for ch in word:
            if ch in _VOWELS:
                prev_vowel = _VOWELS[ch]
                out.append(("V", prev_vowel, 1.0, 0.0, 0.11, 0.0))
            elif ch in _SONORANTS:
                gain = 0.35 if ch in "mn" else 0.55
                out.append(("S", _SONORANTS[ch], gain, 0.0, 0.07, 0.0))
            elif ch in _FRICATIVES:
                voiced = 0.25 if ch in "zv" else 0.0
                out.append(("F", prev_vowel, voiced, 0.45, 0.09, float(_FRICATIVES[ch])))
            elif ch in _STOPS:
                out.append(("C", prev_vowel, 0.0, 0.0, 0.05, 0.0))
                out.append(("B", prev_vowel, 0.1, 0.6, 0.025, float(_STOPS[ch])))
            elif ch in ",;:":
                out.append(("P", prev_vowel, 0.0, 0.0, 0.18, 0.0))
            elif ch in ".!?":
                out.append(("P", prev_vowel, 0.0, 0.0, 0.05, 0.0))
        out.append(("P", prev_vowel, 0.0, 0.0, 0.045, 0.0))
    return out


def _resonator(freq: float, bw: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = math.exp(-math.pi * bw / sr)
    c = 2 * r * math.cos(2 * math.pi * freq / sr)
    a = np.array([1.0, -c, r * r])
    return np.array([a.sum()]), a


def formant_synthesize(
    text: str, voice: Voice, sample_rate: int = 16_000, seed: int = 0
) -> np.ndarray:
    """A small source-filter synthesizer: glottal pulses + noise through 3 formant resonators.

    Letters map to vowel, sonorant, fricative and stop phones; formants are interpolated every
    10 ms; F0 follows a declining contour with word accents and a final rise for questions.

    Returns:
        float32 mono samples (not normalised).
    """
    phones = _phones(text)
    if not phones:
        raise ValueError(f"formant synthesizer found nothing to say in {text!r}")
    rng = np.random.default_rng(zlib.crc32(f"{text}|{voice.espeak_voice}|{seed}".encode()))
    speed = 130.0 / max(60, voice.rate_wpm)
    hop = int(0.01 * sample_rate)
    # per 10-ms frame targets
    f_list, gv_list, gn_list, nc_list = [], [], [], []
    for _kind, formants, gv, gn, dur, centre in phones:
        n = max(1, int(round(dur * speed * rng.uniform(0.85, 1.15) / 0.01)))
        f_list += [formants] * n
        gv_list += [gv] * n
        gn_list += [gn] * n
        nc_list += [centre] * n
    formants = np.asarray(f_list, np.float64) * voice.formant_scale
    kernel = np.hanning(5) / np.hanning(5).sum()
    formants = np.stack(
        [np.convolve(np.pad(formants[:, k], 2, mode="edge"), kernel, "valid") for k in range(3)],
        axis=1,
    )
    gv = np.convolve(np.pad(np.asarray(gv_list), 2, mode="edge"), kernel, "valid")
    gn = np.convolve(np.pad(np.asarray(gn_list), 2, mode="edge"), kernel, "valid")
    n_frames = len(gv)
    t = np.arange(n_frames) / n_frames
    accents = np.zeros(n_frames)
    for centre in rng.uniform(0, 1, size=max(1, len(text.split()) // 2)):
        accents += 0.12 * np.exp(-0.5 * ((t - centre) / 0.05) ** 2)
    f0 = voice.f0_hz * (1.08 - 0.18 * t + accents)
    if text.strip().endswith("?"):
        f0 *= 1.0 + 0.35 * np.clip((t - 0.8) / 0.2, 0, 1)
    # sample-rate source: glottal pulse train + white noise
    n = n_frames * hop
    f0_s = np.repeat(f0, hop)
    phase = np.cumsum(f0_s / sample_rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    glottal = lfilter([1.0], [1.0, -0.96], pulses)
    glottal = glottal - lfilter([1.0], [1.0, -0.995], glottal) * 0.02
    noise = rng.standard_normal(n) * 0.3
    out = np.zeros(n)
    zi_v = [np.zeros(2) for _ in range(3)]
    zi_n = np.zeros(2)
    bws = (80.0, 110.0, 160.0)
    for i in range(n_frames):
        sl = slice(i * hop, (i + 1) * hop)
        v = glottal[sl] * gv[i]
        for k in range(3):
            b, a = _resonator(formants[i, k], bws[k], sample_rate)
            v, zi_v[k] = lfilter(b, a, v, zi=zi_v[k])
        seg = v
        if gn[i] > 0.01:
            centre = nc_list[i] if nc_list[i] > 0 else 2500.0
            centre = min(centre, 0.45 * sample_rate)
            b, a = _resonator(centre, 1200.0, sample_rate)
            nz, zi_n = lfilter(b, a, noise[sl] * gn[i], zi=zi_n)
            seg = seg + nz
        out[sl] = seg
    peak = float(np.abs(out).max()) or 1.0
    return (0.5 * out / peak).astype(np.float32)
