"""Held-out evaluation of the probes: frame metrics, identity verification EER, action accuracy.

All frames come from held-out identities (`schema.HELDOUT_SEEDS`). Face metrics (mouth,
expression, blink) use frames whose face is visible (`data.FACE_VISIBLE_COS`); pose metrics use
every frame. Each metric is also reported on degraded frames (`data.sample_degradation`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lpm.bench.probes.data import (
    FrameSet,
    SessionWindows,
    apply_degradation,
    degrade_batch,
    render_frame_set,
    sample_degradation,
)
from lpm.bench.probes.probes import StageProbes
from lpm.data.stage.schema import ACTIONS


def r2_score(pred: np.ndarray, true: np.ndarray) -> float:
    """Coefficient of determination of `pred` against `true` (1 = perfect)."""
    ss_res = float(np.sum((pred - true) ** 2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    return 1.0 - ss_res / max(ss_tot, 1e-12)


def angle_error(pred_deg: np.ndarray, true_deg: np.ndarray) -> np.ndarray:
    """Absolute circular difference of two angle arrays (degrees, 0..180)."""
    return np.abs((pred_deg - true_deg + 180.0) % 360.0 - 180.0)


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """EER of similarity scores: the rate where false accepts equal false rejects (0..1)."""
    scores = np.concatenate([genuine, impostor])
    labels = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    order = np.argsort(-scores, kind="stable")
    labels = labels[order]
    # accepting the top-k scores: false accepts among them, false rejects below
    far = np.cumsum(1 - labels) / max(1, len(impostor))
    frr = 1.0 - np.cumsum(labels) / max(1, len(genuine))
    k = int(np.argmin(np.abs(far - frr)))
    return float((far[k] + frr[k]) / 2)


def identity_scores(
    emb: np.ndarray, ids: np.ndarray, rng: np.random.Generator, n_impostor: int = 20_000
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of all same-identity pairs and of random different-identity pairs."""
    same = ids[:, None] == ids[None, :]
    iu = np.triu_indices(len(ids), 1)
    sim = emb @ emb.T
    genuine = sim[iu][same[iu]]
    a = rng.integers(0, len(ids), n_impostor)
    b = rng.integers(0, len(ids), n_impostor)
    keep = ids[a] != ids[b]
    return genuine, sim[a[keep], b[keep]]


def frame_metrics(
    probes: StageProbes,
    frames: np.ndarray,
    targets: dict[str, np.ndarray],
    expression_min_intensity: float = 0.0,
) -> dict[str, float]:
    """Mouth R2, expression and blink accuracy, pose MAE of frames against their targets."""
    r = probes.read_frames(frames)
    vis = targets["face_visible"]
    front = vis & (np.abs(targets["yaw"]) < 60)
    expr_mask = vis & (targets["expression_intensity"] >= expression_min_intensity)
    blink_true = targets["blink"] > 0.5
    out = {
        "mouth_r2": r2_score(r.mouth_open[vis], targets["mouth_open"][vis]),
        "mouth_mae": float(np.mean(np.abs(r.mouth_open[vis] - targets["mouth_open"][vis]))),
        "expression_acc": float(
            np.mean(r.expression[expr_mask] == targets["expression"][expr_mask])
        ),
        "blink_acc": float(np.mean(r.blinking[vis] == blink_true[vis])),
        "yaw_mae_deg": float(np.mean(angle_error(r.yaw, targets["yaw"]))),
        "yaw_mae_front_deg": float(np.mean(angle_error(r.yaw[front], targets["yaw"][front]))),
        "pitch_mae_deg": float(np.mean(np.abs(r.pitch - targets["pitch"]))),
        "roll_mae_deg": float(np.mean(np.abs(r.roll - targets["roll"]))),
        "frames": int(len(frames)),
        "face_visible_frames": int(vis.sum()),
    }
    return out


def evaluate_frame_set(probes: StageProbes, fs: FrameSet, seed: int) -> dict[str, dict]:
    """Frame and identity metrics of a held-out `FrameSet`, clean and degraded."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xE7A1]))
    degraded = degrade_batch(fs.frames, rng, 1.0)
    out = {}
    for name, frames in (("clean", fs.frames), ("degraded", degraded)):
        m = frame_metrics(probes, frames, fs.targets)
        emb = probes.identity_embedding(frames)
        genuine, impostor = identity_scores(emb, fs.identity, rng)
        m["identity_eer"] = equal_error_rate(genuine, impostor)
        m["identity_same_mean"] = float(genuine.mean())
        m["identity_diff_mean"] = float(impostor.mean())
        out[name] = m
    return out


def evaluate_sessions(
    probes: StageProbes, sessions: Iterable[SessionWindows], seed: int
) -> dict[str, dict]:
    """Action accuracy on performance windows, and frame metrics on performance frames.

    Each session is read clean and with one degradation for all its frames (as a generated
    video would be degraded).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5E55]))
    pred: dict[str, list] = {"clean": [], "degraded": []}
    true, frames_all, targets_all = [], [], []
    for s in sessions:
        d = sample_degradation(rng)
        versions = {
            "clean": s.frames,
            "degraded": np.stack([apply_degradation(f, d, rng) for f in s.frames]),
        }
        for name, frames in versions.items():
            feats = probes.frame_features(frames)
            pred[name].append(probes.classify_windows(feats[s.windows]).action)
        true.append(s.actions)
        frames_all.append(s.frames)
        targets_all.append(s.targets)
    y = np.concatenate(true)
    out: dict[str, dict] = {}
    for name, p in pred.items():
        p = np.concatenate(p)
        per_class = {
            ACTIONS[c]: float(np.mean(p[y == c] == c))
            for c in range(len(ACTIONS))
            if (y == c).any()
        }
        out[name] = {
            "action_acc": float(np.mean(p == y)),
            "action_balanced_acc": float(np.mean(list(per_class.values()))),
            "action_per_class_acc": per_class,
            "windows": int(len(y)),
        }
    targets = {k: np.concatenate([t[k] for t in targets_all]) for k in targets_all[0]}
    out["performance_frames"] = frame_metrics(
        probes, np.concatenate(frames_all), targets, expression_min_intensity=0.5
    )
    return out


def evaluate_heldout_frames(
    probes: StageProbes, n_ids: int, frames_per_id: int, seed: int, workers: int = 1
) -> dict[str, dict]:
    """Render a fresh held-out `FrameSet` and evaluate it (`evaluate_frame_set`)."""
    fs = render_frame_set("heldout", n_ids, frames_per_id, seed, workers)
    return evaluate_frame_set(probes, fs, seed)
