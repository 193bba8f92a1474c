"""Stage 7, references: global frames, body views and expressions for one clip.

Input: the source frames, the clip's track part and every track of the same person in the
source (same track outside the clip, or other shots matched by identity descriptor). Output:
RGB images under the Stage names (`global_0/1`, `view_{front,left,right,back}`,
`expr_{name}`) plus a record of which are observed and which are substitutes.

- Global references come from frames outside the clip only.
- Views: θ, the angle between body facing and the camera (180 = facing it), from the head yaw
  (`landmarks` pose: θ = 180 - |yaw|) or a pluggable body-pose backend (`module:callable`
  returning θ and the sign of x per frame, e.g. GVHMR + SLAM); front θ >= 155, back θ <= 45,
  left/right profile in between by the sign of x.
- Expressions: k-means over normalised face crops; centres closer than `expression_distance`
  merge. `expr_neutral` is the largest cluster; the others are written as
  `expr_cluster_<k>.png`. Sources with fewer than `min_expressions` distinct clusters are
  flagged (`expression_refs: false`) so training can skip their expression references.
"""

from __future__ import annotations

import importlib

import cv2
import numpy as np

from lpm.data.prep.config import ReferenceConfig
from lpm.data.prep.media import crop_resize
from lpm.data.prep.track import Track, crop_box
from lpm.data.stage.schema import EXPRESSIONS, VIEWS


def view_of(theta_deg: float, x_sign: float, cfg: ReferenceConfig) -> str:
    """The body view class of angle θ (degrees) and the facing's sign of x."""
    if theta_deg >= cfg.front_min_deg:
        return "front"
    if theta_deg <= cfg.back_max_deg:
        return "back"
    return "right" if x_sign > 0 else "left"


def _angles(tracks: list[Track], cfg: ReferenceConfig, frames: np.ndarray):
    if cfg.pose == "landmarks":
        yaw = np.concatenate([t.yaw for t in tracks])
        return 180.0 - np.abs(yaw), np.sign(yaw)
    mod, _, fn = cfg.pose.partition(":")
    backend = getattr(importlib.import_module(mod), fn)
    out = [backend(frames[t.start : t.end], t.boxes) for t in tracks]
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])


def _crop(frames: np.ndarray, t: Track, i: int, size: int, scale: float) -> np.ndarray:
    box = crop_box(t.boxes[i : i + 1], frames.shape[1:3], scale)
    return crop_resize(frames[t.start + i], box, size)


def _face_vec(frames: np.ndarray, t: Track, i: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v) for v in t.boxes[i])
    h, w = frames.shape[1:3]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return np.zeros(24 * 24, np.float32)
    g = cv2.cvtColor(frames[t.start + i, y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    g = cv2.resize(g, (24, 24), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    return (g - g.mean()).ravel()


def _kmeans(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    k = min(k, len(x))
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 30, 1e-4)
    cv2.setRNGSeed(seed)
    _, lab, centres = cv2.kmeans(x.astype(np.float32), k, None, crit, 3, cv2.KMEANS_PP_CENTERS)
    return lab.ravel(), centres


def expression_clusters(vecs: np.ndarray, cfg: ReferenceConfig) -> list[list[int]]:
    """Indices per distinct expression cluster, largest first (centres merged when close)."""
    if len(vecs) < 2:
        return [list(range(len(vecs)))]
    lab, centres = _kmeans(vecs, cfg.expression_clusters)
    groups: list[list[int]] = []
    reps: list[np.ndarray] = []
    for c in np.argsort(-np.bincount(lab, minlength=len(centres))):
        idx = list(np.nonzero(lab == c)[0])
        if not idx:
            continue
        for g, r in enumerate(reps):
            if np.mean(np.abs(centres[c] - r)) < cfg.expression_distance:
                groups[g].extend(idx)
                break
        else:
            groups.append(idx)
            reps.append(centres[c])
    return groups


def build_references(
    frames: np.ndarray,
    clip: Track,
    same_person: list[Track],
    size: int,
    scale: float,
    cfg: ReferenceConfig,
) -> tuple[dict[str, np.ndarray], dict]:
    """(images by Stage name, record) for one clip; `same_person` includes the clip's track."""
    pool = [(t, i) for t in same_person for i in range(t.n)]
    outside = [(t, i) for t, i in pool if not (clip.start <= t.start + i < clip.end)]
    inside = [(clip, i) for i in range(clip.n)]
    refs: dict[str, np.ndarray] = {}
    record: dict = {"global_outside": bool(outside)}
    src = outside or inside
    picks = [src[len(src) // 4], src[(3 * len(src)) // 4]] if len(src) > 1 else [src[0]] * 2
    for k, (t, i) in enumerate(picks):
        refs[f"global_{k}"] = _crop(frames, t, i, size, scale)
    theta, xs = _angles([t for t, _ in [(t, 0) for t in same_person]], cfg, frames)
    views = np.array([view_of(a, s, cfg) for a, s in zip(theta, xs, strict=True)])
    centre = {"front": 180.0, "back": 0.0, "left": 90.0, "right": 90.0}
    observed = {}
    for v in VIEWS:
        idx = np.nonzero(views == v)[0]
        if len(idx):
            j = int(idx[np.argmin(np.abs(theta[idx] - centre[v]))])
            t, i = pool[j]
            refs[f"view_{v}"] = _crop(frames, t, i, size, scale)
            observed[v] = True
        else:
            observed[v] = False
    fallback = next((refs[f"view_{v}"] for v in VIEWS if observed[v]), refs["global_0"])
    for v in VIEWS:
        refs.setdefault(f"view_{v}", fallback)
    record["views_observed"] = observed
    step = max(1, len(pool) // 200)
    sample = pool[::step]
    vecs = np.stack([_face_vec(frames, t, i) for t, i in sample])
    groups = expression_clusters(vecs, cfg)
    record["expression_clusters"] = len(groups)
    record["expression_refs"] = len(groups) >= cfg.min_expressions
    for g, idx in enumerate(groups):
        t, i = sample[idx[len(idx) // 2]]
        img = _crop(frames, t, i, size, scale)
        refs["expr_neutral" if g == 0 else f"expr_cluster_{g}"] = img
    for name in EXPRESSIONS[1:]:
        refs[f"expr_{name}"] = refs["expr_neutral"]
    record["expressions_observed"] = ["neutral"]
    return refs, record
