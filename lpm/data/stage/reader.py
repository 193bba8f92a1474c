"""Reading and validating a clip directory of the Stage clip schema (`docs/stage.md`).

Both `lpm data stage` and `lpm data prep` write this schema; `read_clip_dir` checks every file
and field and raises `ValueError` naming the file and what breaks the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from lpm.data.stage.schema import (
    ACTIONS,
    CLIP_FILES,
    DEFAULT_SAMPLE_RATE,
    EXPRESSIONS,
    SCHEMA_VERSION,
    STATES,
    VIEWS,
)

LABEL_FIELDS = (
    "frame", "state", "mouth_open", "mouth_round", "head_yaw", "head_pitch", "head_roll",
    "gaze_x", "gaze_y", "brow_raise", "expression", "expression_intensity", "action", "blink",
    "lean", "wave", "identity", "view",
)  # fmt: skip
"""Per-frame fields every `labels.json` carries."""
MANIFEST_FIELDS = (
    "schema", "index", "dir", "performer_seed", "partner_seed", "split", "mode", "num_frames",
    "fps", "resolution", "seconds", "sample_rate", "speech_backend", "state_fraction", "caption",
)  # fmt: skip
"""Keys of every manifest line."""
REFERENCE_NAMES = frozenset(
    {"global_0", "global_1", *(f"view_{v}" for v in VIEWS), *(f"expr_{e}" for e in EXPRESSIONS)}
)
"""Reference images (stems under refs/) every clip carries."""


@dataclass
class ClipData:
    """A clip read from disk."""

    fields: dict[str, list]
    """Per-frame labels, each a list of T values."""
    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB."""
    audio: dict[str, np.ndarray]
    """``speak``, ``listen``, ``mix``: (N,) float32 at 16 kHz."""
    captions: dict
    meta: dict


def _require(ok: bool, where: Path, what: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {what} (clip schema {SCHEMA_VERSION}, see docs/stage.md)")


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} is missing") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None


def _labels(d: Path) -> dict:
    path = d / CLIP_FILES.labels
    labels = _json(path)
    _require(labels.get("schema") == SCHEMA_VERSION, path, f"schema is {labels.get('schema')!r}")
    n, fields = labels.get("num_frames"), labels.get("fields", {})
    odd = sorted(set(fields) ^ set(LABEL_FIELDS))
    _require(not odd, path, f"label fields differ from the schema: {odd}")
    _require(all(len(v) == n for v in fields.values()), path, f"a field is not {n} frames long")
    for name, vocab in (("state", STATES), ("expression", EXPRESSIONS), ("action", ACTIONS),
                        ("view", VIEWS)):  # fmt: skip
        bad = set(fields[name]) - set(vocab)
        _require(not bad, path, f"{name} has values outside the vocabulary: {sorted(bad)}")
    _require(all(0.0 <= v <= 1.0 for v in fields["mouth_open"]), path, "mouth_open outside 0..1")
    return labels


def _video(path: Path, n: int) -> np.ndarray:
    try:
        with av.open(str(path)) as c:
            _require(bool(c.streams.video) and bool(c.streams.audio), path, "needs video + audio")
            _require(c.streams.video[0].codec_context.name == "h264", path, "video is not H.264")
            _require(c.streams.audio[0].codec_context.name == "aac", path, "audio is not AAC")
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
    except (FileNotFoundError, av.error.FFmpegError) as err:
        raise ValueError(f"{path} is not a readable mp4: {err}") from None
    _require(len(frames) == n, path, f"has {len(frames)} frames, labels say {n}")
    return np.stack(frames)


def read_clip_dir(clip_dir: str | Path) -> ClipData:
    """Read one clip directory, checking every file and field against the schema."""
    d = Path(clip_dir)
    labels = _labels(d)
    n, fps = labels["num_frames"], labels["fps"]
    frames = _video(d / CLIP_FILES.video, n)
    audio = {}
    for key, name in (("speak", CLIP_FILES.speak), ("listen", CLIP_FILES.listen),
                      ("mix", CLIP_FILES.mix)):  # fmt: skip
        try:
            x, sr = sf.read(d / name, dtype="float32")
        except (OSError, RuntimeError) as err:
            raise ValueError(f"{d / name} is not a readable wav: {err}") from None
        _require(sr == DEFAULT_SAMPLE_RATE and x.ndim == 1, d / name, "must be mono 16 kHz")
        _require(abs(len(x) - n / fps * sr) <= sr / fps, d / name, "length differs from video")
        audio[key] = x
    captions = _json(d / CLIP_FILES.captions)
    for c in captions.get("dense", []) + captions.get("sentences", []) + captions.get("cues", []):
        ok = set(c) == {"start_frame", "end_frame", "text", "state", "speaker"}
        _require(ok and 0 <= c["start_frame"] < c["end_frame"] <= n, d / CLIP_FILES.captions,
                 f"bad caption entry {c}")  # fmt: skip
    meta = _json(d / CLIP_FILES.meta)
    _require(meta.get("num_frames") == n and meta.get("fps") == fps, d / CLIP_FILES.meta,
             "num_frames/fps differ from labels.json")  # fmt: skip
    refs = {p.stem for p in (d / CLIP_FILES.refs_dir).glob("*.png")}
    missing = sorted(REFERENCE_NAMES - refs)
    _require(not missing, d / CLIP_FILES.refs_dir, f"missing reference images {missing}")
    return ClipData(fields=labels["fields"], frames=frames, audio=audio, captions=captions,
                    meta=meta)  # fmt: skip
