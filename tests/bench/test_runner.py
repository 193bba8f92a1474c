"""`lpm bench run` end to end on a tiny random model: resumable, --videos, report, CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import random_probes
from typer.testing import CliRunner

from lpm.bench.backends import FeatureExtractor, IdentityEmbedder, StageBackend, load_scripted
from lpm.bench.browser import browser_available
from lpm.bench.report import write_report
from lpm.bench.runner import TRUTH_SYSTEM, RunConfig, load_scores, run_suite
from lpm.media import read_video


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, bundle_dir):
    out = tmp_path_factory.mktemp("run")
    cfg = RunConfig(suite="stage-mini", out=out, model=bundle_dir, limit=2, progress=False)
    summary = run_suite(cfg, backend=StageBackend(random_probes()))
    assert summary.systems == sorted(["tiny-model", TRUTH_SYSTEM]) and not summary.missing
    return out


@pytest.mark.slow
def test_run_writes_videos_scores_and_resumes(run_dir, bundle_dir):
    videos = sorted((run_dir / "systems" / "tiny-model" / "videos").glob("*.mp4"))
    assert [v.stem for v in videos] == ["listening-0001", "speaking-0000"]
    stamp = {v: v.stat().st_mtime_ns for v in videos}
    scores = load_scores(run_dir)
    assert set(scores) == {"tiny-model", TRUTH_SYSTEM}
    assert all(s.dims["identity"] is not None for s in scores["tiny-model"])
    cfg = RunConfig(suite="stage-mini", out=run_dir, model=bundle_dir, limit=2, progress=False)
    again = run_suite(cfg, backend=StageBackend(random_probes()), pipeline=object())
    assert again.cases == 2 and {v: v.stat().st_mtime_ns for v in videos} == stamp


@pytest.mark.slow
def test_videos_from_another_system_and_report(run_dir, tmp_path):
    other = tmp_path / "other-system"
    other.mkdir()
    for case in ("speaking-0000", "listening-0001"):  # "another system": the ground truth
        shutil.copy(run_dir / "cases" / case / "inputs" / "truth.mp4", other / f"{case}.mp4")
    run_suite(
        RunConfig(suite="stage-mini", out=run_dir, videos=other, limit=2, progress=False),
        backend=StageBackend(random_probes()),
    )
    html, mpath = write_report(run_dir)
    metrics = json.loads(mpath.read_text())
    assert set(metrics["systems"]) == {"tiny-model", "other-system", TRUTH_SYSTEM}
    copy = metrics["systems"]["other-system"]["overall"]
    truth = metrics["systems"][TRUTH_SYSTEM]["overall"]
    assert copy["dims"] == pytest.approx(truth["dims"])  # same videos, same scores
    assert truth["frechet_distance"] == pytest.approx(0.0, abs=1e-3)
    first = metrics["comparisons"][0]
    assert {first["a"], first["b"]} == {"tiny-model", "other-system"} and first["gsb"]
    text = html.read_text()
    assert "Side by side" in text and "Good / Same / Bad" in text and "speaking" in text
    if browser_available():
        from lpm.bench.browser import screenshot_page

        png = screenshot_page(html, tmp_path / "report.png")
        assert png.stat().st_size < 300 * 1024


def test_run_config_errors(tmp_path, bundle_dir):
    with pytest.raises(ValueError, match="--model ONLINE_BUNDLE"):
        RunConfig(suite="stage-mini", out=tmp_path, videos=tmp_path, online=True)
    with pytest.raises(ValueError, match="offline model"):
        cfg = RunConfig(suite="stage-mini", out=tmp_path / "x", model=bundle_dir, online=True,
                        limit=1, progress=False)  # fmt: skip
        run_suite(cfg, backend=StageBackend(random_probes()))
    with pytest.raises(ValueError, match="exactly one of"):
        RunConfig(suite="stage-mini", out=tmp_path)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        RunConfig(suite="stage-mini", out=tmp_path, model=bundle_dir, steps=0)
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        RunConfig(suite="stage-mini", out=tmp_path, model=bundle_dir, device="tpu")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        RunConfig(suite="stage-mini", out=tmp_path / "afile", model=bundle_dir)
    with pytest.raises(FileNotFoundError, match="no video found"):
        empty = tmp_path / "empty"
        empty.mkdir()
        run_suite(
            RunConfig(
                suite="stage-mini",
                out=tmp_path / "o",
                videos=empty,
                limit=1,
                with_truth=False,
                progress=False,
            ),
            backend=StageBackend(random_probes()),
        )


def test_cli_suite_and_run_errors(tmp_path):
    from lpm.cli.bench import app

    runner = CliRunner()
    res = runner.invoke(app, ["suite", "stage-1000", "--out", str(tmp_path / "s.json")])
    assert res.exit_code == 0 and "1000 cases" in res.output
    assert len(json.loads((tmp_path / "s.json").read_text())["cases"]) == 1000
    res = runner.invoke(
        app,
        [
            "run",
            "--suite",
            "stage-mini",
            "--out",
            str(tmp_path / "o"),
            "--online",
            "--model",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 2 and "bundle.json" in res.output


def test_torchscript_loaders_with_tiny_modules(tmp_path):
    class Embed(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3))  # (N, 3)

    class Video(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3, 4))  # (B, 3)

    torch.jit.script(Embed()).save(str(tmp_path / "arcface.pt"))
    torch.jit.script(Video()).save(str(tmp_path / "i3d.pt"))
    frames = torch.randint(0, 255, (10, 40, 40, 3), dtype=torch.uint8).numpy()
    emb = IdentityEmbedder(tmp_path / "arcface.pt", input_size=16)(frames)
    assert emb.shape == (10, 3) and abs(float((emb**2).sum(1).mean()) - 1) < 1e-5
    feats = FeatureExtractor(tmp_path / "i3d.pt", input_size=16, clip=4, stride=3)(frames)
    assert feats.shape == (10, 3)
    with pytest.raises(FileNotFoundError, match="torch.jit.script"):
        load_scripted(tmp_path / "nope.pt", "identity")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_scripted(tmp_path / "junk.pt", "identity")


def test_online_run_streams_a_case(tmp_path):
    from tests.inference.test_streaming import online_bundle

    online_bundle().save(tmp_path / "online")
    summary = run_suite(
        RunConfig(suite="stage-mini", out=tmp_path / "o", model=tmp_path / "online", online=True,
                  limit=1, with_truth=False, progress=False),
        backend=StageBackend(random_probes()),
    )  # fmt: skip
    assert summary.systems == ["online"] and not summary.missing
    video = tmp_path / "o" / "systems" / "online" / "videos" / "speaking-0000.mp4"
    frames, fps = read_video(video)
    assert fps == 24 and len(frames) >= 24 * 3 - 1
