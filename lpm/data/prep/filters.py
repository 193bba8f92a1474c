"""Stage 2, filters: each measures one defect of a shot and names it when over its threshold.

Input: a shot's frames (T, H, W, 3) uint8 RGB (sampled), its person tracks and the source's
audio. Output: `None` (keep) or the reason, with the measurement in `scores`. Whole-picture
defects are checked first (blur, flicker), then subtitles and picture-in-picture, then people
(none / too many), then logos and colour cast (after people: in an empty, motionless shot every
corner is static and a flat wall is all one colour, so `no_person` is the reason there), and
framing. Lip sync is checked per
track in the labelling stage (`out_of_sync`); a source without an audio track is `no_audio`.

Measurements run at an analysis scale where the shorter side is 128 pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from lpm.data.prep.config import DetectConfig, FilterConfig
from lpm.data.prep.track import Track, people_in_shot

REASONS = (
    "too_short",
    "no_audio",
    "blur",
    "flicker",
    "colour_cast",
    "subtitles",
    "pip",
    "logo",
    "no_person",
    "too_many_people",
    "incomplete_framing",
    "face_too_small",
    "out_of_sync",
    "inconsistent_labels",
    "unknown_semantics",
)
"""Every reason a shot, track or clip can be dropped for."""

_ANALYSIS = 128


def _analysis(frames: np.ndarray, max_samples: int = 24) -> tuple[np.ndarray, float]:
    """Up to `max_samples` evenly spaced frames at the analysis scale, and the scale factor."""
    idx = np.unique(np.linspace(0, len(frames) - 1, min(max_samples, len(frames))).astype(int))
    h, w = frames.shape[1:3]
    k = _ANALYSIS / min(h, w)
    size = (max(8, int(round(w * k))), max(8, int(round(h * k))))
    return np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in idx]), k


def sharpness(small: np.ndarray) -> float:
    """Edge steepness 0..1: luma gradient over local contrast at the contrasted pixels.

    A sharp step rises within about a pixel (high), a blurred one over several (low); flat
    pictures with no contrasted pixel read 1 (nothing to call blurred).
    """
    vals = []
    kernel = np.ones((9, 9), np.uint8)
    for f in small:
        g = cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.sqrt(gx * gx + gy * gy) / 4.0
        contrast = cv2.dilate(g, kernel) - cv2.erode(g, kernel)
        edge = contrast > 0.12
        if edge.sum() < 20:
            continue
        ratio = grad[edge] / contrast[edge]
        vals.append(float(np.percentile(ratio, 90)))
    return float(np.median(vals)) if vals else 1.0


def flicker(frames: np.ndarray) -> float:
    """Std of the frame-mean luma (0..1) after removing its 5-frame moving average."""
    if len(frames) < 6:
        return 0.0
    step = max(1, min(frames.shape[1:3]) // 64)
    luma = frames[:, ::step, ::step].astype(np.float32).mean(axis=(1, 2, 3)) / 255.0
    trend = np.convolve(np.pad(luma, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    return float(np.std(luma - trend))


def colour_cast(small: np.ndarray) -> float:
    """Mean chroma offset from grey over the chroma spread (CIE Lab a*, b*)."""
    lab = np.concatenate([cv2.cvtColor(f, cv2.COLOR_RGB2LAB).reshape(-1, 3) for f in small]).astype(
        np.float32
    )
    a, b = lab[:, 1] - 128.0, lab[:, 2] - 128.0
    d = float(np.hypot(a.mean(), b.mean()))
    m = float(np.hypot(a.std(), b.std()))
    return d / (m + 1.0)


def subtitle_score(small: np.ndarray) -> float:
    """Fraction of outlined-text pixels (white next to black) in the bottom 22% band."""
    vals = []
    for f in small:
        band = f[int(f.shape[0] * 0.78) :]
        lo, hi = band.min(axis=2), band.max(axis=2)
        white = lo >= 200
        dark = cv2.dilate((hi <= 60).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        vals.append(float((white & dark).mean()))
    return float(np.percentile(vals, 75))


def static_edges(small: np.ndarray) -> np.ndarray:
    """(H, W) bool: strong edges present in at least 90% of the sampled frames."""
    acc = np.zeros(small.shape[1:3], np.float32)
    for f in small:
        acc += cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 60, 160) > 0
    return acc >= 0.9 * len(small)


def _person_mask(shape: tuple[int, int], tracks: list[Track], k: float) -> np.ndarray:
    """Pixels near any tracked face (and the body below it) at the analysis scale."""
    mask = np.zeros(shape, bool)
    for t in tracks:
        x0, y0, x1, y1 = np.median(t.boxes, axis=0) * k
        w = x1 - x0
        mask[
            max(0, int(y0 - 0.3 * w)) : shape[0], max(0, int(x0 - 0.25 * w)) : int(x1 + 0.25 * w)
        ] = True
    return mask


def logo_score(edges: np.ndarray, person: np.ndarray) -> float:
    """Static-edge density of the busiest corner minus the median corner (0..1)."""
    h, w = edges.shape
    ch, cw = max(4, h // 5), max(4, w // 5)
    dens = []
    for ys, xs in (
        (slice(0, ch), slice(0, cw)),
        (slice(0, ch), slice(w - cw, w)),
        (slice(h - ch, h), slice(0, cw)),
        (slice(h - ch, h), slice(w - cw, w)),
    ):
        free = ~person[ys, xs]
        if free.mean() < 0.5:
            continue
        dens.append(float(edges[ys, xs][free].mean()))
    if len(dens) < 2:
        return 0.0
    return max(dens) - float(np.median(dens))


def _runs(line: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[a, b) runs of True at least `min_len` long."""
    d = np.diff(np.r_[0, line.astype(np.int8), 0])
    starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True) if b - a >= min_len]


