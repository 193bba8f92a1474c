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
