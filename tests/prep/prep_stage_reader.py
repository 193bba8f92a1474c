"""A reader of Stage clip directories that checks every file and field against the schema."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from lpm.data.stage.schema import (
    ACTIONS,
    CLIP_FILES,
    EXPRESSIONS,
    SCHEMA_VERSION,
    STATES,
    VIEWS,
)

LABEL_FIELDS = (
    "frame",
    "state",
    "mouth_open",
    "mouth_round",
    "head_yaw",
    "head_pitch",
    "head_roll",
    "gaze_x",
    "gaze_y",
    "brow_raise",
    "expression",
    "expression_intensity",
    "action",
    "blink",
    "lean",
    "wave",
    "identity",
    "view",
)
MANIFEST_FIELDS = (
    "schema",
    "index",
    "dir",
    "performer_seed",
    "partner_seed",
    "split",
    "mode",
    "num_frames",
    "fps",
    "resolution",
    "seconds",
    "sample_rate",
    "speech_backend",
    "state_fraction",
    "caption",
)
REFS = {"global_0", "global_1", *(f"view_{v}" for v in VIEWS), *(f"expr_{e}" for e in EXPRESSIONS)}


def read_clip(d: Path) -> dict:
    """Read one clip directory; raises AssertionError naming what breaks the schema."""
    d = Path(d)
    labels = json.loads((d / CLIP_FILES.labels).read_text())
    assert labels["schema"] == SCHEMA_VERSION
    n, fps = labels["num_frames"], labels["fps"]
    fields = labels["fields"]
    assert sorted(fields) == sorted(LABEL_FIELDS), sorted(set(fields) ^ set(LABEL_FIELDS))
    assert all(len(v) == n for v in fields.values())
    assert set(fields["state"]) <= set(STATES)
    assert set(fields["expression"]) <= set(EXPRESSIONS)
    assert set(fields["action"]) <= set(ACTIONS)
    assert set(fields["view"]) <= set(VIEWS)
    assert all(0.0 <= v <= 1.0 for v in fields["mouth_open"])
    with av.open(str(d / CLIP_FILES.video)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264" and c.streams.audio
        assert c.streams.audio[0].codec_context.name == "aac"
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    assert len(frames) == n and frames[0].shape[0] == frames[0].shape[1]
    audio = {}
    for name in (CLIP_FILES.speak, CLIP_FILES.listen, CLIP_FILES.mix):
        x, sr = sf.read(d / name, dtype="float32")
        assert sr == 16_000 and x.ndim == 1
        assert abs(len(x) - n / fps * sr) <= sr / fps
        audio[name] = x
    caps = json.loads((d / CLIP_FILES.captions).read_text())
    assert caps["schema"] == SCHEMA_VERSION
    for c in caps["dense"] + caps["sentences"]:
        assert set(c) == {"start_frame", "end_frame", "text", "state", "speaker"}
        assert 0 <= c["start_frame"] < c["end_frame"] <= n and c["state"] in STATES
    meta = json.loads((d / CLIP_FILES.meta).read_text())
    assert meta["schema"] == SCHEMA_VERSION and meta["num_frames"] == n and meta["fps"] == fps
    refs = {p.stem for p in (d / CLIP_FILES.refs_dir).glob("*.png")}
    assert refs >= REFS, REFS - refs
    return {"fields": fields, "frames": np.stack(frames), "audio": audio, "meta": meta}
