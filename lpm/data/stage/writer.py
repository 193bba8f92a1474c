"""Clip files and resumable dataset builds.

`write_clip` lays one `StageClip` out as a directory (see `schema.ClipFiles`). `build_dataset`
writes N clips (or raw scenes) with a JSONL manifest: each item is written into a temporary
directory, renamed into place atomically, and only then appended to the manifest, so a killed run
never leaves a half-written item in the manifest and a rerun continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf
from tqdm import tqdm

from lpm.data.stage.clip import StageClip, clip_spec_for, render_clip
from lpm.data.stage.schema import (
    CLIP_FILES,
    DATASET_CONFIG_NAME,
    DEFAULT_FPS,
    DEFAULT_SAMPLE_RATE,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    SPLITS,
    STATES,
)
from lpm.data.stage.speech import BACKENDS, resolve_backend
from lpm.media import write_mp4

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG."""
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def write_clip(clip: StageClip, clip_dir: Path) -> None:
    """Write every file of one clip into `clip_dir` (created; must not hold another clip)."""
    clip_dir = Path(clip_dir)
    (clip_dir / CLIP_FILES.refs_dir).mkdir(parents=True, exist_ok=True)
    sr = clip.spec.sample_rate
    write_mp4(clip_dir / CLIP_FILES.video, clip.frames, clip.spec.fps, clip.mix_audio, sr)
    for name, audio in (
        (CLIP_FILES.speak, clip.speak_audio),
        (CLIP_FILES.listen, clip.listen_audio),
        (CLIP_FILES.mix, clip.mix_audio),
    ):
        sf.write(clip_dir / name, audio, sr, subtype="PCM_16")
    _write_json(
        clip_dir / CLIP_FILES.labels,
        {
            "schema": SCHEMA_VERSION,
            "fps": clip.spec.fps,
            "num_frames": int(len(clip.frames)),
            "fields": clip.labels,
        },
    )
    _write_json(
        clip_dir / CLIP_FILES.captions,
        {
            "schema": SCHEMA_VERSION,
            "dense": [asdict(c) for c in clip.dense_captions],
            "sentences": [asdict(c) for c in clip.sentence_captions],
            "cues": [asdict(c) for c in clip.cue_captions],
        },
    )
    _write_json(clip_dir / CLIP_FILES.meta, clip.meta())
    for name, img in clip.references.items():
        write_png(clip_dir / CLIP_FILES.refs_dir / f"{name}.png", img)


@dataclass(kw_only=True)
class StageDatasetConfig:
    """How to build a Stage dataset directory."""

    out: Path
    """Output directory (created; an existing one is resumed)."""
    clips: int
    """Number of clips (or raw scenes) to have in the manifest."""
    seconds: float = 5.0
    """Clip length (seconds); raw scenes use it as their length too."""
    resolution: int = 128
    """Frame height and width (pixels, even, >= 32)."""
    seed: int = 0
    """Dataset seed: the same seed gives the same clips."""
    fps: int = DEFAULT_FPS
    """Frames per second."""
    split: str = "train"
    """Identity split the characters are drawn from: `train` or `heldout`."""
    backend: str = "auto"
    """Speech backend: `auto`, `espeak` or `formant`."""
    raw: bool = False
    """Write raw multi-person footage with ground truth instead of clean clips."""
    sample_rate: int = DEFAULT_SAMPLE_RATE
    """Audio sample rate (Hz)."""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.clips < 1:
            raise ValueError(f"clips must be >= 1, got {self.clips}")
        if not (0.5 <= self.seconds <= 600):
            raise ValueError(f"seconds must be between 0.5 and 600, got {self.seconds}")
        if self.resolution < 32 or self.resolution % 2:
            raise ValueError(f"resolution must be an even number >= 32, got {self.resolution}")
        if not (1 <= self.fps <= 120):
            raise ValueError(f"fps must be between 1 and 120, got {self.fps}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")

    def identity(self) -> dict:
        """The fields that must match when a run resumes in an existing directory."""
        d = asdict(self)
        d.pop("out")
        d.pop("clips")
        return d


