"""Automatic LPM-Bench metrics, one or more per dimension, from `Readings` and the case's audio.

Every metric is defined in `docs/bench.md`. Conventions: times in seconds, offsets in frames,
angles in degrees; a metric that cannot be computed for a case (no speech, no instruction, a
backend that cannot read the signal) is None and is left out of averages. Each dimension also
gets a score in [0, 1] (higher is better; a ground-truth video scores 1 where it is its own
reference) so dimensions can be compared and plotted side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

from lpm.bench.backends import Readings
from lpm.data.stage.schema import ACTIONS, EXPRESSIONS

DIMENSIONS: tuple[str, ...] = ("sync", "identity", "motion", "text", "visual")
"""Automatic dimensions: audio-video sync, identity consistency, motion dynamics, text
controllability, visual quality."""
DIMENSION_TITLES = {
    "sync": "Audio-Video Sync",
    "identity": "Identity Consistency",
    "motion": "Motion Dynamics",
    "text": "Text Controllability",
    "visual": "Visual Quality",
}

MAX_OFFSET = 15
"""Audio-video offsets searched (frames, both directions)."""
SYNC_TOLERANCE = 3
"""Offsets (frames) within which lips count as in sync."""
MOUTH_THRESHOLD = 0.15
"""Mouth-opening reading above which the mouth counts as moving."""
SPEECH_DB = -35.0
"""Frame RMS level (dBFS) above which a speech track is active."""
STATIC_PIXEL = 0.25
"""Mean absolute luma change (0..255) per frame under which a 1-s window is near-static."""
STATIC_POSE = 2.0
"""Head-pose speed (deg/s) under which a 1-s window is near-static."""
FD_UNIT = 20.0
"""Fréchet distance mapped to a visual score of 0.5 (score = 1 / (1 + FD / FD_UNIT))."""


# --- audio --------------------------------------------------------------------------------------


def speech_level(audio: np.ndarray, sample_rate: int, fps: float, n: int) -> np.ndarray:
    """(n,) per-frame RMS level in dBFS of `audio` (frame t covers [t/fps, (t+1)/fps))."""
    hop = sample_rate / fps
    out = np.full(n, -100.0)
    for t in range(n):
        seg = audio[int(round(t * hop)) : int(round((t + 1) * hop))]
        if len(seg):
            out[t] = 10 * np.log10(float(np.mean(seg.astype(np.float64) ** 2)) + 1e-10)
    return out


def speech_envelope(level_db: np.ndarray) -> np.ndarray:
    """Speech level mapped to 0..1 (-40 dBFS -> 0, -10 dBFS -> 1)."""
    return np.clip((level_db + 40.0) / 30.0, 0.0, 1.0)


def _active(level_db: np.ndarray, fps: float) -> np.ndarray:
    """Speech activity with gaps shorter than 0.2 s closed."""
    on = level_db > SPEECH_DB
    gap = int(round(0.2 * fps))
    idx = np.flatnonzero(on)
    for a, b in zip(idx[:-1], idx[1:], strict=False):
        if 1 < b - a <= gap:
            on[a:b] = True
    return on


# --- audio-video sync ---------------------------------------------------------------------------


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or a.std() < 1e-6 or b.std() < 1e-6:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def offset_correlations(
    mouth: np.ndarray, env: np.ndarray, max_offset: int = MAX_OFFSET
) -> dict[int, float]:
    """Pearson correlation of mouth[t] with env[t + k] for k in [-max_offset, max_offset].

    k > 0 means the mouth leads the audio by k frames.
    """
    out = {}
    n = len(mouth)
    for k in range(-max_offset, max_offset + 1):
        a, b = (mouth[: n - k], env[k:]) if k >= 0 else (mouth[-k:], env[: n + k])
        out[k] = _corr(a, b)
    return out


def turn_changes(
    speak_on: np.ndarray, fps: float, min_gap_s: float = 0.5
) -> tuple[list[int], list[int]]:
    """Frames where own speech starts after >= min_gap_s of silence, and where it stops."""
    onsets, offsets = [], []
    gap = int(round(min_gap_s * fps))
    for t in range(1, len(speak_on)):
        if speak_on[t] and not speak_on[t - 1] and not speak_on[max(0, t - gap) : t].any():
            onsets.append(t)
        if not speak_on[t] and speak_on[t - 1] and not speak_on[t : t + gap].any():
            offsets.append(t)
    return onsets, offsets


def switch_latency(mouth: np.ndarray, speak_on: np.ndarray, fps: float) -> float | None:
    """Median |latency| (s) of the mouth starting to move after own-speech onsets and coming to
    rest after offsets (searched within 1 s); None without turn changes."""
    onsets, offsets = turn_changes(speak_on, fps)
    win, lat = int(round(fps)), []
    moving = mouth > MOUTH_THRESHOLD
    for t in onsets:
        seg = moving[max(0, t - win // 4) : t + win]
        hit = np.flatnonzero(seg)
        lat.append(abs(hit[0] - min(t, win // 4)) / fps if len(hit) else 1.0)
    for t in offsets:
        seg = moving[t : t + win]
        still = np.flatnonzero(~seg)
        lat.append(still[0] / fps if len(still) else 1.0)
    return float(np.median(lat)) if lat else None


def own_speech(speak: np.ndarray, sample_rate: int, fps: float, n: int) -> bool:
    """Whether the speak track is active for >= 0.5 s of an n-frame video (sync is scorable)."""
    return bool(_active(speech_level(speak, sample_rate, fps, n), fps).sum() >= fps * 0.5)


def sync_metrics(
    r: Readings, speak: np.ndarray, listen: np.ndarray, sample_rate: int, fps: float
) -> dict[str, float | None]:
    """Sync correlation and offset, SyncNet-style confidence, false lip motion while listening,
    switch latency at turn changes."""
    keys = ("sync_corr", "sync_offset", "sync_confidence", "false_lip_rate", "switch_latency_s")
    out: dict[str, float | None] = dict.fromkeys(keys)
    if r.mouth_open is None:
        return out
    n = len(r.mouth_open)
    own = speech_level(speak, sample_rate, fps, n)
    other = speech_level(listen, sample_rate, fps, n)
    own_on, other_on = _active(own, fps), _active(other, fps)
    if own_on.sum() >= fps * 0.5:
        c = offset_correlations(r.mouth_open, speech_envelope(own))
        best = max(c, key=c.get)
        out["sync_corr"] = max(v for k, v in c.items() if abs(k) <= SYNC_TOLERANCE)
        out["sync_offset"] = float(best)
        out["sync_confidence"] = c[best] - float(np.median(list(c.values())))
    guard = np.convolve(own_on, np.ones(int(fps * 0.5) | 1), mode="same") > 0
    listening = other_on & ~guard
    if listening.sum() >= fps * 0.5:
        out["false_lip_rate"] = float((r.mouth_open[listening] > MOUTH_THRESHOLD).mean())
    if own_on.any() and other_on.any():
        out["switch_latency_s"] = switch_latency(r.mouth_open, own_on, fps)
    return out


def truth_mouth_metrics(r: Readings, labels: dict | None) -> dict[str, float | None]:
    """Mouth readings against a Stage case's ground-truth labels (None without labels).

    ``truth_mouth_corr``: Pearson correlation of the mouth reading with the labelled mouth
    opening over the frames where the performer speaks (>= 0.5 s of them).
    ``listen_mouth``: mean mouth reading over the frames where the performer listens.
    """
    out: dict[str, float | None] = {"truth_mouth_corr": None, "listen_mouth": None}
    if r.mouth_open is None or not labels:
        return out
    fields_ = labels.get("fields", labels)
    n = min(len(r.mouth_open), len(fields_["mouth_open"]))
    state = np.asarray(fields_["state"][:n])
    truth = np.asarray(fields_["mouth_open"][:n], dtype=np.float64)
    fps = float(labels.get("fps", 24))
    speak = state == "speak"
    if speak.sum() >= fps * 0.5:
        out["truth_mouth_corr"] = _corr(r.mouth_open[:n][speak], truth[speak])
    listen = state == "listen"
    if listen.any():
        out["listen_mouth"] = float(r.mouth_open[:n][listen].mean())
    return out


# --- identity -----------------------------------------------------------------------------------


def identity_series(r: Readings, ref_embeddings: np.ndarray) -> np.ndarray | None:
    """(T,) cosine similarity of each frame's identity embedding to the mean reference."""
    if r.identity is None or ref_embeddings is None or len(ref_embeddings) == 0:
        return None
    ref = ref_embeddings.mean(0)
    ref = ref / (np.linalg.norm(ref) + 1e-8)
    emb = r.identity / (np.linalg.norm(r.identity, axis=1, keepdims=True) + 1e-8)
    return emb @ ref


