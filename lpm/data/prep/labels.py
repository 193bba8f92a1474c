"""Stage 4, three-state labels per frame: speak / listen / idle (DESIGN §5's decision table).

| speech present | this person's mouth      | label   |
|----------------|--------------------------|---------|
| yes            | moving, in sync          | speak   |
| yes            | still                    | listen  |
| no             | still                    | idle    |
| yes            | moving, not in sync      | discard |
| no             | moving                   | discard |

Speech presence comes from a VAD (silero-vad by default) on the mix; its speech / silence
segments fix *when* someone speaks, and the mouth only decides *who*. Mouth motion (the
windowed std of the track's high-passed mouth opening) is measured inside each segment; sync
is the best-lag correlation of mouth opening and audio envelope over short windows; majority
smoothing and short-run merging never move a segment edge. Then multi-person re-ranking (at
most one speaker per frame unless both truly speak). A model-based active-speaker detector can
replace the rule through `LabelConfig.asd` (`module:callable` taking (mouth (T,), envelope
(T,), speech (T,) bool, fps) and returning (T,) speak scores 0..1).
"""

from __future__ import annotations

import importlib
from functools import lru_cache

import numpy as np
from scipy.ndimage import uniform_filter1d

from lpm.data.prep.config import LabelConfig

SPEAK, LISTEN, IDLE, DISCARD = 0, 1, 2, 3
NAMES = ("speak", "listen", "idle", "discard")


@lru_cache(maxsize=1)
def _silero():
    try:
        from silero_vad import load_silero_vad
    except ImportError as err:
        raise ImportError(
            "labels.vad='silero' needs silero-vad and onnxruntime "
            "(pip install silero-vad onnxruntime); or set labels.vad='energy'"
        ) from err
    return load_silero_vad(onnx=True)


def speech_frames(
    audio: np.ndarray, sample_rate: int, fps: float, n_frames: int, cfg: LabelConfig
) -> np.ndarray:
    """(n_frames,) bool: speech present at each video frame (any speaker)."""
    mask = np.zeros(len(audio), bool)
    if cfg.vad == "silero":
        import torch
        from silero_vad import get_speech_timestamps

        segs = get_speech_timestamps(
            torch.from_numpy(np.ascontiguousarray(audio, np.float32)),
            _silero(),
            threshold=cfg.vad_threshold,
            sampling_rate=sample_rate,
            min_silence_duration_ms=cfg.vad_min_silence_ms,
            min_speech_duration_ms=120,
            speech_pad_ms=0,  # onsets are on time; padding would only shift edges outwards
        )
        lag = round(cfg.vad_end_lag_ms * sample_rate / 1000)
        for s in segs:
            mask[s["start"] : max(s["start"] + 1, s["end"] - lag)] = True
    else:
        mask = _energy_vad(audio, sample_rate, cfg)
    return _to_frames(mask, sample_rate, fps, n_frames) > 0.5