def read_manifest(out: Path) -> list[dict]:
    """Complete manifest entries of a dataset directory (a torn last line is ignored)."""
    path = Path(out) / MANIFEST_NAME
    if not path.exists():
        return []
    entries = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            entries.append(json.loads(line))
    return entries


def _repair_manifest(path: Path) -> None:
    """Drop a torn trailing line left by a run killed while appending."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])


def _append_manifest(path: Path, entry: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _prepare(cfg: StageDatasetConfig) -> None:
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg_path = cfg.out / DATASET_CONFIG_NAME
    wanted = {"schema": SCHEMA_VERSION, **cfg.identity()}
    if cfg_path.exists():
        have = json.loads(cfg_path.read_text())
        if have != wanted:
            diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
            raise ValueError(
                f"{cfg.out} holds a dataset built with different settings "
                f"({', '.join(diff)}); use a new --out directory or the same settings"
            )
    else:
        cfg_path.write_text(json.dumps(wanted, indent=2))
    _repair_manifest(cfg.out / MANIFEST_NAME)


def _clip_item(cfg: StageDatasetConfig, index: int, tmp: Path) -> dict:
    spec = clip_spec_for(
        cfg.seed,
        index,
        seconds=cfg.seconds,
        size=cfg.resolution,
        fps=cfg.fps,
        split=cfg.split,
        backend=cfg.backend,
        sample_rate=cfg.sample_rate,
    )
    clip = render_clip(spec)
    write_clip(clip, tmp)
    states = clip.labels["state"]
    return {
        "performer_seed": spec.performer_seed,
        "partner_seed": spec.partner_seed,
        "split": clip.performer.split,
        "mode": spec.mode,
        "num_frames": len(clip.frames),
        "fps": spec.fps,
        "resolution": spec.size,
        "seconds": spec.seconds,
        "sample_rate": spec.sample_rate,
        "speech_backend": clip.backend,
        "state_fraction": {s: round(states.count(s) / len(states), 4) for s in STATES},
        "caption": clip.dense_captions[0].text if clip.dense_captions else "",
    }


def build_dataset(cfg: StageDatasetConfig, progress: bool = True) -> list[dict]:
    """Write (or finish) a Stage dataset; returns the complete manifest.

    Item `i` lives in `clips/NNNNNN/` (or `scenes/NNNNNN/` in raw mode) and is determined by
    (`cfg.seed`, `i`) alone, so an interrupted run resumed later gives the same dataset.
    """
    if cfg.backend != "auto":
        resolve_backend(cfg.backend)
    _prepare(cfg)
    kind = "scenes" if cfg.raw else "clips"
    root = cfg.out / kind
    root.mkdir(exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    manifest = cfg.out / MANIFEST_NAME
    done = {int(e["index"]) for e in read_manifest(cfg.out)}
    make: Callable[[StageDatasetConfig, int, Path], dict]
    if cfg.raw:
        from lpm.data.stage.raw import raw_item

        make = raw_item
    else:
        make = _clip_item
    bar = tqdm(
        total=cfg.clips,
        initial=len(done & set(range(cfg.clips))),
        disable=not progress,
        desc=f"stage {kind}",
        unit=kind[:-1],
    )
    try:
        for i in range(cfg.clips):
            if i in done:
                continue
            final = root / f"{i:06d}"
            if final.exists():  # renamed but never recorded: the run died in between
                shutil.rmtree(final)
            tmp = root / f"{_TMP_PREFIX}{i:06d}"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            entry = make(cfg, i, tmp)
            os.replace(tmp, final)
            _append_manifest(
                manifest, {"schema": SCHEMA_VERSION, "index": i, "dir": f"{kind}/{i:06d}", **entry}
            )
            bar.update(1)
    finally:
        bar.close()
    log.info("stage dataset at %s: %d %s", cfg.out, cfg.clips, kind)
    return read_manifest(cfg.out)
