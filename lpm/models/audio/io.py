"""Audio loading with validation: any sample rate, mono or multi-channel, resampled to mono.

Files are read with soundfile (wav, flac, ogg, mp3); containers soundfile cannot read (mp4, m4a,
webm, aac, ...) fall back to PyAV's FFmpeg. Arrays and tensors are accepted too.

Every failure has its own exception, all subclasses of `AudioLoadError` (a `ValueError`):
    EmptyAudioError    the file has 0 bytes or decodes to 0 samples
    NotAudioError      the file is not audio (an image or text renamed .wav, ...)
    SilentAudioError   the signal is silent; pass ``allow_silent=True`` when that is intended
    ClippedAudioError  too many samples at full scale (``on_clipped="error"``); with the default
                       ``on_clipped="warn"`` a `ClippedAudioWarning` is emitted instead
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

__all__ = [
    "AudioLoadError",
    "ClippedAudioError",
    "ClippedAudioWarning",
    "EmptyAudioError",
    "NotAudioError",
    "SilentAudioError",
    "load_audio",
    "resample",
]


class AudioLoadError(ValueError):
    """Base class of audio loading errors."""


class EmptyAudioError(AudioLoadError):
    """The audio has no samples."""


class NotAudioError(AudioLoadError):
    """The file could not be decoded as audio."""


class SilentAudioError(AudioLoadError):
    """The audio is silent and silence was not allowed."""


class ClippedAudioError(AudioLoadError):
    """Too large a fraction of the samples sit at full scale."""


class ClippedAudioWarning(UserWarning):
    """Too large a fraction of the samples sit at full scale."""


def load_audio(
    source: str | Path | np.ndarray | torch.Tensor,
    target_sr: int,
    *,
    source_sr: int | None = None,
    allow_silent: bool = False,
    silence_threshold: float = 1e-4,
    on_clipped: Literal["warn", "error", "ignore"] = "warn",
    clip_level: float = 0.999,
    clip_fraction: float = 0.01,
) -> np.ndarray:
    """Load audio as mono float32 samples at ``target_sr`` Hz, shape (N,).

    Args:
        source: a file path, or samples shaped (N,), (N, channels) or (channels, N) with
            channels <= 8; integer arrays are scaled from their dtype's full range.
        target_sr: output sample rate in Hz.
        source_sr: sample rate of ``source`` in Hz; required for arrays, ignored for files.
        allow_silent: accept a silent signal (peak below ``silence_threshold``), e.g. an idle
            segment on purpose. Off by default because a silent file is usually a mistake.
        silence_threshold: peak amplitude (full scale = 1.0) under which audio counts as silent;
            1e-4 is -80 dBFS.
        on_clipped: what to do when more than ``clip_fraction`` of the samples have
            ``abs >= clip_level``: warn (default), raise `ClippedAudioError`, or ignore.
    """
    if target_sr <= 0:
        raise ValueError(f"target_sr must be a positive rate in Hz, got {target_sr}")
    if on_clipped not in ("warn", "error", "ignore"):
        raise ValueError(f"on_clipped must be 'warn', 'error' or 'ignore', got {on_clipped!r}")
    if isinstance(source, (str, Path)):
        name = str(source)
        samples_nc, sr = _read_file(Path(source))
    else:
        name = "the given array"
        if source_sr is None or source_sr <= 0:
            raise ValueError("source_sr (Hz) is required when loading audio from an array")
        samples_nc, sr = _array_to_nc(source), int(source_sr)
    if samples_nc.shape[0] == 0:
        raise EmptyAudioError(f"audio {name} contains no samples")
    if not np.isfinite(samples_nc).all():
        raise AudioLoadError(f"audio {name} contains NaN or infinite samples")

    peak = float(np.abs(samples_nc).max())
    if peak < silence_threshold and not allow_silent:
        raise SilentAudioError(
            f"audio {name} is silent (peak amplitude {peak:.2e} < {silence_threshold:.0e}). "
            "Silence is valid only if intended (an idle or listening segment): pass "
            "allow_silent=True to accept it."
        )
    clipped = float((np.abs(samples_nc).max(axis=1) >= clip_level).mean())
    if clipped > clip_fraction and on_clipped != "ignore":
        msg = (
            f"audio {name} looks clipped: {clipped:.1%} of samples are at full scale "
            f"(|x| >= {clip_level}); re-export it with lower gain for clean features"
        )
        if on_clipped == "error":
            raise ClippedAudioError(msg)
        warnings.warn(msg, ClippedAudioWarning, stacklevel=2)

    mono = samples_nc.mean(axis=1, dtype=np.float64)
    return resample(mono, sr, target_sr).astype(np.float32)


def resample(samples: np.ndarray, source_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling of (N,) samples from ``source_sr`` to ``target_sr`` Hz."""
    from scipy.signal import resample_poly

    if source_sr == target_sr:
        return samples
    g = math.gcd(int(source_sr), int(target_sr))
    return resample_poly(samples, int(target_sr) // g, int(source_sr) // g)


def _array_to_nc(source: np.ndarray | torch.Tensor) -> np.ndarray:
    arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 1:
        return arr[:, None]
    if arr.ndim != 2:
        raise ValueError(
            f"audio arrays must be (N,), (N, channels) or (channels, N), got {arr.shape}"
        )
    if arr.shape[0] <= 8 < arr.shape[1]:
        arr = arr.T
    return arr


def _sniff(path: Path) -> str:
    head = path.read_bytes()[:512]
    if head.startswith(b"\x89PNG"):
        return "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text" if text.isprintable() or text.strip() else "unrecognised data"


def _read_file(path: Path) -> tuple[np.ndarray, int]:
    if not path.is_file():
        raise FileNotFoundError(f"audio file {path} does not exist")
    if path.stat().st_size == 0:
        raise EmptyAudioError(f"audio file {path} is empty (0 bytes)")
    import soundfile as sf

    try:
        samples_nc, sr = sf.read(str(path), dtype="float32", always_2d=True)
        return samples_nc, int(sr)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        pass
    return _read_with_av(path)


def _read_with_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    not_audio = (
        f"{path} is not an audio file: neither libsndfile nor FFmpeg could decode audio from it "
        f"(it looks like {_sniff(path)}). Pass a wav/flac/mp3/m4a/mp4 file with an audio track."
    )
    try:
        container = av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise NotAudioError(not_audio) from exc
    with container:
        if not container.streams.audio:
            raise NotAudioError(not_audio)
        stream = container.streams.audio[0]
        sr = int(stream.rate)
        resampler = av.AudioResampler(format="fltp", layout=stream.layout.name, rate=sr)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise NotAudioError(not_audio) from exc
    if not chunks:
        raise EmptyAudioError(f"audio file {path} contains no audio samples")
    return np.concatenate(chunks, axis=1).T.astype(np.float32), sr