def _energy_vad(audio: np.ndarray, sr: int, cfg: LabelConfig) -> np.ndarray:
    hop = sr // 100
    n = len(audio) // hop
    if n == 0:
        return np.zeros(len(audio), bool)
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    db = 20 * np.log10(rms)
    floor = np.percentile(db, 10)
    on = (db > max(floor + 15.0, -50.0)).astype(float)
    hang = max(1, cfg.vad_min_silence_ms // 10)
    on = uniform_filter1d(on, hang) > 0
    return np.repeat(on, hop)[: len(audio)].astype(bool) if len(on) else on


def _to_frames(x: np.ndarray, sr: int, fps: float, n: int) -> np.ndarray:
    """Mean of a per-sample signal over each video frame."""
    edges = np.minimum((np.arange(n + 1) / fps * sr).astype(int), len(x))
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    width = np.maximum(edges[1:] - edges[:-1], 1)
    return (c[edges[1:]] - c[edges[:-1]]) / width


def envelope(audio: np.ndarray, sample_rate: int, fps: float, n_frames: int) -> np.ndarray:
    """(n_frames,) loudness per video frame: dB of the RMS, floored at -60."""
    power = _to_frames(audio.astype(np.float64) ** 2, sample_rate, fps, n_frames)
    return np.maximum(10 * np.log10(power + 1e-12), -60.0)


def segments(speech: np.ndarray) -> list[tuple[int, int]]:
    """[a, b) runs of constant `speech` (speech and silence segments alternate), in order."""
    if len(speech) == 0:
        return []
    edges = np.r_[0, np.nonzero(np.diff(speech.astype(np.int8)))[0] + 1, len(speech)]
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def mouth_motion(
    mouth: np.ndarray, speech: np.ndarray, fps: float, cfg: LabelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(T,) mouth motion and (T,) high-passed mouth opening, measured per VAD segment.

    Windows stay inside one speech / silence segment: a window that crossed a speech edge
    would carry the talking mouth into the silence beside it (where silence + moving reads as
    discard) and blur the frame where a speaker starts or stops. Inside a silence segment the
    `speech_edge_guard_s` next to speech does not count either (motion 0 there): lips move
    before the voice starts and close after it stops.
    """
    slow = max(3, round(cfg.highpass_s * fps))
    win = round(cfg.motion_window_s * fps)
    guard = round(cfg.speech_edge_guard_s * fps)
    # articulation is fast (syllables, 3-8 Hz); expression changes are slow: high-pass first
    highpass = lambda m: m - uniform_filter1d(m, slow, mode="nearest")
    mouth_hp = np.zeros(len(mouth))
    motion = np.zeros(len(mouth))
    for a, b in segments(speech):
        mouth_hp[a:b] = highpass(mouth[a:b])
        if not speech[a]:  # segments alternate: a silence not at an end borders speech
            a += guard if a > 0 else 0
            b -= guard if b < len(speech) else 0
        if b - a >= 2:
            motion[a:b] = windowed_std(highpass(mouth[a:b]), win)
    return motion, mouth_hp


def windowed_std(x: np.ndarray, win: int) -> np.ndarray:
    """Std of x over a centred window of `win` frames."""
    win = max(1, int(win))
    m = uniform_filter1d(x, win, mode="nearest")
    m2 = uniform_filter1d(x * x, win, mode="nearest")
    return np.sqrt(np.maximum(m2 - m * m, 0.0))


def sync_scores(mouth: np.ndarray, env: np.ndarray, win: int, max_lag: int) -> np.ndarray:
    """(T,) best-lag Pearson correlation of mouth and envelope over centred windows.

    A positive lag compares mouth at frame t with audio at t + lag (the mouth may lead).
    """
    t = len(mouth)
    best = np.full(t, -1.0)
    win = max(3, int(win))
    for lag in range(-max_lag, max_lag + 1):
        a = mouth[max(0, -lag) : t - max(0, lag)]
        b = env[max(0, lag) : t - max(0, -lag)]
        if len(a) < 3:
            continue
        ma, mb = uniform_filter1d(a, win, mode="nearest"), uniform_filter1d(b, win, mode="nearest")
        cov = uniform_filter1d(a * b, win, mode="nearest") - ma * mb
        va = uniform_filter1d(a * a, win, mode="nearest") - ma * ma
        vb = uniform_filter1d(b * b, win, mode="nearest") - mb * mb
        r = cov / np.sqrt(np.maximum(va * vb, 1e-12))
        r = np.where((va < 1e-8) | (vb < 1e-8), 0.0, r)
        full = np.full(t, -1.0)
        full[max(0, -lag) : t - max(0, lag)] = r
        best = np.maximum(best, full)
    return best


def av_offset(mouth: np.ndarray, env: np.ndarray, speaking: np.ndarray, max_lag: int) -> tuple:
    """(lag, peak correlation) of mouth vs envelope over the speaking frames of a track."""
    if speaking.sum() < 12:
        return 0, 0.0
    best = (0, -1.0)
    for lag in range(-max_lag, max_lag + 1):
        idx = np.nonzero(speaking)[0]
        idx = idx[(idx + lag >= 0) & (idx + lag < len(env))]
        if len(idx) < 12:
            continue
        a, b = mouth[idx], env[idx + lag]
        if a.std() < 1e-6 or b.std() < 1e-6:
            continue
        r = float(np.corrcoef(a, b)[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best


def _load_asd(spec: str):
    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError(f"labels.asd must be 'rule' or 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(mod), fn)


def decide(
    mouth: np.ndarray, env: np.ndarray, speech: np.ndarray, fps: float, cfg: LabelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Raw per-frame codes (SPEAK/LISTEN/IDLE/DISCARD) and sync scores of one track.

    mouth, env, speech: (T,) mouth opening, loudness (dB), VAD speech per frame; fps in Hz.
    """
    # loudness trends are slow: the envelope is high-passed like the mouth before sync
    slow = max(3, round(cfg.highpass_s * fps))
    env_hp = env - uniform_filter1d(env, slow, mode="nearest")
    motion, mouth_hp = mouth_motion(mouth, speech, fps, cfg)
    moving = motion > cfg.motion_threshold
    if cfg.asd == "rule":
        sync = sync_scores(mouth_hp, env_hp, round(cfg.sync_window_s * fps), cfg.max_lag_frames)
    else:
        sync = np.asarray(_load_asd(cfg.asd)(mouth, env, speech, fps), np.float64)
    in_sync = sync > cfg.sync_threshold
    codes = np.full(len(mouth), DISCARD, np.int8)
    codes[speech & moving & in_sync] = SPEAK
    codes[speech & ~moving] = LISTEN
    codes[~speech & ~moving] = IDLE
    return codes, sync


def smooth(
    codes: np.ndarray, fps: float, cfg: LabelConfig, speech: np.ndarray | None = None
) -> np.ndarray:
    """Majority filter over `smooth_s`, then runs shorter than `min_run_s` take a neighbour.

    With `speech` ((T,) bool VAD frames), each speech / silence segment is smoothed on its
    own: the VAD already keeps pauses under `vad_min_silence_ms` inside speech, and a second
    smoothing across its edges would only erase short pauses and turn gaps (idle) and shift
    onsets.
    """
    if speech is not None:
        out = codes.copy()
        for a, b in segments(speech):
            out[a:b] = smooth(codes[a:b], fps, cfg)
        return out
    win = max(1, round(cfg.smooth_s * fps)) | 1
    votes = np.stack([uniform_filter1d((codes == k).astype(float), win) for k in range(4)])
    out = np.argmax(votes, axis=0).astype(np.int8)
    min_run = max(1, round(cfg.min_run_s * fps))
    for _ in range(3):
        starts = np.r_[0, np.nonzero(np.diff(out))[0] + 1]
        ends = np.r_[starts[1:], len(out)]
        changed = False
        for a, b in zip(starts, ends, strict=True):
            if b - a >= min_run or (a == 0 and b == len(out)):
                continue
            left = out[a - 1] if a > 0 else out[b] if b < len(out) else out[a]
            out[a:b] = left
            changed = True
        if not changed:
            break
    return out


def rerank(codes: list[np.ndarray], syncs: list[np.ndarray], cfg: LabelConfig) -> None:
    """At most one speaker per frame unless both sync scores exceed `both_speak_sync`.

    `codes[k]`/`syncs[k]` cover the same frames for every track k; modified in place: the
    weaker simultaneous speaker becomes a listener.
    """
    if len(codes) < 2:
        return
    c = np.stack(codes)
    s = np.stack(syncs)
    speaking = c == SPEAK
    multi = speaking.sum(axis=0) >= 2
    if not multi.any():
        return
    strong = s >= cfg.both_speak_sync
    top = np.argmax(np.where(speaking, s, -np.inf), axis=0)
    for k in range(len(codes)):
        demote = (
            multi & speaking[k] & (top != k) & ~(strong[k] & strong[top, np.arange(c.shape[1])])
        )
        codes[k][demote] = LISTEN
