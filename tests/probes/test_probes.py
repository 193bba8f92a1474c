"""Stage probes: shipped weights meet their held-out claims, robustness, input checks, training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lpm.bench.probes import ProbeConfig, ProbeTrainConfig, load_probes, train_probes
from lpm.bench.probes.config import BranchConfig
from lpm.bench.probes.data import Degradation, apply_degradation, render_frame_set
from lpm.bench.probes.evaluate import equal_error_rate, identity_scores, r2_score
from lpm.bench.probes.probes import CARD_NAME, WEIGHTS_DIR, WEIGHTS_NAME, probe_config_from_dict
from lpm.bench.probes.sheet import readings_sheet
from lpm.data.stage.render import head_layout
from lpm.data.stage.schema import HELDOUT_SEEDS

SHIPPED = (WEIGHTS_DIR / WEIGHTS_NAME).is_file()
needs_weights = pytest.mark.skipif(
    not SHIPPED,
    reason="no shipped probe weights: lpm bench train-probes --out lpm/bench/probes/weights",
)


@pytest.fixture(scope="module")
def probes():
    return load_probes()


@pytest.fixture(scope="module")
def fresh_probes():
    from lpm.bench.probes import StageProbes
    from lpm.bench.probes.model import ActionProbeNet, FrameProbeNet

    cfg = ProbeConfig()
    return StageProbes(FrameProbeNet(cfg), ActionProbeNet(cfg))


@pytest.fixture(scope="module")
def heldout():
    # a fresh draw (seed unused by training or the card's evaluation): 50 identities x 4 frames
    fs = render_frame_set("heldout", 50, 4, seed=4242)
    assert all(int(s) in HELDOUT_SEEDS for s in fs.identity_seeds)
    return fs


@needs_weights
def test_shipped_weights_are_small_and_carded():
    weights = WEIGHTS_DIR / WEIGHTS_NAME
    assert weights.stat().st_size <= 3 * 1024 * 1024
    card = json.loads((WEIGHTS_DIR / CARD_NAME).read_text())
    clean = card["metrics"]["heldout_frames"]["clean"]
    assert clean["mouth_r2"] >= 0.9
    assert clean["identity_eer"] <= 0.05
    assert clean["blink_acc"] >= 0.9
    # the expression target (0.9) is not met yet; the card must record the measured value
    assert 0.8 <= clean["expression_acc"] <= 1.0


@needs_weights
def test_heldout_frames_meet_targets(probes, heldout):
    r = probes.read_frames(heldout.frames)
    t = heldout.targets
    vis = t["face_visible"]
    assert vis.sum() >= 150
    assert r2_score(r.mouth_open[vis], t["mouth_open"][vis]) >= 0.85
    # chance is 1/8; the shipped probes reach ~0.37 on the card's held-out draw
    assert np.mean(r.expression[vis] == t["expression"][vis]) >= 0.7
    assert np.mean(r.blinking[vis] == (t["blink"][vis] > 0.5)) >= 0.85


@needs_weights
def test_heldout_identity_separation(probes, heldout):
    emb = probes.identity_embedding(heldout.frames)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    genuine, impostor = identity_scores(emb, heldout.identity, np.random.default_rng(0))
    assert genuine.mean() - impostor.mean() > 0.4
    assert equal_error_rate(genuine, impostor) <= 0.1


@needs_weights
def test_readings_survive_blur_and_jpeg(probes, heldout):
    frames = heldout.frames[:40]
    d = Degradation(blur_sigma=1.2, jpeg_quality=30, down=0.6)
    rng = np.random.default_rng(0)
    bad = np.stack([apply_degradation(f, d, rng) for f in frames])
    a, b = probes.read_frames(frames), probes.read_frames(bad)
    assert np.mean(np.abs(a.mouth_open - b.mouth_open)) < 0.08
    # the expression head is weak (card: ~0.37 accuracy), so its agreement is too (~0.55)
    assert np.mean(a.expression == b.expression) >= 0.7
    assert np.median(np.abs(a.yaw - b.yaw)) < 5.0
    assert np.mean(np.sum(a.identity * b.identity, axis=1)) > 0.8


@needs_weights
def test_any_input_size(probes, heldout):
    import cv2

    frames = heldout.frames[:24]
    small = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in frames])
    big = np.stack([cv2.resize(f, (200, 200)) for f in frames])
    ref = probes.read_frames(frames)
    for other in (small, big):
        r = probes.read_frames(other)
        assert r.mouth_open.shape == (24,)
        assert np.mean(np.abs(r.mouth_open - ref.mouth_open)) < 0.1
    one = probes.read_frames(frames[0])
    assert one.expression.shape == (1,) and one.identity.shape[0] == 1


def test_bad_input_is_rejected(fresh_probes):
    probes = fresh_probes
    with pytest.raises(ValueError, match="uint8"):
        probes.read_frames(np.zeros((2, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        probes.read_frames(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        probes.read_frames(np.zeros((2, 64, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="16x16"):
        probes.read_frames(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="fps"):
        probes.read_actions(np.zeros((4, 64, 64, 3), np.uint8), fps=0)


@needs_weights
def test_read_actions_gives_one_reading_per_frame(probes, heldout):
    frames = heldout.frames[:20]
    acts = probes.read_actions(frames)
    assert acts.action.shape == (20,) and acts.probs.shape == (20, 9)
    assert np.allclose(acts.probs.sum(1), 1.0, atol=1e-4)
    assert len(acts.names) == 20


def test_train_probes_smoke(tmp_path):
    cfg = ProbeTrainConfig(
        train_ids=8,
        frames_per_id=2,
        batch_ids=4,
        action_sessions=2,
        action_steps=2,
        eval_ids=4,
        eval_frames_per_id=2,
        eval_sessions=1,
        render_workers=1,
    )
    result = train_probes(tmp_path, steps=2, seed=3, config=cfg, progress=False)
    assert (tmp_path / WEIGHTS_NAME).is_file() and (tmp_path / CARD_NAME).is_file()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["stage"] == "frame" and rows[-1]["stage"] == "eval"
    assert "mouth_r2" in result.card["metrics"]["heldout_frames"]["clean"]
    reloaded = load_probes(tmp_path)
    assert reloaded.read_frames(np.zeros((1, 32, 32, 3), np.uint8)).mouth_open.shape == (1,)


def test_config_validation():
    with pytest.raises(ValueError, match="batch_ids"):
        ProbeTrainConfig(train_ids=4, batch_ids=8)
    with pytest.raises(ValueError, match="frames_per_id"):
        ProbeTrainConfig(frames_per_id=1)
    with pytest.raises(ValueError, match="face_scale"):
        ProbeConfig(face_scale=5.0)
    with pytest.raises(ValueError, match="region"):
        BranchConfig(region="hands")
    with pytest.raises(ValueError, match="older probe layout"):
        probe_config_from_dict({"input_size": 128, "widths": [32, 48]})


def test_face_crop_follows_head_layout():
    cfg = ProbeConfig()
    x0, y0, side = cfg.face_box
    (cx, cy), head_px = head_layout(cfg.input_size)
    assert x0 < cx - head_px < cx + head_px < x0 + side  # both cheeks inside
    assert y0 < cy < y0 + side and y0 >= 0 and y0 + side <= cfg.input_size


def test_readings_sheet_shape(fresh_probes, heldout):
    from lpm.bench.probes.data import FrameSet

    sub = FrameSet(
        frames=heldout.frames[:5],
        targets={k: v[:5] for k, v in heldout.targets.items()},
        identity=heldout.identity[:5],
        identity_seeds=heldout.identity_seeds,
    )
    img = readings_sheet(fresh_probes, sub, cols=3, scale=2)
    assert img.shape == (2 * 256, 3 * 256, 3) and img.dtype == np.uint8
