"""Incoming audio: decode (PCM16 or Opus) and resample to the model rate, detect speech, meter.

Resampling uses PyAV's libswresample, which keeps filter state across frames, so a stream cut
into 10-ms frames resamples exactly like the whole signal.
"""

from __future__ import annotations

import time

import av
import numpy as np

from lpm.serve.protocol import AudioFormat, ProtocolError

MIN_RATE, MAX_RATE = 8000, 96000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def opus_available() -> bool:
    """Whether PyAV's FFmpeg can decode Opus (libopus or the native decoder)."""
    return any(name in av.codecs_available for name in ("libopus", "opus"))


class AudioDecoder:
    """Frames of one stream in its declared format -> float32 mono at ``target_rate`` Hz."""

    def __init__(self, fmt: AudioFormat, target_rate: int) -> None:
        if not MIN_RATE <= fmt.sample_rate <= MAX_RATE:
            raise ProtocolError(
                "bad_rate", f"sample_rate must be {MIN_RATE}..{MAX_RATE} Hz, got {fmt.sample_rate}"
            )
        self.fmt = fmt
        layout = "mono" if fmt.channels == 1 else "stereo"
        self._opus = None
        if fmt.codec == "opus":
            if not opus_available():
                raise ProtocolError(
                    "unsupported_codec", "this server's FFmpeg has no Opus decoder; send pcm16"
                )
            if fmt.sample_rate not in OPUS_RATES:
                raise ProtocolError("bad_rate", f"Opus sample_rate must be one of {OPUS_RATES}")
            name = "libopus" if "libopus" in av.codecs_available else "opus"
            self._opus = av.CodecContext.create(name, "r")
            self._opus.sample_rate = fmt.sample_rate
            self._opus.layout = layout
        self._layout = layout
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)

    def decode(self, payload: bytes) -> np.ndarray:
        """One frame -> float32 samples in [-1, 1] at the target rate (possibly empty)."""
        frames = self._opus_frames(payload) if self._opus is not None else self._pcm(payload)
        out = [o.to_ndarray().reshape(-1) for f in frames for o in self._resampler.resample(f)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)

    def _pcm(self, payload: bytes) -> list[av.AudioFrame]:
        step = 2 * self.fmt.channels
        if len(payload) % step:
            raise ProtocolError("bad_audio", f"PCM16 payload length must be a multiple of {step}")
        pcm = np.frombuffer(payload, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=self._layout)
        frame.sample_rate = self.fmt.sample_rate
        return [frame]

    def _opus_frames(self, payload: bytes) -> list[av.AudioFrame]:
        try:
            return list(self._opus.decode(av.Packet(payload)))
        except (av.error.FFmpegError, ValueError) as err:
            raise ProtocolError("bad_audio", f"not a valid Opus packet: {err}") from None


class VoiceActivity:
    """webrtcvad on 30-ms frames at 16 kHz: counts speech frames in what it is fed."""

    FRAME_S = 0.03

    def __init__(self, sample_rate: int, aggressiveness: int = 2) -> None:
        import webrtcvad

        self.vad = webrtcvad.Vad(aggressiveness)
        self.rate = sample_rate if sample_rate in (8000, 16000, 32000, 48000) else None
        self.frame = round(self.FRAME_S * (self.rate or 16000))
        self._rest = np.zeros(0, np.float32)

    def speech_frames(self, samples: np.ndarray) -> int:
        """Feed float32 samples; returns how many complete 30-ms frames were speech."""
        if self.rate is None:  # webrtcvad takes only 8/16/32/48 kHz: fall back to energy
            return int(np.sqrt(np.mean(samples**2)) > 0.02) if len(samples) else 0
        x = np.concatenate((self._rest, samples))
        n = len(x) // self.frame
        self._rest = x[n * self.frame :]
        pcm = (np.clip(x[: n * self.frame], -1, 1) * 32767).astype("<i2")
        found = 0
        for i in range(n):
            chunk = pcm[i * self.frame : (i + 1) * self.frame]
            # webrtcvad calls near-silent noise speech at times: require some energy too
            if np.abs(chunk).max() > 300 and self.vad.is_speech(chunk.tobytes(), self.rate):
                found += 1
        return found


class AudioMeter:
    """Token bucket in seconds of audio: refills at real time, holds at most ``burst_s``."""

    def __init__(self, burst_s: float, clock=time.monotonic) -> None:
        self.burst_s, self.clock = burst_s, clock
        self.tokens, self.last = burst_s, clock()

    def take(self, seconds: float) -> bool:
        """Spend ``seconds`` of audio; False (nothing spent) when that exceeds the allowance."""
        now = self.clock()
        self.tokens = min(self.burst_s, self.tokens + (now - self.last))
        self.last = now
        if seconds > self.tokens:
            return False
        self.tokens -= seconds
        return True
