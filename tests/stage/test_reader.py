"""The clip-schema reader accepts written clips and names what breaks the schema."""

from __future__ import annotations

import json

import pytest

from lpm.data.stage.reader import read_clip_dir
from lpm.data.stage.writer import StageDatasetConfig, build_dataset, read_manifest


def test_reader_round_trip_and_errors(tmp_path):
    build_dataset(StageDatasetConfig(out=tmp_path, clips=1, seconds=1.0, resolution=32,
                                     backend="formant"), progress=False)  # fmt: skip
    clip_dir = tmp_path / read_manifest(tmp_path)[0]["dir"]
    clip = read_clip_dir(clip_dir)
    assert clip.frames.shape == (24, 32, 32, 3) and len(clip.fields["state"]) == 24
    assert set(clip.audio) == {"speak", "listen", "mix"}
    labels = json.loads((clip_dir / "labels.json").read_text())
    labels["fields"]["state"][3] = "dancing"
    (clip_dir / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ValueError, match=r"labels.json.*state.*dancing"):
        read_clip_dir(clip_dir)
    (clip_dir / "video.mp4").write_bytes(b"junk")
    labels["fields"]["state"][3] = "speak"
    (clip_dir / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(ValueError, match="video.mp4"):
        read_clip_dir(clip_dir)