def per_second(x: np.ndarray, fps: float) -> np.ndarray:
    """Means over consecutive 1-s windows (the last partial window included)."""
    w = max(1, int(round(fps)))
    return np.array([x[i : i + w].mean() for i in range(0, len(x), w)])


def identity_metrics(series: np.ndarray | None, fps: float) -> dict[str, float | None]:
    """Mean similarity to the references, its 5th percentile, drift slope (per minute)."""
    if series is None:
        return {"id_similarity": None, "id_similarity_p5": None, "id_drift_per_min": None}
    sec = per_second(series, fps)
    drift = None
    if len(sec) >= 4:
        minutes = (np.arange(len(sec)) + 0.5) / 60.0
        drift = float(np.polyfit(minutes, sec, 1)[0])
    return {
        "id_similarity": float(series.mean()),
        "id_similarity_p5": float(np.percentile(series, 5)),
        "id_drift_per_min": drift,
    }


# --- motion -------------------------------------------------------------------------------------


def _pose(r: Readings) -> np.ndarray | None:
    if r.yaw is None or r.pitch is None or r.roll is None:
        return None
    yaw = np.rad2deg(np.unwrap(np.deg2rad(r.yaw)))
    return np.stack([yaw, r.pitch, r.roll], 1)


def motion_stats(r: Readings, fps: float) -> dict[str, float | None]:
    """Pose speed (deg/s), pixel motion (luma/frame), pose jitter (deg/frame^2), flicker
    (luma/frame^2) and the fraction of near-static 1-s windows."""
    pose = _pose(r)
    out: dict[str, float | None] = {}
    speed = (
        np.abs(np.diff(pose, axis=0)).sum(1) * fps if pose is not None and len(pose) > 1 else None
    )
    out["pose_speed"] = float(speed.mean()) if speed is not None else None
    out["jitter"] = (
        float(np.abs(np.diff(pose, 2, axis=0)).sum(1).mean())
        if pose is not None and len(pose) > 2
        else None
    )
    pm = r.pixel_motion
    out["pixel_motion"] = float(pm[1:].mean()) if pm is not None and len(pm) > 1 else None
    out["flicker"] = (
        float(np.abs(np.diff(r.brightness, 2)).mean())
        if r.brightness is not None and len(r.brightness) > 2
        else None
    )
    if pm is not None and len(pm) > 1:
        w = max(1, int(round(fps)))
        sp = np.concatenate([[0.0], speed]) if speed is not None else np.zeros(len(pm))
        static = [
            pm[i : i + w].mean() < STATIC_PIXEL and sp[i : i + w].mean() < STATIC_POSE
            for i in range(1, len(pm), w)
        ]
        out["static_fraction"] = float(np.mean(static))
    else:
        out["static_fraction"] = None
    return out


