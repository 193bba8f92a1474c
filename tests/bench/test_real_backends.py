"""The real-face backend with SyncNet, ArcFace and I3D weight files end to end on a rendered clip.

The weight files hold random weights in the released key layouts and go through the same
loaders as released files; the video is a rendered Stage clip whose cartoon face MediaPipe
finds. Only plumbing is checked (shapes, finite values, where each number lands): random
weights give no quality figure.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lpm.bench.avsync import VSHIFT, SyncNetScorer
from lpm.bench.backends import FeatureExtractor, IdentityEmbedder, RealFaceBackend
from lpm.bench.materialize import materialize
from lpm.bench.nets import arcface, i3d, syncnet
from lpm.bench.nets.checkpoint import released_state
from lpm.bench.report import aggregate
from lpm.bench.runner import RunConfig, load_scores, run_suite
from lpm.bench.suites import Suite, _with_duration, stage_case

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("mediapipe", reason="the real-face backend reads MediaPipe landmarks")

SYNCNET = syncnet.SyncNetConfig(
    audio_channels=(8, 16, 16, 16, 16, 32), lip_channels=(8, 16, 16, 16, 16, 32),
    hidden=32, embed_dim=48,
)  # fmt: skip
ARCFACE = arcface.IResNetConfig(layers=(1, 1, 1, 1), widths=(8, 16, 16, 32), embed_dim=32)
I3D = i3d.I3DConfig(width=0.125, num_classes=12)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Random-weight files in the released layouts (SyncNet .model, backbone.pth, safetensors)."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(
        released_state(syncnet.SyncNet(SYNCNET), syncnet.released_key), d / "syncnet_v2.model"
    )
    torch.save(released_state(arcface.IResNet(ARCFACE), arcface.released_key), d / "backbone.pth")
    save_file(released_state(i3d.InceptionI3d(I3D), i3d.released_key), d / "i3d.safetensors")
    return d


def test_real_backend_scores_a_clip_with_every_network(tmp_path, weight_files):
    case = _with_duration(stage_case(7, 0, "speaking", size=128), 3.0)
    suite_file = tmp_path / "suite.json"
    suite_file.write_text(json.dumps(Suite(name="real-check", cases=(case,)).to_dict()))
    out, videos = tmp_path / "run", tmp_path / "videos"
    inputs = materialize(case, tmp_path, out / "cases" / case.id)
    videos.mkdir()
    shutil.copy(out / "cases" / case.id / "inputs" / "truth.mp4", videos / f"{case.id}.mp4")
    backend = RealFaceBackend(
        identity=IdentityEmbedder(weight_files / "backbone.pth"),  # depth read off the file
        features=FeatureExtractor(i3d.load_i3d(weight_files / "i3d.safetensors", I3D)),
        syncnet=SyncNetScorer(syncnet.load_syncnet(weight_files / "syncnet_v2.model", SYNCNET)),
    )
    cfg = RunConfig(suite=str(suite_file), out=out, videos=videos, with_truth=False,
                    progress=False)  # fmt: skip
    summary = run_suite(cfg, backend=backend)
    assert summary.systems == ["videos"] and not summary.missing

    (score,) = load_scores(out)["videos"]
    m = score.metrics
    assert m["syncnet_offset"] == int(m["syncnet_offset"]) and abs(m["syncnet_offset"]) <= VSHIFT
    assert np.isfinite(m["syncnet_confidence"]) and m["syncnet_confidence"] >= 0
    assert np.isfinite(m["syncnet_min_dist"]) and m["syncnet_min_dist"] > 0
    assert -1 <= m["id_similarity"] <= 1 and len(score.id_per_second) == 3
    assert score.features.shape == (72, 12) and np.isfinite(score.features).all()
    overall = aggregate(out)["systems"]["videos"]["overall"]["metrics"]
    assert overall["syncnet_confidence"] == pytest.approx(m["syncnet_confidence"])

    # the face boxes that drive the crops come from the landmarks of (almost) every frame
    frames = inputs.truth_frames
    r = backend.read(frames, 24.0)
    found = np.isfinite(r.face_box).all(1)
    assert r.face_box.shape == (72, 4) and found.mean() > 0.9
    x0, y0, x1, y1 = np.nanmedian(r.face_box, 0)
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 and x1 - x0 > 20
    res = backend.syncnet.score(iter([frames]), 24.0, r.face_box, inputs.speak, 16_000)
    assert res.windows == 70 and res.dists.shape == (2 * VSHIFT + 1,)  # 3 s: 75 frames, 299 MFCCs


def test_cli_wires_weight_files_into_the_real_backend(tmp_path, weight_files):
    from lpm.cli.bench import _backend, app

    torch.save(released_state(syncnet.SyncNet(), syncnet.released_key), tmp_path / "full.model")
    b = _backend("real", None, weight_files / "backbone.pth", None, tmp_path / "full.model")
    assert isinstance(b, RealFaceBackend) and b.syncnet is not None and b.features is None
    assert isinstance(b.identity.module, arcface.IResNet)
    res = CliRunner().invoke(
        app,
        ["run", "--suite", "stage-mini", "--out", str(tmp_path / "o"), "--videos", str(tmp_path),
         "--syncnet", str(tmp_path / "full.model")],
    )  # fmt: skip
    assert res.exit_code == 2 and "--backend real" in res.output
    res = CliRunner().invoke(
        app,
        ["run", "--suite", "stage-mini", "--out", str(tmp_path / "o"), "--videos", str(tmp_path),
         "--backend", "real", "--syncnet", str(weight_files / "syncnet_v2.model")],
    )  # fmt: skip
    assert res.exit_code == 2 and "mis-shaped" in res.output and "netcnnaud.0.weight" in res.output


def test_cli_checks_and_converts_weight_files(tmp_path, weight_files):
    from lpm.cli.bench import app

    out = tmp_path / "backbone.safetensors"
    res = CliRunner().invoke(
        app, ["weights", "arcface", str(weight_files / "backbone.pth"), "--to", str(out)]
    )
    assert res.exit_code == 0 and "IResNet" in res.output and "layers=(1, 1, 1, 1)" in res.output
    a, b = arcface.load_arcface(weight_files / "backbone.pth"), arcface.load_arcface(out)
    faces = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(a(faces), b(faces))
    res = CliRunner().invoke(app, ["weights", "syncnet", str(weight_files / "backbone.pth")])
    assert res.exit_code == 2 and "missing" in res.output and "netcnnaud.0.weight" in res.output
