"""Metric validation: ground truth scores at its ceiling; shifted audio, swapped identity,
frozen, flickering, lip-flapping or instruction-ignoring videos score clearly worse."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from lpm.bench.backends import Readings, identity_code, pixel_stats, readings_from_labels
from lpm.bench.metrics import (
    dimension_scores,
    frechet_distance,
    identity_metrics,
    identity_series,
    motion_metrics,
    motion_stats,
    offset_correlations,
    sync_metrics,
    text_metrics,
    text_results,
    truth_mouth_metrics,
)
from lpm.bench.probes.probes import WEIGHTS_DIR, WEIGHTS_NAME


def _oracle(inputs, frames=None) -> Readings:
    r = readings_from_labels(inputs.truth_labels)
    r.brightness, r.pixel_motion = pixel_stats(
        inputs.truth_frames if frames is None else frames, None
    )
    return r


def _shift(x: np.ndarray, frames: int, sr: int, fps: int) -> np.ndarray:
    n = int(round(frames * sr / fps))
    return np.concatenate([np.zeros(n, x.dtype), x[:-n]])


def _sync(r, inputs, speak=None):
    return sync_metrics(
        r,
        inputs.speak if speak is None else speak,
        inputs.listen,
        inputs.sample_rate,
        inputs.case.fps,
    )


def test_sync_ground_truth_near_ceiling_and_shift_is_worse(conversation_inputs):
    inp = conversation_inputs
    r = _oracle(inp)
    gt = _sync(r, inp)
    assert gt["sync_corr"] > 0.6 and abs(gt["sync_offset"]) <= 3
    assert gt["false_lip_rate"] == 0.0 and gt["switch_latency_s"] <= 0.15
    shifted = _sync(r, inp, _shift(inp.speak, 10, inp.sample_rate, inp.case.fps))
    assert shifted["sync_corr"] < gt["sync_corr"] - 0.3
    assert shifted["sync_offset"] >= 7  # the mouth now moves ~10 frames before its audio
    assert dimension_scores(shifted)["sync"] < dimension_scores(gt)["sync"] - 0.2


def test_offset_correlation_finds_a_known_lag():
    rng = np.random.default_rng(0)
    env = np.convolve(rng.random(300), np.ones(5) / 5, mode="same")
    mouth = np.roll(env, -4)  # mouth leads by 4 frames
    c = offset_correlations(mouth, env)
    assert max(c, key=c.get) == 4


def test_lips_moving_while_listening_are_caught(conversation_inputs):
    inp = conversation_inputs
    r = _oracle(inp)
    flapping = replace(
        r,
        mouth_open=np.clip(
            r.mouth_open + 0.5 * (np.sin(np.arange(len(r.mouth_open)) * 1.3) > 0), 0, 1
        ),
    )
    bad = _sync(flapping, inp)
    assert bad["false_lip_rate"] > 0.3
    assert dimension_scores(bad)["sync"] < dimension_scores(_sync(r, inp))["sync"] - 0.1


def test_truth_mouth_metrics_exact_vs_shuffled_and_flapping(conversation_inputs):
    inp = conversation_inputs
    r = _oracle(inp)
    exact = truth_mouth_metrics(r, inp.truth_labels)
    assert exact["truth_mouth_corr"] == pytest.approx(1.0, abs=1e-6)
    assert exact["listen_mouth"] < 0.05
    rng = np.random.default_rng(0)
    shuffled = replace(r, mouth_open=rng.permutation(r.mouth_open))
    assert truth_mouth_metrics(shuffled, inp.truth_labels)["truth_mouth_corr"] < 0.3
    flapping = replace(r, mouth_open=np.clip(r.mouth_open + 0.4, 0, 1))
    assert truth_mouth_metrics(flapping, inp.truth_labels)["listen_mouth"] > 0.35
    assert truth_mouth_metrics(r, None) == {"truth_mouth_corr": None, "listen_mouth": None}


def test_identity_ground_truth_vs_swapped(conversation_inputs):
    inp = conversation_inputs
    r = _oracle(inp)
    seed = inp.truth_labels["identity"][0]
    refs = identity_code(seed)[None]
    gt = identity_metrics(identity_series(r, refs), inp.case.fps)
    other = replace(r, identity=np.repeat(identity_code(seed + 1)[None], r.num_frames, 0))
    swapped = identity_metrics(identity_series(other, refs), inp.case.fps)
    assert gt["id_similarity"] > 0.99 and abs(gt["id_drift_per_min"]) < 1e-3
    assert swapped["id_similarity"] < 0.5


def test_identity_drift_slope_per_minute():
    fps, n = 24, 24 * 120  # two minutes morphing toward another identity
    t = np.arange(n) / fps / 60.0
    a, b = identity_code(1), identity_code(2)
    w = 0.3 * t[:, None]
    emb = (1 - w) * a + w * b
    series = identity_series(Readings(identity=emb), a[None])
    m = identity_metrics(series, fps)
    assert m["id_drift_per_min"] < -0.1 and m["id_similarity"] < 0.95


def _motion(r, truth, fps):
    return motion_metrics(motion_stats(r, fps), motion_stats(truth, fps))


def test_motion_frozen_and_flickering_videos_score_worse(conversation_inputs):
    inp = conversation_inputs
    fps = inp.case.fps
    gt_r = _oracle(inp)
    gt = _motion(gt_r, gt_r, fps)
    assert dimension_scores(gt)["motion"] == pytest.approx(1.0)
    assert gt["static_fraction"] == 0.0
    frozen_frames = np.repeat(inp.truth_frames[:1], len(inp.truth_frames), 0)
    frozen_r = replace(
        readings_from_labels(inp.truth_labels),
        yaw=np.zeros(gt_r.num_frames),
        pitch=np.zeros(gt_r.num_frames),
        roll=np.zeros(gt_r.num_frames),
    )
    frozen_r.brightness, frozen_r.pixel_motion = pixel_stats(frozen_frames, None)
    frozen = _motion(frozen_r, gt_r, fps)
    assert frozen["static_fraction"] == 1.0
    assert dimension_scores(frozen)["motion"] < 0.5
    rng = np.random.default_rng(0)
    jittery = replace(
        gt_r,
        yaw=gt_r.yaw + rng.normal(0, 3, gt_r.num_frames),
        brightness=gt_r.brightness + rng.normal(0, 4, gt_r.num_frames),
    )
    jit = _motion(jittery, gt_r, fps)
    assert jit["jitter"] > 3 * gt["jitter"] and jit["flicker"] > 3 * gt["flicker"]
    assert dimension_scores(jit)["motion"] < 0.8


def test_text_controllability_ground_truth_vs_ignored(conversation_inputs):
    inp = conversation_inputs
    r = _oracle(inp)
    scored = [i for i in inp.case.instructions if i.action or i.expression]
    assert scored, "the fixture case must request at least one action or expression"
    gt = text_metrics(text_results(r, inp.case.instructions, inp.case.fps))
    assert gt["text_accuracy"] == 1.0
    blank = replace(
        r,
        action_probs=np.eye(9)[np.zeros(r.num_frames, int)],
        expression_probs=np.eye(8)[np.zeros(r.num_frames, int)],
    )
    ignored = text_metrics(text_results(blank, inp.case.instructions, inp.case.fps))
    assert ignored["text_accuracy"] <= 0.0 + 1e-9


def test_frechet_distance_zero_for_identical_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = rng.normal(size=(400, 8))
    assert frechet_distance(a, b) < frechet_distance(a, b + 1.0)
    with pytest.raises(ValueError, match="feature sets"):
        frechet_distance(a, b[:, :4])


needs_probes = pytest.mark.skipif(
    not (WEIGHTS_DIR / WEIGHTS_NAME).is_file(), reason="no shipped probe weights yet"
)


@needs_probes
@pytest.mark.slow
def test_with_shipped_probes_ground_truth_beats_corruptions(conversation_inputs):
    """The same checks through the real Stage probes (the backend of Stage suites)."""
    from lpm.bench.backends import StageBackend, read_all
    from lpm.bench.scoring import reference_embeddings, score_readings

    inp = conversation_inputs
    be = StageBackend()
    fps = inp.case.fps
    truth = read_all(be, inp.truth_frames, fps)
    ts = motion_stats(truth, fps)
    ref = reference_embeddings(be, inp)
    gt = score_readings(truth, inp, system="gt", ref_emb=ref, truth_stats=ts, fps=fps)
    shifted_inp = replace(inp, speak=_shift(inp.speak, 10, inp.sample_rate, fps))
    shifted = score_readings(truth, shifted_inp, system="s", ref_emb=ref, truth_stats=ts, fps=fps)
    from lpm.data.stage import FrameState, make_character, render_frame

    stranger = make_character(inp.case.stage.performer_seed + 1)
    size = inp.case.stage.size
    other_ref = be.embed(np.stack([render_frame(stranger, FrameState(), size)]))
    swapped = score_readings(truth, inp, system="x", ref_emb=other_ref, truth_stats=ts, fps=fps)
    frozen_frames = np.repeat(inp.truth_frames[:1], len(inp.truth_frames), 0)
    frozen = score_readings(
        read_all(be, frozen_frames, fps), inp, system="f", ref_emb=ref, truth_stats=ts, fps=fps
    )
    assert gt.metrics["sync_corr"] > shifted.metrics["sync_corr"] + 0.2
    assert gt.dims["motion"] > frozen.dims["motion"] + 0.2
    assert gt.dims["identity"] > swapped.dims["identity"] + 0.2
