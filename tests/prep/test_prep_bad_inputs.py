"""Bad inputs are reported with a reason and skipped; the good source still yields clips."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lpm.data.prep.config import PrepConfig
from lpm.data.prep.media import BadInput, load_source
from lpm.data.prep.runner import run_local
from lpm.data.stage.writer import write_mp4


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    rng = np.random.default_rng(0)
    (d / "noise.mov").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    frames = rng.integers(0, 255, (24, 64, 64, 3), dtype=np.uint8)
    write_mp4(d / "silent.mp4", frames, 24)  # no audio track
    write_mp4(d / "huge.mp4", np.zeros((1, 2400, 4200, 3), np.uint8), 24, np.zeros(800, np.float32))
    with open(d / "cut.mp4", "wb") as f:  # a truncated file: header only
        write_mp4(d / "full_tmp.mp4", frames, 24, np.zeros(16000, np.float32))
        f.write((d / "full_tmp.mp4").read_bytes()[:300])
    (d / "full_tmp.mp4").unlink()
    return d


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.mp4", "empty_file"),
        ("text.mp4", "unreadable"),
        ("noise.mov", "unreadable"),
        ("huge.mp4", "huge_resolution"),
        ("missing.mp4", "missing"),
    ],
)
def test_load_reasons(bad_dir, name, reason):
    with pytest.raises(BadInput) as err:
        load_source(bad_dir / name)
    assert err.value.reason == reason


def test_bad_inputs_skipped_good_one_kept(bad_dir, raw_scenes, tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("scenedetect")
    pytest.importorskip("silero_vad")
    inp = tmp_path / "in"
    shutil.copytree(bad_dir, inp)
    shutil.copy(raw_scenes / "scenes" / "000000" / "video.mp4", inp / "good.mp4")
    cfg = PrepConfig.from_dict({"detect": {"backend": "stage"}, "until": "filters"})
    summary = run_local(inp, tmp_path / "out", cfg, progress=False)
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in summary["skipped"]}
    assert reasons["silent.mp4"] == "no_audio"
    assert reasons["empty.mp4"] == "empty_file" and reasons["text.mp4"] == "unreadable"
    assert reasons["huge.mp4"] == "huge_resolution" and reasons["noise.mov"] == "unreadable"
    assert reasons["cut.mp4"] in ("unreadable", "no_frames")
    assert "good.mp4" not in reasons and not summary["errors"]
    assert summary["funnel"]["filtered"][0] >= 1  # the good source went through


@pytest.mark.parametrize("what", ["missing", "no videos"])
def test_an_input_with_nothing_to_prep_stops_before_writing(tmp_path, what):
    source = tmp_path / "in"
    if what == "no videos":
        source.mkdir()
        (source / "notes.txt").write_text("no footage here")
    with pytest.raises(FileNotFoundError, match="no video files" if what == "no videos" else "nei"):
        run_local(source, tmp_path / "out", PrepConfig(), progress=False)
    assert not (tmp_path / "out").exists()