def _ratio_score(x: float | None, ref: float | None) -> float | None:
    """min(x/ref, ref/x): 1 when x equals the reference value."""
    if x is None or ref is None:
        return None
    x, ref = max(x, 1e-6), max(ref, 1e-6)
    return float(min(x / ref, ref / x))


def _excess_score(x: float | None, ref: float | None) -> float | None:
    """1 when x <= the reference value, falling as x exceeds it (ref/x)."""
    if x is None or ref is None:
        return None
    return float(min(1.0, (ref + 1e-3) / (x + 1e-3)))


def motion_metrics(gen: dict, truth: dict | None) -> dict[str, float | None]:
    """Generated motion stats compared with the ground truth's (ratios and excesses)."""
    t = truth or {}
    return {
        **{
            k: gen.get(k)
            for k in ("pose_speed", "pixel_motion", "jitter", "flicker", "static_fraction")
        },
        "motion_energy_ratio": None
        if gen.get("pose_speed") is None or not t.get("pose_speed")
        else gen["pose_speed"] / t["pose_speed"],
        "pixel_energy_ratio": None
        if gen.get("pixel_motion") is None or not t.get("pixel_motion")
        else gen["pixel_motion"] / t["pixel_motion"],
        "_pose_score": _ratio_score(gen.get("pose_speed"), t.get("pose_speed")),
        "_pixel_score": _ratio_score(gen.get("pixel_motion"), t.get("pixel_motion")),
        "_jitter_score": _excess_score(gen.get("jitter"), t.get("jitter")),
        "_flicker_score": _excess_score(gen.get("flicker"), t.get("flicker")),
    }


