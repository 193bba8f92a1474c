"""SyncNet scoring of a video against a speech track: AV offset, confidence and minimum distance.

The procedure of the released SyncNet evaluation (syncnet_python), so that its weights see the
inputs they were trained on:

- Video at 25 fps (other rates are resampled by nearest frame, as `ffmpeg -r 25` does). Each
  frame is cropped around the face: with the face box half-size s (max of width and height / 2)
  and centre (x, y), median-filtered over 13 frames, the crop spans rows y - s .. y + 1.8 s and
  columns x - 1.4 s .. x + 1.4 s (crop scale 0.4), outside the frame filled with grey 110, and
  is resized to 224 x 224 BGR. The face box comes from the real-face backend's landmarks.
- Audio at 16 kHz on the 16-bit integer scale; 13 MFCCs at 100 Hz (rectangular 25-ms frames,
  26 mel filters, 512-point FFT, pre-emphasis 0.97, lifter 22, c0 replaced by log energy).
- Window i pairs video frames i..i+4 with MFCC steps 4i..4i+19 (0.2 s each). For offsets
  k = -15..15 the distance between lip window i and audio window i - k (zero vectors beyond the
  ends) is averaged over windows; the offset is the minimiser, the confidence the median over
  offsets minus the minimum, and the minimum distance is reported too.

`offset` > 0 means the audio leads the video (the lips lag) by that many 25-fps frames; note
that the correlation metric `sync_offset` uses the opposite sign (> 0: the mouth leads).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy import fft, ndimage
from scipy.signal import resample_poly

from lpm.bench.nets.syncnet import SyncNet

SYNCNET_FPS = 25.0
"""Video rate (frames/s) SyncNet was trained at."""
SYNCNET_SAMPLE_RATE = 16_000
"""Audio rate (Hz) of its MFCC front end."""
MFCC_PER_FRAME = 4
"""MFCC steps (100 Hz) per video frame (25 fps)."""
VSHIFT = 15
"""Offsets searched, in 25-fps frames, both directions."""
CROP_SCALE = 0.4
"""Crop margin relative to the face box half-size (the released pipeline's `crop_scale`)."""
SMOOTH_FRAMES = 13
"""Median filter length (frames) applied to the face box track."""
FILL = 110
"""Grey level of crop areas outside the frame."""


# --- audio front end ----------------------------------------------------------------------------


def _mel_filterbank(n_filters: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """(n_filters, n_fft // 2 + 1) triangular filters on FFT bins, equally spaced in mel."""
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + sample_rate / 2 / 700.0), n_filters + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    bins = np.floor((n_fft + 1) * hz / sample_rate).astype(int)
    bank = np.zeros((n_filters, n_fft // 2 + 1))
    for j in range(n_filters):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        k = np.arange(lo, mid)
        bank[j, k] = (k - lo) / (mid - lo)
        k = np.arange(mid, hi)
        bank[j, k] = (hi - k) / (hi - mid)
    return bank


def mfcc(
    audio: np.ndarray,
    sample_rate: int = SYNCNET_SAMPLE_RATE,
    *,
    n_ceps: int = 13,
    n_filters: int = 26,
    n_fft: int = 512,
    win_s: float = 0.025,
    hop_s: float = 0.01,
    preemph: float = 0.97,
    lifter: int = 22,
) -> np.ndarray:
    """(N, n_ceps) MFCCs at 1 / hop_s Hz; N = 1 + ceil((len - win) / hop) (zero-padded end).

    The SyncNet front end: rectangular frames, power spectrum / n_fft, log mel energies, an
    orthonormal DCT-II, sinusoidal liftering, and c0 replaced by the log frame energy. Pass the
    audio on the scale the weights saw (16-bit integers for SyncNet, see `pcm16_scale`).
    """
    x = np.asarray(audio, np.float64)
    x = np.append(x[:1], x[1:] - preemph * x[:-1])
    win, hop = int(round(win_s * sample_rate)), int(round(hop_s * sample_rate))
    n = 1 if len(x) <= win else 1 + math.ceil((len(x) - win) / hop)
    x = np.pad(x, (0, max(0, (n - 1) * hop + win - len(x))))
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(x[idx], n_fft)) ** 2 / n_fft
    eps = np.finfo(np.float64).eps
    energy = np.maximum(power.sum(1), eps)
    mel = np.maximum(power @ _mel_filterbank(n_filters, n_fft, sample_rate).T, eps)
    ceps = fft.dct(np.log(mel), type=2, axis=1, norm="ortho")[:, :n_ceps]
    ceps *= 1.0 + (lifter / 2.0) * np.sin(np.pi * np.arange(n_ceps) / lifter)
    ceps[:, 0] = np.log(energy)
    return ceps


def pcm16_scale(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Float audio in [-1, 1] at any rate -> 16 kHz on the 16-bit integer scale (as read from a
    16-bit WAV), the input scale of SyncNet's MFCCs."""
    x = np.asarray(audio, np.float64)
    if sample_rate != SYNCNET_SAMPLE_RATE:
        g = math.gcd(int(sample_rate), SYNCNET_SAMPLE_RATE)
        x = resample_poly(x, SYNCNET_SAMPLE_RATE // g, int(sample_rate) // g)
    return np.clip(np.round(x * 32768.0), -32768, 32767)


# --- face crops ---------------------------------------------------------------------------------


def crop_track(face_box: np.ndarray) -> np.ndarray | None:
    """(T, 3) crop centre x, y and half-size s per frame from (T, 4) face boxes x0, y0, x1, y1
    (NaN rows: no face; interpolated), median-filtered over `SMOOTH_FRAMES`; None if no face."""
    ok = np.isfinite(face_box).all(1)
    if not ok.any():
        return None
    t = np.arange(len(face_box))
    box = np.stack([np.interp(t, t[ok], face_box[ok, i]) for i in range(4)], 1)
    track = np.stack(
        [
            (box[:, 0] + box[:, 2]) / 2,
            (box[:, 1] + box[:, 3]) / 2,
            np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]) / 2,
        ],
        1,
    )
    # Edge-replicating median filter (the released pipeline zero-pads, which shrinks the first
    # and last boxes of a track).
    return ndimage.median_filter(track, size=(SMOOTH_FRAMES, 1), mode="nearest")


def crop_face(
    rgb: np.ndarray, cx: float, cy: float, s: float, side: int = SyncNet.CROP
) -> np.ndarray:
    """(side, side, 3) BGR uint8 crop of an (H, W, 3) RGB frame (geometry: module docstring)."""
    y0, y1 = math.floor(cy - s), math.floor(cy + s * (1 + 2 * CROP_SCALE))
    x0, x1 = math.floor(cx - s * (1 + CROP_SCALE)), math.floor(cx + s * (1 + CROP_SCALE))
    out = np.full((max(1, y1 - y0), max(1, x1 - x0), 3), FILL, np.uint8)
    h, w = rgb.shape[:2]
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return np.ascontiguousarray(cv2.resize(out, (side, side))[:, :, ::-1])


def resample_index(n: int, fps: float) -> np.ndarray:
    """Source frame of each 25-fps frame of an n-frame video at `fps` (nearest in time)."""
    k = np.arange(int(round(n * SYNCNET_FPS / fps)))
    return np.minimum(np.round(k * fps / SYNCNET_FPS).astype(np.int64), n - 1)


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SyncNetResult:
    """SyncNet's verdict on one video."""

    offset: int
    """AV offset in 25-fps frames (> 0: the audio leads the video)."""
    confidence: float
    """Median minus minimum of the mean distance over offsets (higher: surer sync)."""
    min_dist: float
    """Minimum over offsets of the mean audio-lip embedding distance."""
    dists: np.ndarray
    """(2 * VSHIFT + 1,) mean distance per offset, offsets VSHIFT .. -VSHIFT."""
    windows: int
    """0.2-s windows compared."""


def offset_distances(
    lip_ne: torch.Tensor, aud_ne: torch.Tensor, vshift: int = VSHIFT
) -> torch.Tensor:
    """(N, 2 vshift + 1) distance of lip window i to audio window i + j - vshift (zero beyond)."""
    n = lip_ne.shape[0]
    padded = F.pad(aud_ne[:n], (0, 0, vshift, vshift + max(0, n - aud_ne.shape[0])))
    return torch.stack(
        [F.pairwise_distance(lip_ne, padded[j : j + n]) for j in range(2 * vshift + 1)], 1
    )


class SyncNetScorer:
    """Scores a video (frame chunks + face boxes) against a speech track with SyncNet weights."""

    def __init__(self, model: SyncNet, batch: int = 20, vshift: int = VSHIFT) -> None:
        self.model, self.batch, self.vshift = model.eval(), batch, vshift

    @torch.no_grad()
    def _lips(self, crops: list[np.ndarray]) -> torch.Tensor:
        """Embeddings of every 5-frame window of len(crops) >= 5 crops: (len - 4, E)."""
        x_cthw = torch.from_numpy(np.stack(crops)).permute(3, 0, 1, 2).float()
        windows = x_cthw.unfold(1, SyncNet.FRAMES, 1).permute(1, 0, 4, 2, 3)  # (N, 3, 5, H, W)
        return self.model.embed_lips(windows.contiguous())

    def lip_embeddings(
        self, chunks: Iterable[np.ndarray], fps: float, face_box: np.ndarray
    ) -> torch.Tensor | None:
        """(N, E) lip embeddings of the 25-fps windows; None without any face."""
        track = crop_track(face_box)
        if track is None:
            return None
        src = resample_index(len(face_box), fps)
        feats, crops, k, start = [], [], 0, 0
        for chunk in chunks:
            while k < len(src) and src[k] < start + len(chunk):
                cx, cy, s = track[src[k]]
                crops.append(crop_face(chunk[src[k] - start], cx, cy, s))
                k += 1
                if len(crops) == self.batch + SyncNet.FRAMES - 1:
                    feats.append(self._lips(crops))
                    crops = crops[-(SyncNet.FRAMES - 1) :]
            start += len(chunk)
        if len(crops) >= SyncNet.FRAMES:
            feats.append(self._lips(crops))
        return torch.cat(feats) if feats else None

    @torch.no_grad()
    def audio_embeddings(self, audio: np.ndarray, sample_rate: int) -> torch.Tensor | None:
        """(M, E) audio embeddings of the 0.2-s MFCC windows, one per 25-fps frame."""
        ceps = torch.from_numpy(mfcc(pcm16_scale(audio, sample_rate))).float().T  # (13, steps)
        m = (ceps.shape[1] - SyncNet.MFCC_STEPS) // MFCC_PER_FRAME + 1
        if m < 1:
            return None
        windows = ceps.unfold(1, SyncNet.MFCC_STEPS, MFCC_PER_FRAME)[:, :m]  # (13, M, 20)
        x = windows.permute(1, 0, 2)[:, None]  # (M, 1, 13, 20)
        return torch.cat([self.model.embed_audio(x[i : i + 256]) for i in range(0, m, 256)])

    def score(
        self,
        chunks: Iterable[np.ndarray],
        fps: float,
        face_box: np.ndarray,
        audio: np.ndarray,
        sample_rate: int,
    ) -> SyncNetResult | None:
        """SyncNet offset / confidence / min distance; None without a face or 0.2 s of both."""
        lips = self.lip_embeddings(chunks, fps, face_box)
        aud = self.audio_embeddings(audio, sample_rate)
        if lips is None or aud is None:
            return None
        return sync_verdict(lips, aud, self.vshift)


def sync_verdict(lip_ne: torch.Tensor, aud_ne: torch.Tensor, vshift: int = VSHIFT) -> SyncNetResult:
    """Offset, confidence and minimum distance from lip and audio window embeddings."""
    n = min(len(lip_ne), len(aud_ne))
    mean = offset_distances(lip_ne[:n], aud_ne[:n], vshift).mean(0).numpy()
    best = int(mean.argmin())
    return SyncNetResult(
        offset=vshift - best,
        confidence=float(np.median(mean) - mean[best]),
        min_dist=float(mean[best]),
        dists=mean,
        windows=n,
    )
