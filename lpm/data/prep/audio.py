"""Stage 5, audio variants: speaker-only and listener-only tracks from the per-frame labels.

Input: the clip's mix (N,) at `sample_rate`, its per-frame states and, when the source has
several channels, those channels (C, N). Output: (speak, listen) float32 tracks. The speaker
track keeps the mix where this person speaks and silences the rest (the other party's speech);
the listener track keeps the mix where someone else speaks. Idle frames are silent in both (the
mix keeps everything). When one source channel carries this person's voice clearly louder than
another (>= 6 dB more in their speaking frames), the channels are used instead of masks.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

from lpm.data.prep.labels import LISTEN, SPEAK


def _frame_mask(states: np.ndarray, code: int, n_samples: int, fps: float, sr: int, fade_s=0.01):
    """(N,) float gain 0..1: 1 on frames with `code`, with `fade_s` linear fades."""
    t = (np.arange(n_samples) + 0.5) / sr
    frame = np.minimum((t * fps).astype(int), len(states) - 1)
    gain = (states[frame] == code).astype(np.float32)
    width = max(1, int(fade_s * sr))
    return uniform_filter1d(gain, width, mode="nearest")


def _channel_split(channels: np.ndarray, speak_gain: np.ndarray, listen_gain: np.ndarray):
    """(speak channel, listen channel) indices when the channels separate the parties."""
    if channels is None or channels.shape[0] < 2 or speak_gain.sum() < 1 or listen_gain.sum() < 1:
        return None
    e_s = (channels**2 * speak_gain).sum(axis=1) / speak_gain.sum()
    e_l = (channels**2 * listen_gain).sum(axis=1) / listen_gain.sum()
    ratio = 10 * np.log10((e_s + 1e-12) / (e_l + 1e-12))
    own, other = int(np.argmax(ratio)), int(np.argmin(ratio))
    if own == other or ratio[own] - ratio[other] < 12.0:
        return None
    return own, other


def audio_variants(
    mix: np.ndarray,
    states: np.ndarray,
    fps: float,
    sample_rate: int,
    channels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(speak, listen, method) tracks for one clip; method is `channels` or `masks`."""
    speak_gain = _frame_mask(states, SPEAK, len(mix), fps, sample_rate)
    listen_gain = _frame_mask(states, LISTEN, len(mix), fps, sample_rate)
    split = _channel_split(channels, speak_gain, listen_gain)
    if split is not None:
        return (
            channels[split[0]].astype(np.float32),
            channels[split[1]].astype(np.float32),
            ("channels"),
        )
    return (mix * speak_gain).astype(np.float32), (mix * listen_gain).astype(np.float32), "masks"
