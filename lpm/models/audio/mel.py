"""Log-mel audio features aligned to video frames, and a learned projector (lpm-nano's audio path).

Shape legend
    B  batch
    N  audio samples (at ``sample_rate`` Hz)
    T  video frames (at ``fps``)
    k  mel frames per video frame (``mels_per_frame``)
    M  mel bands (``n_mels``)
    D  projector output width

Alignment: mel frame j (j = i k + m for video frame i, sub-frame m) is centred at
``(i + (m + 0.5) / k) / fps`` seconds, rounded to the nearest sample; its analysis window spans
``n_fft`` samples around that centre, with zeros outside the signal. The effective hop is
``sample_rate / (fps k)`` samples and need not be an integer (16 kHz at 24 fps: 166.67), so every
video frame gets exactly k mel frames for any duration, and a shift of the audio by a whole number
of video-frame groups with an integer sample count (e.g. 1 s) shifts the features exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AudioProjector",
    "AudioProjectorConfig",
    "LogMelConfig",
    "LogMelFeatures",
    "mel_filterbank",
]


@dataclass(kw_only=True)
class LogMelConfig:
    """Log-mel analysis aligned to a video frame rate."""

    sample_rate: int = 16000
    """Audio sample rate in Hz."""
    fps: float = 24.0
    """Video frame rate in frames per second."""
    mels_per_frame: int = 4
    """k: mel frames per video frame."""
    n_mels: int = 80
    """M: mel bands."""
    n_fft: int = 400
    """FFT size and Hann window length in samples (400 = 25 ms at 16 kHz)."""
    f_min: float = 0.0
    """Lowest band edge in Hz."""
    f_max: float | None = None
    """Highest band edge in Hz; None means sample_rate / 2."""
    log_floor: float = 1e-5
    """Mel power is clamped to this before the natural log."""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {self.sample_rate}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.mels_per_frame < 1:
            raise ValueError(f"mels_per_frame must be >= 1, got {self.mels_per_frame}")
        if self.n_mels < 1:
            raise ValueError(f"n_mels must be >= 1, got {self.n_mels}")
        if self.n_fft < 8:
            raise ValueError(f"n_fft must be >= 8 samples, got {self.n_fft}")
        f_max = self.sample_rate / 2 if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= self.sample_rate / 2:
            raise ValueError(
                f"need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, f_max={f_max}"
            )
        if self.log_floor <= 0:
            raise ValueError(f"log_floor must be > 0, got {self.log_floor}")

    @property
    def feature_dim(self) -> int:
        """Features per video frame: n_mels * mels_per_frame."""
        return self.n_mels * self.mels_per_frame

    @property
    def fps_fraction(self) -> Fraction:
        """fps as an exact fraction (29.97 → 2997/100; NTSC 30000/1001 up to 1e-6)."""
        return Fraction(self.fps).limit_denominator(1001)

    def num_video_frames(self, num_samples: int) -> int:
        """Video frames covering N samples: round(N fps / sample_rate)."""
        fps = self.fps_fraction
        return int(Fraction(num_samples) * fps / self.sample_rate + Fraction(1, 2))


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float
) -> torch.Tensor:
    """HTK-scale triangular filters (n_mels, n_fft // 2 + 1), peak 1, over FFT bins in Hz."""
    bin_hz = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_edges = torch.linspace(
        _hz_to_mel(torch.tensor(f_min, dtype=torch.float64)),
        _hz_to_mel(torch.tensor(f_max, dtype=torch.float64)),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz = _mel_to_hz(mel_edges)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (bin_hz[None] - lower) / (centre - lower)
    falling = (upper - bin_hz[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMelFeatures(nn.Module):
    """Waveform (B, N) at ``sample_rate`` → log-mel per video frame (B, T, k * M).

    The last dimension is ordered sub-frame-major: ``[m * M + band]`` for sub-frame m.
    """

    def __init__(self, config: LogMelConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or LogMelConfig()
        f_max = cfg.sample_rate / 2 if cfg.f_max is None else cfg.f_max
        fb = mel_filterbank(cfg.n_mels, cfg.n_fft, cfg.sample_rate, cfg.f_min, f_max)
        self.register_buffer("filterbank", fb, persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def frame_centres(self, n_video_frames: int) -> torch.Tensor:
        """Sample index of every mel frame's centre, (T * k,) int64 (exact integer rounding)."""
        cfg = self.config
        fps = cfg.fps_fraction
        k = cfg.mels_per_frame
        j = torch.arange(n_video_frames * k, dtype=torch.long)
        # round((j + 1/2) * sr / (fps k)) with fps = p / q, in integers: no float drift.
        p, q = fps.numerator, fps.denominator
        return ((2 * j + 1) * cfg.sample_rate * q + p * k) // (2 * p * k)

    def forward(self, waveform: torch.Tensor, n_video_frames: int | None = None) -> torch.Tensor:
        """Waveform (B, N) or (N,) → features (B, T, k * M).

        ``n_video_frames`` defaults to round(N fps / sample_rate); more frames than the audio
        covers read zeros past its end.
        """
        cfg = self.config
        wave_bn = waveform[None] if waveform.ndim == 1 else waveform
        if wave_bn.ndim != 2:
            raise ValueError(f"waveform must be (B, N) or (N,), got {tuple(waveform.shape)}")
        n = wave_bn.shape[1]
        t = cfg.num_video_frames(n) if n_video_frames is None else n_video_frames
        if t < 0:
            raise ValueError(f"n_video_frames must be >= 0, got {t}")
        centres = self.frame_centres(t).to(wave_bn.device)
        half = cfg.n_fft // 2
        right = max(0, int(centres[-1]) + cfg.n_fft - half - n) if t else 0
        padded_bn = F.pad(wave_bn.float(), (half, right))
        # Window of frame j covers original samples [c_j - half, c_j - half + n_fft).
        idx_jn = centres[:, None] + torch.arange(cfg.n_fft, device=wave_bn.device)[None]
        frames_bjn = padded_bn[:, idx_jn] * self.window
        power_bjf = torch.fft.rfft(frames_bjn, dim=-1).abs().pow(2)
        mel_bjm = power_bjf @ self.filterbank.T
        logmel_bjm = torch.log(torch.clamp(mel_bjm, min=cfg.log_floor))
        return logmel_bjm.reshape(wave_bn.shape[0], t, cfg.feature_dim)


@dataclass(kw_only=True)
class AudioProjectorConfig:
    """Per-frame MLP from audio features to the DiT's audio token width."""

    in_dim: int = 320
    """Input features per video frame (LogMelConfig.feature_dim or the wav2vec2 width)."""
    out_dim: int = 256
    """Output width D."""
    hidden_dim: int = 512
    """MLP hidden width."""
    temporal_kernel: int = 1
    """Odd kernel (frames) of a depthwise conv mixing neighbouring frames; 1 disables it. Any
    value > 1 looks (kernel - 1) / 2 frames ahead."""

    def __post_init__(self) -> None:
        for name in ("in_dim", "out_dim", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temporal_kernel < 1 or self.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and >= 1, got {self.temporal_kernel}")


class AudioProjector(nn.Module):
    """Features (B, T, in_dim) → audio tokens (B, T, D)."""

    def __init__(self, config: AudioProjectorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or AudioProjectorConfig()
        self.norm_in = nn.LayerNorm(cfg.in_dim)
        self.fc1 = nn.Linear(cfg.in_dim, cfg.hidden_dim)
        self.temporal = (
            nn.Conv1d(
                cfg.hidden_dim,
                cfg.hidden_dim,
                cfg.temporal_kernel,
                padding=cfg.temporal_kernel // 2,
                groups=cfg.hidden_dim,
            )
            if cfg.temporal_kernel > 1
            else None
        )
        self.fc2 = nn.Linear(cfg.hidden_dim, cfg.out_dim)
        self.norm_out = nn.LayerNorm(cfg.out_dim)

    def forward(self, features_btf: torch.Tensor) -> torch.Tensor:
        if features_btf.ndim != 3 or features_btf.shape[-1] != self.config.in_dim:
            raise ValueError(
                f"features must be (B, T, {self.config.in_dim}), got {tuple(features_btf.shape)}"
            )
        h_bth = F.gelu(self.fc1(self.norm_in(features_btf)))
        if self.temporal is not None:
            h_bth = h_bth + self.temporal(h_bth.transpose(1, 2)).transpose(1, 2)
        return self.norm_out(self.fc2(h_bth))
