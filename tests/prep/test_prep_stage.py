"""The pipeline on held-out Stage raw scenes: schema, accuracy, drops, resumability."""

from __future__ import annotations

import json
import shutil

import pytest

from lpm.data.stage.reader import MANIFEST_FIELDS, read_clip_dir
from lpm.data.stage.writer import StageDatasetConfig, build_dataset, read_manifest


def test_clips_follow_the_stage_schema(prepped, tmp_path):
    out, summary = prepped
    assert summary["clips"] >= 2 and not summary["errors"]
    entries = read_manifest(out)
    assert len(entries) == summary["clips"]
    # the same reader accepts a clip written by `lpm data stage`
    build_dataset(
        StageDatasetConfig(out=tmp_path, clips=1, seconds=1.0, resolution=32, backend="formant"),
        progress=False,
    )
    stage_entry = read_manifest(tmp_path)[0]
    stage = read_clip_dir(tmp_path / stage_entry["dir"])
    for e in entries:
        assert set(MANIFEST_FIELDS) <= set(e) and set(stage_entry) <= set(e) | {"kind"}
        clip = read_clip_dir(out / e["dir"])
        assert sorted(clip.fields) == sorted(stage.fields)
        assert clip.meta["num_frames"] >= 3 * 24
    funnel = json.loads((out / "funnel.json").read_text())
    assert funnel["written"][0] == summary["clips"]
    assert funnel["shots"][1] >= funnel["filtered"][1] >= funnel["written"][1] > 0


def test_accuracy_shots_and_drops(raw_scenes, prepped):
    from lpm.data.prep.evaluate import score_run

    out, _ = prepped
    r = score_run(raw_scenes, out)
    assert r["label_accuracy"] >= 0.85, r
    assert r["boundary_recall"] >= 0.7 and r["boundary_precision"] >= 0.8, r
    visible = [d for d in r["wrong_reasons"] if d["truth"] != "too_short"]
    assert not visible, visible  # every overlay / blur / empty / pip shot: right reason


@pytest.mark.slow
def test_rerun_resumes_without_duplicates(raw_scenes, prepped, tmp_path):
    from lpm.data.prep.config import stage_config
    from lpm.data.prep.runner import run_local

    out, summary = prepped
    work = tmp_path / "copy"
    shutil.copytree(out, work)
    before = (work / "manifest.jsonl").read_text()
    # simulate a crash in the middle of the first source: report gone, a half-written clip left
    reports = sorted((work / "videos").glob("*.json"))
    sid = reports[0].stem
    reports[0].unlink()
    (work / "clips" / f".tmp-{sid}-999-000000-abcdef").mkdir()
    again = run_local(raw_scenes, work, stage_config(), progress=False)
    assert again["clips"] == summary["clips"]
    assert (work / "manifest.jsonl").read_text() == before
    assert not list((work / "clips").glob(".tmp-*"))
    dirs = [json.loads(x)["dir"] for x in before.splitlines()]
    assert len(dirs) == len(set(dirs))


@pytest.mark.slow
def test_kept_clips_train_without_conversion(prepped, tmp_path):
    """Prep output -> `lpm data encode` -> `lpm train`, with no conversion step."""
    import torch

    from lpm.data.encode import ClipEncoder, EncodeConfig, encode_dataset
    from lpm.inference.bundle import load_encoders
    from lpm.parallel.distributed import DistInfo
    from lpm.train.recipes import apply_overrides, get_recipe
    from lpm.train.trainer import Trainer
    from tests.inference.test_pipeline import tiny_bundle

    out, _ = prepped
    tiny_bundle().save(tmp_path / "bundle")
    spec, vae, text, audio = load_encoders(tmp_path / "bundle")
    report = encode_dataset(
        EncodeConfig(data=out, out=tmp_path / "cache", on_error="fail"),
        ClipEncoder(vae, text, audio, spec.sample_rate),
    )
    assert report.encoded >= 2 and not report.skipped
    recipe = apply_overrides(get_recipe("test-speak"), [
        "data=cache", f"data_path={tmp_path / 'cache'}", "latent_shape=[4,16,16]",
        "model.text_dim=32", "model.audio_dim=32", "batch_size=2", "stages.speak.steps=2",
        "stages.speak.categories=[speak,silence,conversation,listen]",
    ])  # fmt: skip
    result = Trainer(recipe, tmp_path / "run", dist_info=DistInfo(), progress=False).fit()
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final_loss))
