"""Stage 1, shots: shot boundaries with PySceneDetect (headless), and the 3-second floor.

Input: (T, H, W, 3) uint8 RGB frames and their rate. Output: `ShotSpan`s that tile [0, T), each
with `verdict` `keep` or `too_short`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from lpm.data.prep.config import ShotConfig


@dataclass(kw_only=True)
class ShotSpan:
    """Frames [start, end) of one shot and what became of it."""

    index: int
    start: int
    end: int
    verdict: str = "keep"
    """`keep` or the reason the shot was dropped."""
    scores: dict = field(default_factory=dict)
    """Filter measurements (for the report)."""

    @property
    def length(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "start_frame": self.start,
            "end_frame": self.end,
            "verdict": self.verdict,
            "scores": {k: round(float(v), 5) for k, v in self.scores.items()},
        }


def content_scores(frames: np.ndarray, fps: float, ignore_bottom: float = 0.2) -> np.ndarray:
    """(T,) PySceneDetect content score of each frame against the previous one (0 for frame 0).

    The score is the mean absolute change of hue, saturation and luma (0..255); the bottom
    `ignore_bottom` of the frame is left out.
    """
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector

    det = ContentDetector(threshold=255.0, min_scene_len=1)
    h = frames.shape[1]
    keep = max(1, int(round(h * (1.0 - ignore_bottom))))
    out = np.zeros(len(frames), np.float32)
    for i, rgb in enumerate(frames):
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb[:keep]), cv2.COLOR_RGB2BGR)
        # the detector's own per-frame score; its thresholding is ours (isolated peaks)
        out[i] = det._calculate_frame_score(FrameTimecode(i, fps=float(fps)), bgr) or 0.0
    out[0] = 0.0
    return out


def detect_cuts(frames: np.ndarray, fps: float, cfg: ShotConfig | None = None) -> list[int]:
    """Frame indices where a new shot starts (0 excluded).

    A cut is a content-score peak: the local maximum over +-2 frames, at least
    `min_content_val`, and `cut_ratio` times the median score of the 12 frames around it (so
    fast motion, which raises every score, does not cut).
    """
    cfg = cfg or ShotConfig()
    sc = content_scores(frames, fps, cfg.ignore_bottom)
    cuts = []
    for i in range(1, len(sc)):
        around = np.r_[sc[max(1, i - 8) : max(1, i - 1)], sc[i + 2 : i + 9]]
        ref = float(np.median(around)) if len(around) else 0.0
        if (
            sc[i] >= cfg.min_content_val
            and sc[i] >= cfg.cut_ratio * max(ref, 0.5)
            and sc[i] == sc[max(1, i - 2) : i + 3].max()
        ):
            cuts.append(i)
    return cuts


def split_shots(frames: np.ndarray, fps: float, cfg: ShotConfig | None = None) -> list[ShotSpan]:
    """Shots tiling the video; those under `min_shot_seconds` get verdict `too_short`."""
    cfg = cfg or ShotConfig()
    bounds = [0, *detect_cuts(frames, fps, cfg), len(frames)]
    shots = []
    for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        shot = ShotSpan(index=k, start=a, end=b)
        if (b - a) < cfg.min_shot_seconds * fps - 1e-6:
            shot.verdict = "too_short"
        shots.append(shot)
    return shots
