"""Clip files, the manifest, resumability and the `lpm data stage` command."""

from __future__ import annotations

import json

import av
import pytest
import soundfile as sf
import typer
from typer.testing import CliRunner

from lpm.cli.data import app as data_app
from lpm.data.stage import writer
from lpm.data.stage.schema import CLIP_FILES, MANIFEST_NAME, SCHEMA_VERSION
from lpm.data.stage.writer import StageDatasetConfig, build_dataset, read_manifest


def _cfg(out, clips=3, **kw):
    return StageDatasetConfig(
        out=out, clips=clips, seconds=1.5, resolution=32, backend="formant", **kw
    )


def test_clip_directory_and_mp4(tmp_path):
    entries = build_dataset(_cfg(tmp_path, clips=1), progress=False)
    assert len(entries) == 1 and entries[0]["schema"] == SCHEMA_VERSION
    d = tmp_path / entries[0]["dir"]
    with av.open(str(d / CLIP_FILES.video)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert len(c.streams.audio) == 1 and c.streams.audio[0].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 36 and frames[0].shape == (32, 32, 3)
    labels = json.loads((d / CLIP_FILES.labels).read_text())
    assert labels["schema"] == SCHEMA_VERSION and labels["num_frames"] == 36
    assert len(labels["fields"]["mouth_open"]) == 36
    speak, sr = sf.read(d / CLIP_FILES.speak)
    listen, _ = sf.read(d / CLIP_FILES.listen)
    assert sr == 16_000 and len(speak) == len(listen) == 24_000
    caps = json.loads((d / CLIP_FILES.captions).read_text())
    assert caps["dense"] and "sentences" in caps
    refs = {p.stem for p in (d / CLIP_FILES.refs_dir).glob("*.png")}
    assert {"view_front", "view_left", "view_right", "view_back", "expr_thinking"} <= refs


def test_cues_follow_the_action_and_expression_labels(tmp_path):
    from lpm.data.stage.captions import ACTION_PHRASES, EXPRESSION_PHRASES

    entries = build_dataset(_cfg(tmp_path, clips=8), progress=False)
    seen = 0
    for e in entries:
        d = tmp_path / e["dir"]
        labels = json.loads((d / CLIP_FILES.labels).read_text())["fields"]
        cues = json.loads((d / CLIP_FILES.captions).read_text())["cues"]
        covered = set()
        for c in cues:
            frames = range(c["start_frame"], c["end_frame"])
            acts = {labels["action"][i] for i in frames}
            exprs = {labels["expression"][i] for i in frames}
            assert len(acts) == 1 and len(exprs) == 1  # one run of one action and expression
            act, expr = acts.pop(), exprs.pop()
            assert act != "none" or expr != "neutral"
            # the cue names the action, then the expression, and nothing else
            said = [f"The character {p}." for p in ACTION_PHRASES[act]] if act != "none" else [""]
            shown = (
                [f"The character, {p}." for p in EXPRESSION_PHRASES[expr]]
                if expr != "neutral" else [""]
            )  # fmt: skip
            assert c["text"] in {f"{a} {e}".strip() for a in said for e in shown}
            covered.update(frames)
        n = len(labels["action"])
        rest = [i for i in range(n) if i not in covered]
        assert all(labels["action"][i] == "none" and labels["expression"][i] == "neutral"
                   for i in rest)  # fmt: skip
        seen += len(cues)
    assert seen > 0


def test_same_seed_same_dataset(tmp_path):
    build_dataset(_cfg(tmp_path / "a", clips=2), progress=False)
    build_dataset(_cfg(tmp_path / "b", clips=2), progress=False)
    for i in range(2):
        la = (tmp_path / "a" / "clips" / f"{i:06d}" / CLIP_FILES.labels).read_text()
        lb = (tmp_path / "b" / "clips" / f"{i:06d}" / CLIP_FILES.labels).read_text()
        assert la == lb
    assert read_manifest(tmp_path / "a") == read_manifest(tmp_path / "b")


def test_resume_after_a_killed_run(tmp_path, monkeypatch):
    real = writer.write_clip
    calls = {"n": 0}

    def dying(clip, clip_dir):
        calls["n"] += 1
        if calls["n"] == 3:
            real(clip, clip_dir)  # fully written, then killed before the rename
            raise KeyboardInterrupt("killed")
        real(clip, clip_dir)

    monkeypatch.setattr(writer, "write_clip", dying)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(_cfg(tmp_path, clips=5), progress=False)
    assert [e["index"] for e in read_manifest(tmp_path)] == [0, 1]
    assert (tmp_path / "clips" / ".tmp-000002").exists()
    # a torn manifest line (killed mid-append) must be ignored and repaired
    with open(tmp_path / MANIFEST_NAME, "a") as f:
        f.write('{"index": 2, "dir": "cl')
    monkeypatch.setattr(writer, "write_clip", real)
    entries = build_dataset(_cfg(tmp_path, clips=5), progress=False)
    assert [e["index"] for e in entries] == [0, 1, 2, 3, 4]
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert len(lines) == 5 and len({json.loads(x)["index"] for x in lines}) == 5
    assert not list((tmp_path / "clips").glob(".tmp-*"))
    # a run over a finished dataset adds nothing
    assert len(build_dataset(_cfg(tmp_path, clips=5), progress=False)) == 5


def test_resume_refuses_other_settings(tmp_path):
    build_dataset(_cfg(tmp_path, clips=1), progress=False)
    with pytest.raises(ValueError, match="different settings"):
        build_dataset(
            StageDatasetConfig(
                out=tmp_path, clips=1, seconds=2.5, resolution=32, backend="formant"
            ),
            progress=False,
        )


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"resolution": 33}, "resolution"),
        ({"seconds": 0}, "seconds"),
        ({"clips": -1}, "clips"),
        ({"clips": 0}, "clips must be >= 1"),
        ({"split": "test"}, "split"),
        ({"backend": "x"}, "backend"),
    ],
)
def test_bad_config(tmp_path, kw, match):
    args = dict(out=tmp_path, clips=1)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        StageDatasetConfig(**args)


def _cli():
    top = typer.Typer()
    top.add_typer(data_app, name="data")
    return top


def test_cli_writes_a_dataset(tmp_path):
    r = CliRunner().invoke(
        _cli(),
        [
            "data",
            "stage",
            "--out",
            str(tmp_path),
            "--clips",
            "1",
            "--seconds",
            "1",
            "--resolution",
            "32",
            "--seed",
            "4",
            "--backend",
            "formant",
            "--no-progress",
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(read_manifest(tmp_path)) == 1


@pytest.mark.parametrize(
    "args,msg",
    [
        (["--resolution", "31"], "resolution"),
        (["--split", "eval"], "split"),
        (["--seconds", "-2"], "seconds"),
    ],
)
def test_cli_bad_arguments(tmp_path, args, msg):
    r = CliRunner().invoke(
        _cli(), ["data", "stage", "--out", str(tmp_path), "--clips", "1", "--no-progress", *args]
    )
    assert r.exit_code == 2
    assert msg in r.output
