"""Video and image files: H.264 + AAC mp4 writing (atomic), image reading.

Frames are (T, H, W, 3) uint8 RGB; audio is (N,) float32 in [-1, 1] at ``sample_rate`` Hz.
"""

from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


def check_mp4_path(path: str | Path) -> Path:
    """``path`` as a place an mp4 can be written to, checked before any work is spent on it.

    Raises:
        ValueError: the path is a directory, does not end in ``.mp4``, or sits under a file or a
            directory this process cannot write to.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory: name the output file, e.g. {path / 'out.mp4'}")
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"{path}: the output is an H.264 + AAC mp4, so name it NAME.mp4")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: {parent} is not writable")
    return path


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
) -> Path:
    """Write H.264 (yuv420p) video with an optional mono AAC track, atomically.

    The file is written beside ``path`` under a temporary name and renamed into place, so an
    interrupted write never leaves a half-written mp4 at ``path``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0:
        raise ValueError("cannot write a video with no frames")
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {w}x{h}")
    path = check_mp4_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp.mp4")
    try:
        _encode(tmp, frames, fps, audio, sample_rate, crf)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _encode(path: Path, frames, fps: int, audio, sample_rate: int, crf: int) -> None:
    import av  # imported where video is written or read: streaming to a client needs no FFmpeg

    _, h, w, _ = frames.shape
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.options = {"crf": str(crf), "preset": "veryfast"}
        video.codec_context.time_base = Fraction(1, fps)
        astream = (
            container.add_stream("aac", rate=sample_rate, layout="mono")
            if audio is not None
            else None
        )
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode())
        if astream is None:
            return
        pcm = np.clip(np.asarray(audio, np.float32), -1.0, 1.0)
        block = 1024
        for k, start in enumerate(range(0, len(pcm), block)):
            af = av.AudioFrame.from_ndarray(
                pcm[None, start : start + block], format="flt", layout="mono"
            )
            af.sample_rate = sample_rate
            af.pts = k * block
            af.time_base = Fraction(1, sample_rate)
            container.mux(astream.encode(af))
        container.mux(astream.encode())


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames (T, H, W, 3) uint8 RGB of a video file and its frame rate."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.error.FFmpegError as err:
        raise ValueError(f"{path} is not a readable video: {err}") from None
    if not frames:
        raise ValueError(f"{path} holds no decodable frames")
    return np.stack(frames), fps


def read_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path} is not a readable image (PNG, JPEG, ...)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def fit_image(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize and centre-crop an RGB image to exactly ``height`` x ``width``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got {rgb.shape}")
    h, w = rgb.shape[:2]
    scale = max(height / h, width / w)
    resized = cv2.resize(
        rgb,
        (max(width, round(w * scale)), max(height, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    top = (resized.shape[0] - height) // 2
    left = (resized.shape[1] - width) // 2
    return np.ascontiguousarray(resized[top : top + height, left : left + width])
