"""Reading source videos defensively: every way a file can be bad becomes a `BadInput` reason.

A `Source` holds the decoded frames (downscaled to `InputConfig.max_side`), the frame rate and
the audio resampled to 16 kHz, both the mono mix and the original channels when there are
several (speaker-separated channels are used for the audio variants).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import av
import cv2
import numpy as np
from scipy.signal import resample_poly

from lpm.data.prep.config import InputConfig

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
"""File name endings treated as videos when the input is a directory."""


class BadInput(Exception):
    """A source that cannot be processed; `reason` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(kw_only=True)
class Source:
    """One decoded source video."""

    id: str
    """Stable identifier (file stem + a hash of the absolute path)."""
    path: Path
    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB, downscaled so the longer side is at most `max_side`."""
    fps: float
    """Frames per second."""
    audio: np.ndarray | None
    """(N,) float32 mono mix at `sample_rate`, or None when the file has no audio track."""
    channels: np.ndarray | None
    """(C, N) float32 original channels when C >= 2, else None."""
    sample_rate: int
    """Audio rate (Hz)."""
    source_size: tuple[int, int]
    """(width, height) of the original video in pixels."""

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps


def source_id(path: Path) -> str:
    """`<stem>-<8 hex>`: readable and unique per absolute path."""
    digest = hashlib.blake2b(str(Path(path).resolve()).encode(), digest_size=4).hexdigest()
    return f"{Path(path).stem}-{digest}"


def _open(path: Path):
    if not path.is_file():
        raise BadInput("missing", f"{path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise BadInput("empty_file", f"{path} is zero bytes")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise BadInput("unreadable", f"{path} is not a readable video ({err})") from None


def _resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return x.astype(np.float32)
    g = gcd(sr_in, sr_out)
    return resample_poly(x, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


def _decode_audio(container, stream, sr_out: int) -> np.ndarray:
    """(C, N) float32 at `sr_out`."""
    chunks = []
    for frame in container.decode(stream):
        a = frame.to_ndarray()
        if a.dtype.kind == "i":
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
        a = np.asarray(a, np.float32)
        n_ch = len(frame.layout.channels)
        a = a.reshape(n_ch, -1) if frame.format.is_planar else a.reshape(-1, n_ch).T
        chunks.append(a)
    if not chunks:
        return np.zeros((1, 0), np.float32)
    pcm = np.concatenate(chunks, axis=1)
    return _resample(pcm, int(stream.rate or sr_out), sr_out)


def load_source(path: str | Path, cfg: InputConfig | None = None) -> Source:
    """Decode one video file.

    Raises:
        BadInput: missing / empty / unreadable file, no video stream, no frames, too many
            pixels per frame or too long.
    """
    cfg = cfg or InputConfig()
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise BadInput("no_video", f"{path} has no video stream")
        vs = container.streams.video[0]
        w, h = int(vs.codec_context.width or 0), int(vs.codec_context.height or 0)
        if w <= 0 or h <= 0:
            raise BadInput("unreadable", f"{path} reports a {w}x{h} picture")
        if w * h > cfg.max_source_pixels:
            raise BadInput(
                "huge_resolution",
                f"{path} is {w}x{h}, above input.max_source_pixels={cfg.max_source_pixels}",
            )
        fps = float(vs.average_rate or vs.guessed_rate or 0)
        if not fps > 0:
            raise BadInput("unreadable", f"{path} has no frame rate")
        dur = float(vs.duration * vs.time_base) if vs.duration and vs.time_base else 0.0
        if dur > cfg.max_seconds:
            raise BadInput("too_long", f"{path} lasts {dur:.0f} s > input.max_seconds")
        scale = min(1.0, cfg.max_side / max(w, h))
        tw, th = max(2, int(round(w * scale / 2)) * 2), max(2, int(round(h * scale / 2)) * 2)
        frames = []
        try:
            for frame in container.decode(vs):
                frames.append(frame.to_ndarray(format="rgb24", width=tw, height=th))
                if len(frames) > cfg.max_seconds * fps + 1:
                    raise BadInput("too_long", f"{path} is longer than input.max_seconds")
        except av.error.FFmpegError as err:
            if not frames:
                raise BadInput("unreadable", f"{path}: {err}") from None
        if not frames:
            raise BadInput("no_frames", f"{path} holds no decodable frames")
        audio = channels = None
        if container.streams.audio:
            container.seek(0)
            try:
                pcm = _decode_audio(container, container.streams.audio[0], cfg.sample_rate)
            except av.error.FFmpegError:
                pcm = np.zeros((1, 0), np.float32)
            if pcm.shape[1] > 0:
                audio = pcm.mean(axis=0).astype(np.float32)
                channels = pcm if pcm.shape[0] >= 2 else None
    n_audio = int(round(len(frames) / fps * cfg.sample_rate))
    if audio is not None:  # pad / trim to the video's length
        audio = _fit(audio, n_audio)
        channels = None if channels is None else np.stack([_fit(c, n_audio) for c in channels])
    return Source(
        id=source_id(path),
        path=path,
        frames=np.stack(frames),
        fps=fps,
        audio=audio,
        channels=channels,
        sample_rate=cfg.sample_rate,
        source_size=(w, h),
    )


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def list_inputs(input_path: str | Path) -> list[Path]:
    """Video files of a directory (recursively), a manifest's entries, or one file.

    A manifest is a `.jsonl` file whose lines carry `dir` (a Stage raw scene directory holding
    `video.mp4`) or `path` (a video file), relative to the manifest's directory.
    """
    import json

    p = Path(input_path)
    if p.is_dir():
        manifest = p / "manifest.jsonl"
        if manifest.is_file():
            return list_inputs(manifest)
        found = sorted(
            q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in VIDEO_SUFFIXES
        )
        if not found:
            raise FileNotFoundError(
                f"--input {p} holds no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                "and no manifest.jsonl"
            )
        return found
    if p.suffix == ".jsonl":
        out = []
        for line in p.read_text().splitlines():
            if not line.strip():
                continue
            e = json.loads(line)
            if "path" in e:
                out.append((p.parent / e["path"]).resolve())
            elif "dir" in e:
                out.append((p.parent / e["dir"] / "video.mp4").resolve())
        return out
    if p.exists():
        return [p]
    raise FileNotFoundError(f"--input {p} is neither a directory, a manifest nor a video file")


def crop_resize(frame: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop `box` (x0, y0, x1, y1 pixels, inside the frame) and resize to `size` square."""
    x0, y0, x1, y1 = box
    crop = frame[y0:y1, x0:x1]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)
