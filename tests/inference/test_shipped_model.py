"""The shipped lpm-nano and lpm-nano-online: `lpm generate [--online]` with no arguments renders
the demo; all shipped weights fit 25 MB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.inference import shipped_bundle_path
from lpm.inference.bundle import BundleSpec
from lpm.media import read_video
from lpm.models.dit.delta import base_fingerprint

PACKAGE = Path(__file__).resolve().parents[2] / "lpm"


def test_all_shipped_weights_fit_the_budget():
    files = [p for p in PACKAGE.rglob("*.safetensors") if "weights" in p.parts]
    total = sum(p.stat().st_size for p in files)
    assert any("lpm-nano" in p.parts for p in files)
    assert total <= 25 * 1024 * 1024, f"shipped weights take {total / 2**20:.1f} MiB"
    spec = BundleSpec.from_file(shipped_bundle_path() / "bundle.json")
    assert (spec.height, spec.width) == (64, 64)


def test_shipped_sampling_is_what_the_training_script_packs():
    import re
    import shlex

    script = (PACKAGE.parent / "scripts" / "train_nano_cues.sh").read_text()
    pack = script[script.rindex("lpm model pack ") :].replace("\\\n", " ").splitlines()[0]
    words = shlex.split(pack)
    flags = {
        w: words[i + 1] for i, w in enumerate(words) if re.fullmatch(r"--[a-z-]+-(scale|sigma)", w)
    }
    sampling = BundleSpec.from_file(shipped_bundle_path() / "bundle.json").sampling
    assert len(flags) == 4
    for flag, value in flags.items():
        assert getattr(sampling, flag[2:].replace("-", "_")) == float(value), flag


@pytest.mark.slow
def test_generate_with_no_arguments_writes_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["generate"])
    assert res.exit_code == 0, res.output
    frames, fps = read_video(tmp_path / "lpm.mp4")
    assert fps == 24 and frames.shape == (192, 64, 64, 3)
    # a trained model: a coloured character on its background, not grey noise or a still
    assert frames.std() > 20
    assert np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() > 0.05


def test_shipped_online_model_shares_the_base_encoders():
    import json

    online = shipped_bundle_path("lpm-nano-online")
    spec = json.loads((online / "bundle.json").read_text())
    assert spec["online"] is not None and (spec["height"], spec["width"]) == (64, 64)
    for part in ("vae", "text_encoder", "audio_encoder"):  # stored once, in lpm-nano
        assert (online / spec["paths"][part]).resolve() == shipped_bundle_path() / part
    for role in ("transformer", "refiner"):  # low-rank deltas from lpm-nano's transformer
        delta = json.loads((online / role / "delta.json").read_text())
        assert (online / role / delta["base"]).resolve() == shipped_bundle_path() / "transformer"
        # taken from the shipped lpm-nano as it is now, not from an earlier one
        assert delta["base_fingerprint"] == base_fingerprint(shipped_bundle_path() / "transformer")


@pytest.mark.slow
def test_generate_online_with_no_arguments_streams_the_demo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["generate", "--online"])
    assert res.exit_code == 0, res.output
    assert "online" in res.output
    frames, fps = read_video(tmp_path / "lpm.mp4")
    assert fps == 24 and frames.shape[1:] == (64, 64, 3) and len(frames) >= 192
    assert frames.std() > 20
    assert np.abs(np.diff(frames.astype(np.float32), axis=0)).mean() > 0.05
