"""Online audio windows: each 1-s video chunk sees a 3-s audio window (2 s history + 1 s current).

Shape legend
    B  batch
    N  audio samples
    T  video frames
    D  feature width

Chunk c (0-based) covers video frames [c * Tc, (c + 1) * Tc) with Tc = fps * current_s, and its
window covers [c * stride_s - history_s, c * stride_s + current_s) seconds. Before the clip's start
(and past its end) a window is zero-padded: zeros in samples for `audio_window`, zeros in
features for `feature_window`.

Two uses:
    * online inference encodes each `audio_window` on its own (the encoder sees only the past and
      the current second);
    * training cuts whole-clip features with `feature_window`, so training and streaming feed the
      DiT windows of the same shape.
For log-mel features the two agree frame for frame wherever the window holds real audio, except
at the window's two edges: its last video frame (whose last analysis window reaches n_fft / 2
samples past the window end) and, when real audio precedes the window, its first one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AudioWindowConfig", "AudioWindows"]


@dataclass(kw_only=True)
class AudioWindowConfig:
    """Geometry of online audio windows."""

    sample_rate: int = 16000
    """Audio sample rate in Hz."""
    fps: int = 24
    """Video frame rate in frames per second (integer so chunks hold whole frames)."""
    history_s: float = 2.0
    """Seconds of past audio in each window."""
    current_s: float = 1.0
    """Seconds of audio for the chunk being generated; also the stride between windows."""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.fps <= 0:
            raise ValueError(f"sample_rate and fps must be > 0, got {self.sample_rate}, {self.fps}")
        for name in ("history_s", "current_s"):
            seconds = getattr(self, name)
            if seconds < 0 or (name == "current_s" and seconds == 0):
                raise ValueError(f"{name} must be positive, got {seconds}")
            if not _is_int(seconds * self.sample_rate) or not _is_int(seconds * self.fps):
                raise ValueError(
                    f"{name}={seconds} s must hold a whole number of samples and video frames"
                )


def _is_int(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


class AudioWindows:
    """Cuts samples or features into per-chunk windows (see the module docstring)."""

    def __init__(self, config: AudioWindowConfig | None = None) -> None:
        self.config = cfg = config or AudioWindowConfig()
        self.history_samples = round(cfg.history_s * cfg.sample_rate)
        self.current_samples = round(cfg.current_s * cfg.sample_rate)
        self.history_frames = round(cfg.history_s * cfg.fps)
        self.current_frames = round(cfg.current_s * cfg.fps)

    @property
    def window_samples(self) -> int:
        return self.history_samples + self.current_samples

    @property
    def window_frames(self) -> int:
        return self.history_frames + self.current_frames

    def num_chunks(self, num_samples: int) -> int:
        """Chunks needed to cover N samples (the last one may be partly padding)."""
        return max(1, math.ceil(num_samples / self.current_samples))

    def audio_window(self, waveform: torch.Tensor, chunk: int) -> torch.Tensor:
        """Samples (B, N) or (N,) → window (B, window_samples) for chunk ``chunk``."""
        wave_bn = waveform[None] if waveform.ndim == 1 else waveform
        end = (chunk + 1) * self.current_samples
        return _cut(wave_bn, end - self.window_samples, end, dim=1)

    def feature_window(self, features_btd: torch.Tensor, chunk: int) -> torch.Tensor:
        """Whole-clip features (B, T, D) → window (B, window_frames, D) for chunk ``chunk``."""
        end = (chunk + 1) * self.current_frames
        return _cut(features_btd, end - self.window_frames, end, dim=1)

    def current(self, window_btd: torch.Tensor) -> torch.Tensor:
        """The chunk's own frames of a feature window: (B, window_frames, D) → (B, Tc, D)."""
        return window_btd[:, self.history_frames :]

    def iter_audio_windows(self, waveform: torch.Tensor) -> Iterator[torch.Tensor]:
        """Windows (B, window_samples) for every chunk of the clip, in order."""
        for chunk in range(self.num_chunks(waveform.shape[-1])):
            yield self.audio_window(waveform, chunk)

    def encode_online(
        self, waveform: torch.Tensor, encoder: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Encode every window separately and stack: (B, n_chunks, window_frames, D).

        ``encoder`` maps a window (B, window_samples) to features (B, window_frames, D).
        """
        windows = []
        for window_bn in self.iter_audio_windows(waveform):
            feats = encoder(window_bn)
            if feats.shape[1] != self.window_frames:
                raise ValueError(
                    f"encoder returned {feats.shape[1]} frames per window, expected "
                    f"{self.window_frames}"
                )
            windows.append(feats)
        return torch.stack(windows, dim=1)


def _cut(x: torch.Tensor, start: int, end: int, *, dim: int) -> torch.Tensor:
    """x[start:end] along ``dim`` with zeros where the range leaves x."""
    size = x.shape[dim]
    lo = min(max(start, 0), size)
    hi = min(max(end, lo), size)
    part = x.narrow(dim, lo, hi - lo)
    pad_before = max(lo - start, 0)
    pad_after = (end - start) - pad_before - (hi - lo)
    # F.pad lists pads from the last dim backwards.
    pads = [0, 0] * (x.ndim - 1 - dim) + [pad_before, pad_after]
    return F.pad(part, pads)