def pip_score(edges: np.ndarray, cfg: FilterConfig, small: np.ndarray | None = None) -> float:
    """Area fraction of the largest inset picture (0: none).

    An inset is a static axis-aligned rectangle inside the frame (pairs of long static
    horizontal edge runs with the same x extent, joined at both ends by static vertical edges)
    whose inside changes over the shot (a window or a picture on the wall does not).
    `small` are the sampled frames the edges came from (the change check is skipped without).
    """
    h, w = edges.shape
    img = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    min_len = max(6, int(np.sqrt(cfg.pip_min_area) * min(h, w)))
    rows = [(y, a, b) for y in range(2, h - 2) for a, b in _runs(img[y], min_len)]
    best = 0.0
    for i, (y1, a1, b1) in enumerate(rows):
        for y2, a2, b2 in rows[i + 1 :]:
            if y2 - y1 < min_len or abs(a1 - a2) > 3 or abs(b1 - b2) > 3:
                continue
            xa, xb = max(a1, a2), min(b1, b2) - 1
            if xa <= 1 or xb >= w - 2:
                continue
            bw, bh = xb - xa, y2 - y1
            area = bw * bh / float(h * w)
            if not (cfg.pip_min_area <= area <= cfg.pip_max_area) or max(bw, bh) > 2.5 * min(
                bw, bh
            ):
                continue
            left = img[y1 : y2 + 1, max(0, xa - 1) : xa + 2].any(axis=1).mean()
            right = img[y1 : y2 + 1, xb - 1 : xb + 2].any(axis=1).mean()
            if min(left, right) >= 0.9 and (small is None or _moves(small, xa, y1, xb, y2)):
                best = max(best, area)
    return best


def _moves(small: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> bool:
    """Whether the inside of a rectangle changes between the sampled frames."""
    inner = small[:, y0 + 2 : y1 - 1, x0 + 2 : x1 - 1].astype(np.float32)
    if inner.size == 0 or len(inner) < 2:
        return False
    return float(np.abs(np.diff(inner, axis=0)).mean()) > 0.5


def touches_border(t: Track, hw: tuple[int, int]) -> float:
    """Fraction of the track's frames whose face box reaches the frame border."""
    h, w = hw
    b = t.boxes
    cut = (b[:, 0] <= 0.5) | (b[:, 1] <= 0.5) | (b[:, 2] >= w - 0.5) | (b[:, 3] >= h - 0.5)
    return float(cut.mean())


def judge_shot(
    frames: np.ndarray,
    tracks: list[Track],
    has_audio: bool,
    fcfg: FilterConfig,
    dcfg: DetectConfig,
) -> tuple[str | None, dict, list[Track]]:
    """Run every shot filter in order.

    Returns:
        (reason or None, measurements, the person tracks to cut clips from).
    """
    scores: dict[str, float] = {}
    if not has_audio:
        return "no_audio", scores, []
    small, k = _analysis(frames)
    scores["sharpness"] = sharpness(small)
    if scores["sharpness"] < fcfg.min_sharpness:
        return "blur", scores, []
    scores["flicker"] = flicker(frames)
    if scores["flicker"] > fcfg.max_flicker:
        return "flicker", scores, []
    scores["subtitles"] = subtitle_score(small)
    if scores["subtitles"] > fcfg.max_subtitle_score:
        return "subtitles", scores, []
    edges = static_edges(small)
    scores["pip"] = pip_score(edges, fcfg, small)
    if scores["pip"] > 0:
        return "pip", scores, []
    people = people_in_shot(tracks, len(frames), dcfg)
    scores["people"] = float(len(people))
    if not people:
        return "no_person", scores, []
    if len(people) > fcfg.max_people:
        return "too_many_people", scores, []
    scores["logo"] = logo_score(edges, _person_mask(edges.shape, people, k))
    if scores["logo"] > fcfg.max_logo_score:
        return "logo", scores, []
    scores["colour_cast"] = colour_cast(small)
    if scores["colour_cast"] > fcfg.max_colour_cast:
        return "colour_cast", scores, []
    framed = [t for t in people if touches_border(t, frames.shape[1:3]) <= fcfg.max_cut_frac]
    if not framed:
        return "incomplete_framing", scores, []
    width = lambda t: float(np.median(t.boxes[:, 2] - t.boxes[:, 0]))
    scores["face_px"] = max(width(t) for t in framed)
    big = [t for t in framed if width(t) >= fcfg.min_face_px]
    if not big:
        return "face_too_small", scores, []
    return None, scores, big
