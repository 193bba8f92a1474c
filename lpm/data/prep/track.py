"""Stage 3, tracking and cropping: face tracks through a shot, one fixed crop box per clip.

Input: per-frame `Face` lists of one shot. Output: `Track`s, each a run of consecutive frames
(absolute source frame indices) with a box per frame; frames the detector missed inside a
gap of at most `max_gap_frames` are interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpm.data.prep.config import DetectConfig
from lpm.data.prep.detect import Face


@dataclass(kw_only=True)
class Track:
    """One person through consecutive frames [start, start + n)."""

    id: int
    start: int
    """First source frame."""
    boxes: np.ndarray
    """(n, 4) float face boxes x0, y0, x1, y1 (pixels)."""
    mouth: np.ndarray
    """(n,) mouth opening (see `Face.mouth`), interpolated over misses."""
    yaw: np.ndarray
    """(n,) head yaw (degrees)."""
    roll: np.ndarray
    """(n,) head roll (degrees)."""
    detected: np.ndarray
    """(n,) bool: a detection (not an interpolation) backs the frame."""
    feature: np.ndarray | None = None
    """Mean identity descriptor of the track."""

    @property
    def n(self) -> int:
        return int(len(self.boxes))

    @property
    def end(self) -> int:
        """One past the last source frame."""
        return self.start + self.n

    def slice(self, a: int, b: int) -> Track:
        """The part covering source frames [a, b)."""
        i, j = a - self.start, b - self.start
        return Track(
            id=self.id,
            start=a,
            boxes=self.boxes[i:j],
            mouth=self.mouth[i:j],
            yaw=self.yaw[i:j],
            roll=self.roll[i:j],
            detected=self.detected[i:j],
            feature=self.feature,
        )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0, y0, x1, y1 boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _fill(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Linear interpolation of x over frames where `ok` is False (edges held)."""
    x = np.asarray(x, np.float64).copy()
    good = ok & np.isfinite(x)
    if not good.any():
        return np.zeros_like(x)
    idx = np.arange(len(x))
    return np.interp(idx, idx[good], x[good])


def track_shot(faces: list[list[Face]], start: int, cfg: DetectConfig) -> list[Track]:
    """Greedy IoU tracking through one shot.

    Args:
        faces: per frame of the shot, the faces found.
        start: source frame index of the shot's first frame.
    """
    open_: list[dict] = []
    done: list[dict] = []
    for t, frame_faces in enumerate(faces):
        unmatched = list(range(len(frame_faces)))
        pairs = []
        for k, tr in enumerate(open_):
            for j in unmatched:
                s = iou(tr["last"], frame_faces[j].box)
                if s >= cfg.iou_match:
                    pairs.append((s, k, j))
        used_t, used_f = set(), set()
        for _, k, j in sorted(pairs, reverse=True):
            if k in used_t or j in used_f:
                continue
            used_t.add(k)
            used_f.add(j)
            open_[k]["hits"][t] = frame_faces[j]
            open_[k]["last"] = frame_faces[j].box
            open_[k]["seen"] = t
        for j in range(len(frame_faces)):
            if j not in used_f:
                open_.append({"hits": {t: frame_faces[j]}, "last": frame_faces[j].box, "seen": t})
        still = []
        for tr in open_:
            (still if t - tr["seen"] <= cfg.max_gap_frames else done).append(tr)
        open_ = still
    done.extend(open_)
    tracks = []
    for k, tr in enumerate(sorted(done, key=lambda d: min(d["hits"]))):
        hits = tr["hits"]
        t0, t1 = min(hits), max(hits) + 1
        n = t1 - t0
        ok = np.zeros(n, bool)
        boxes = np.zeros((n, 4))
        mouth, yaw, roll = (np.full(n, np.nan) for _ in range(3))
        feats = []
        for t, f in hits.items():
            ok[t - t0] = True
            boxes[t - t0] = f.box
            mouth[t - t0], yaw[t - t0], roll[t - t0] = f.mouth, f.yaw, f.roll
            if f.feature is not None:
                feats.append(f.feature)
        tracks.append(
            Track(
                id=k,
                start=start + t0,
                boxes=np.stack([_fill(boxes[:, c], ok) for c in range(4)], 1),
                mouth=_fill(mouth, ok),
                yaw=_fill(yaw, ok),
                roll=_fill(roll, ok),
                detected=ok,
                feature=np.mean(feats, axis=0) if feats else None,
            )
        )
    return tracks


def people_in_shot(tracks: list[Track], shot_len: int, cfg: DetectConfig) -> list[Track]:
    """The tracks that are present for at least `presence_frac` of the shot."""
    return [t for t in tracks if t.detected.sum() >= cfg.presence_frac * shot_len]


def crop_box(
    boxes: np.ndarray, frame_hw: tuple[int, int], scale: float
) -> tuple[int, int, int, int]:
    """One square crop for a clip: `scale` median face widths, head in the upper half.

    Returns:
        x0, y0, x1, y1 (pixels) inside the frame; the side is even.
    """
    h, w = frame_hw
    fw = float(np.median(boxes[:, 2] - boxes[:, 0]))
    cx = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
    cy = float(np.median((boxes[:, 1] + boxes[:, 3]) / 2))
    side = int(min(min(h, w), max(8.0, scale * fw)))
    side -= side % 2
    cy += 0.1 * side
    x0 = int(round(np.clip(cx - side / 2, 0, w - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, h - side)))
    return x0, y0, x0 + side, y0 + side