# --- text controllability -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InstructionResult:
    """Whether one scorable instruction was carried out."""

    start_s: float
    end_s: float
    target: str
    """`action:<name>` or `expression:<name>`."""
    recognised: bool
    read_as: str
    """What the probe read most in the segment."""


ACTION_MIN_FRACTION = 0.3
"""An action counts as performed when the probe reads it on this fraction of its segment."""
EXPRESSION_FADE_S = 0.4
"""Leading part of an expression segment skipped (the cross-fade)."""


def text_results(r: Readings, instructions, fps: float) -> list[InstructionResult]:
    """Check each instruction that names an action or expression in its own time segment."""
    out = []
    n = r.num_frames
    for ins in instructions:
        a, b = int(round(ins.start_s * fps)), min(n, int(round(ins.end_s * fps)))
        if ins.action and r.action_probs is not None and b > a:
            read = r.action_probs[a:b].argmax(1)
            frac = float((read == ACTIONS.index(ins.action)).mean())
            counts = np.bincount(read, minlength=len(ACTIONS))
            out.append(
                InstructionResult(
                    start_s=ins.start_s,
                    end_s=ins.end_s,
                    target=f"action:{ins.action}",
                    recognised=frac >= ACTION_MIN_FRACTION,
                    read_as=ACTIONS[int(counts.argmax())],
                )
            )
        if ins.expression and r.expression_probs is not None:
            a2 = min(b - 1, a + int(round(EXPRESSION_FADE_S * fps)))
            if b > a2 >= 0:
                counts = np.bincount(r.expression_probs[a2:b].argmax(1), minlength=len(EXPRESSIONS))
                read_as = EXPRESSIONS[int(counts.argmax())]
                out.append(
                    InstructionResult(
                        start_s=ins.start_s,
                        end_s=ins.end_s,
                        target=f"expression:{ins.expression}",
                        recognised=read_as == ins.expression,
                        read_as=read_as,
                    )
                )
    return out


def text_metrics(results: list[InstructionResult]) -> dict[str, float | None]:
    acts = [x.recognised for x in results if x.target.startswith("action:")]
    exps = [x.recognised for x in results if x.target.startswith("expression:")]
    mean = lambda v: float(np.mean(v)) if v else None
    return {
        "text_accuracy": mean(acts + exps),
        "action_accuracy": mean(acts),
        "expression_accuracy": mean(exps),
        "instructions_scored": float(len(results)),
    }


# --- visual quality -----------------------------------------------------------------------------


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, F) and b (M, F)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets must be (N, F) and (M, F), got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the Fréchet distance needs at least 2 feature vectors per set")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1 = np.cov(a, rowvar=False) + eps * np.eye(a.shape[1])
    s2 = np.cov(b, rowvar=False) + eps * np.eye(a.shape[1])
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    covmean = covmean.real
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    return max(0.0, d)


def visual_score(fd: float | None) -> float | None:
    return None if fd is None else 1.0 / (1.0 + fd / FD_UNIT)


# --- dimension scores ---------------------------------------------------------------------------


def _mean(vals) -> float | None:
    vals = [float(v) for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def dimension_scores(m: dict[str, float | None]) -> dict[str, float | None]:
    """Per-case scores in [0, 1] for sync, identity, motion and text (visual is suite-level)."""
    lat = m.get("switch_latency_s")
    flr = m.get("false_lip_rate")
    sc = m.get("sync_corr")
    off = m.get("sync_offset")
    off_score = (
        None
        if off is None
        else 1.0 - min(1.0, max(0.0, abs(off) - SYNC_TOLERANCE) / (MAX_OFFSET - SYNC_TOLERANCE))
    )
    static = m.get("static_fraction")
    idm = m.get("id_similarity")
    return {
        "sync": _mean(
            [
                None if sc is None else min(1.0, max(0.0, sc)),
                None if flr is None else 1.0 - flr,
                off_score,
                None if lat is None else 1.0 - min(1.0, lat),
            ]
        ),
        "identity": None if idm is None else min(1.0, max(0.0, idm)),
        "motion": _mean(
            [
                m.get("_pose_score"),
                m.get("_pixel_score"),
                m.get("_jitter_score"),
                m.get("_flicker_score"),
                None if static is None else 1.0 - static,
            ]
        ),
        "text": m.get("text_accuracy"),
    }
