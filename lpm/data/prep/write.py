"""Stages 5-7 and the writer: audio variants, captions + semantic check, references, and the
clip directory in the Stage clip schema (`docs/stage.md`), written atomically.

A clip directory holds exactly the files `lpm data stage` writes (`video.mp4`, `speak.wav`,
`listen.wav`, `mix.wav`, `labels.json`, `captions.json`, `meta.json`, `refs/*.png`) with the
same label fields; fields the pipeline does not measure carry their neutral value (0, `none`,
`neutral`) and `meta.json` → `measured_fields` lists the measured ones.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from lpm.data.prep.audio import audio_variants
from lpm.data.prep.config import ORDER, PrepConfig
from lpm.data.prep.media import crop_resize
from lpm.data.prep.pipeline import ClipPlan, VideoWork, _count, clip_name
from lpm.data.prep.refs import build_references, view_of
from lpm.data.prep.semantics import caption_and_verify
from lpm.data.prep.track import crop_box
from lpm.data.stage.schema import CLIP_FILES, SCHEMA_VERSION, STATES
from lpm.data.stage.writer import write_mp4, write_png

MEASURED = ("frame", "state", "mouth_open", "head_yaw", "head_roll", "identity", "view")
"""Label fields the pipeline measures; the others hold neutral values."""
TMP_PREFIX = ".tmp-"


def _identity(source_id: str, person: int) -> int:
    import hashlib

    h = hashlib.blake2b(f"{source_id}:{person}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") & 0x7FFFFFFF


def _resample_idx(n_src: int, src_fps: float, fps: int) -> np.ndarray:
    """Source frame offsets for a clip of n_src source frames written at `fps`."""
    n = max(1, int(round(n_src / src_fps * fps)))
    return np.minimum(np.round(np.arange(n) * src_fps / fps).astype(int), n_src - 1)


def label_fields(clip: ClipPlan, idx: np.ndarray, identity: int, cfg: PrepConfig) -> dict:
    """The Stage label fields for a clip (lists of len(idx))."""
    t = clip.track
    n = len(idx)
    r = lambda x, d=4: [round(float(v), d) for v in x]
    views = [view_of(180.0 - abs(y), np.sign(y), cfg.references) for y in t.yaw[idx]]
    zeros = [0.0] * n
    return {
        "frame": list(range(n)),
        "state": [STATES[int(c)] for c in clip.codes[idx]],
        "mouth_open": r(np.clip(t.mouth[idx], 0.0, 1.0)),
        "mouth_round": zeros,
        "head_yaw": r(t.yaw[idx], 3),
        "head_pitch": zeros,
        "head_roll": r(t.roll[idx], 3),
        "gaze_x": zeros,
        "gaze_y": zeros,
        "brow_raise": zeros,
        "expression": ["neutral"] * n,
        "expression_intensity": zeros,
        "action": ["none"] * n,
        "blink": zeros,
        "lean": zeros,
        "wave": zeros,
        "identity": [identity] * n,
        "view": views,
    }


def _mode(states: list[str]) -> str:
    frac = {s: states.count(s) / max(1, len(states)) for s in STATES}
    if frac["speak"] >= 0.15 and frac["listen"] >= 0.15:
        return "conversation"
    return max(frac, key=frac.get)


def _write_clip(work: VideoWork, clip: ClipPlan, cfg: PrepConfig, root: Path) -> dict | None:
    src, fps = work.source, cfg.clips.fps
    t = clip.track
    idx = _resample_idx(t.n, src.fps, fps)
    identity = _identity(src.id, clip.person)
    fields = label_fields(clip, idx, identity, cfg)
    sr = src.sample_rate
    a0 = int(round(t.start / src.fps * sr))
    n_audio = int(round(len(idx) / fps * sr))
    mix = src.audio[a0 : a0 + n_audio]
    mix = np.pad(mix, (0, n_audio - len(mix)))
    chans = None if src.channels is None else src.channels[:, a0 : a0 + n_audio]
    if chans is not None and chans.shape[1] < n_audio:
        chans = np.pad(chans, ((0, 0), (0, n_audio - chans.shape[1])))
    speak, listen, method = audio_variants(mix, clip.codes[idx], fps, sr, chans)
    speech = clip.speech[idx]
    rms_db = float(10 * np.log10(np.mean(mix.astype(np.float64) ** 2) + 1e-12))
    traits = "A person"
    dense, sentences, semantic = caption_and_verify(fields, speech, rms_db, traits, cfg.semantics)
    clip.semantic = semantic
    if semantic == "Unknown" and cfg.semantics.drop_unknown:
        clip.verdict = "unknown_semantics"
        return None
    box = crop_box(t.boxes, src.frames.shape[1:3], cfg.clips.crop_scale)
    size = cfg.clips.resolution
    frames = np.stack([crop_resize(src.frames[t.start + i], box, size) for i in idx])
    same = [
        tr
        for s, trs in work.tracks.items()
        for tr in trs
        if work.person_of.get((s, tr.id)) == clip.person
    ] or [t]
    refs, ref_record = build_references(
        src.frames, t, same, size, cfg.clips.crop_scale, cfg.references
    )
    name = clip_name(src.id, clip)
    final = root / name
    tmp = root / f"{TMP_PREFIX}{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / CLIP_FILES.refs_dir).mkdir(parents=True)
    write_mp4(tmp / CLIP_FILES.video, frames, fps, mix, sr)
    for fname, audio in (
        (CLIP_FILES.speak, speak),
        (CLIP_FILES.listen, listen),
        (CLIP_FILES.mix, mix),
    ):
        sf.write(tmp / fname, np.clip(audio, -1, 1), sr, subtype="PCM_16")
    n = len(idx)
    dump = lambda p, o: (tmp / p).write_text(json.dumps(o, separators=(",", ":")))
    dump(
        CLIP_FILES.labels, {"schema": SCHEMA_VERSION, "fps": fps, "num_frames": n, "fields": fields}
    )
    dump(CLIP_FILES.captions, {"schema": SCHEMA_VERSION, "dense": dense, "sentences": sentences})
    states = fields["state"]
    meta = {
        "schema": SCHEMA_VERSION,
        "spec": {
            "pipeline": "lpm.data.prep",
            "detector": cfg.detect.backend,
            "vad": cfg.labels.vad,
        },
        "performer_seed": identity,
        "partner_seed": -1,
        "split": cfg.clips.split,
        "mode": _mode(states),
        "num_frames": n,
        "fps": fps,
        "resolution": size,
        "sample_rate": sr,
        "speech_backend": "source",
        "seconds": round(n / fps, 4),
        "voices": {},
        "script": [],
        "events": [],
        "source": {
            "path": str(src.path),
            "id": src.id,
            "shot": clip.shot,
            "track": t.id,
            "person": clip.person,
            "start_frame": t.start,
            "end_frame": t.end,
            "source_fps": src.fps,
            "crop_box": list(box),
            "face_box_median": [round(float(v), 2) for v in np.median(t.boxes, 0)],
        },
        "semantic": semantic,
        "audio_variants": method,
        "references": ref_record,
        "measured_fields": list(MEASURED),
        **clip.extra,
    }
    dump(CLIP_FILES.meta, meta)
    for rname, img in refs.items():
        write_png(tmp / CLIP_FILES.refs_dir / f"{rname}.png", img)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return {
        "schema": SCHEMA_VERSION,
        "dir": f"clips/{name}",
        "performer_seed": identity,
        "partner_seed": -1,
        "split": cfg.clips.split,
        "mode": meta["mode"],
        "num_frames": n,
        "fps": fps,
        "resolution": size,
        "seconds": meta["seconds"],
        "sample_rate": sr,
        "speech_backend": "source",
        "state_fraction": {s: round(states.count(s) / n, 4) for s in STATES},
        "caption": dense[0]["text"] if dense else "",
        "source": src.id,
        "semantic": semantic,
        "tags": clip_tags(fields, listen, sr),
    }


def clip_tags(fields: dict, listen: np.ndarray, sr: int) -> dict:
    """Emotion / energy / motion tags used by listener rebalancing."""
    yaw = np.asarray(fields["head_yaw"], float)
    roll = np.asarray(fields["head_roll"], float)
    motion = float(np.std(np.diff(yaw)) + np.std(np.diff(roll))) if len(yaw) > 1 else 0.0
    energy = float(10 * np.log10(np.mean(listen.astype(np.float64) ** 2) + 1e-12))
    mouth = np.asarray(fields["mouth_open"], float)
    emotion = float(np.std(mouth))
    return {"motion": round(motion, 4), "energy_db": round(energy, 2), "emotion": round(emotion, 4)}


def op_audio_semantics_refs_write(work: VideoWork, cfg: PrepConfig, out: Path | None) -> None:
    """Audio variants, captions/verifier and references per kept clip; write when asked."""
    if out is None or ORDER.index(cfg.until) < ORDER.index("write"):
        return
    root = Path(out) / "clips"
    root.mkdir(parents=True, exist_ok=True)
    for clip in work.clips:
        if clip.verdict != "keep":
            continue
        entry = _write_clip(work, clip, cfg, root)
        if entry is not None:
            work.entries.append(entry)
    verified = [c for c in work.clips if c.verdict == "keep"]
    _count(work, "verified", len(verified), sum(c.track.n for c in verified))
    work.funnel["written"] = [len(work.entries), round(sum(e["seconds"] for e in work.entries), 3)]
