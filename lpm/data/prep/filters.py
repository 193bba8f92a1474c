"""Stage 2, filters: each measures one defect of a shot and names it when over its threshold.

Input: a shot's frames (T, H, W, 3) uint8 RGB (sampled), its person tracks and the source's
audio. Output: `None` (keep) or the reason, with the measurement in `scores`. Whole-picture
defects are checked first (blur, flicker), then the overlays (picture-in-picture, subtitles,
logo), then people (none / too many), colour cast (after people: a flat empty wall is all one
colour) and framing. Overlays come before people because they are read from the picture alone:
a face the detector misses must not turn a shot with a logo into `no_person`. Lip sync is
checked per track in the labelling stage (`out_of_sync`); a source without an audio track is
`no_audio`.

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


def static_edges(small: np.ndarray, jitter: int = 0) -> np.ndarray:
    """(H, W) bool: strong edges present in at least 90% of the sampled frames.

    With `jitter` > 0 an edge counts as present in a frame when it lies within that many pixels:
    under codec noise Canny puts the edge of a thin (1-2 px) line on either of its flanks from
    frame to frame, so that neither pixel alone reaches 90%, though the line never moves.
    """
    acc = np.zeros(small.shape[1:3], np.float32)
    kernel = np.ones((2 * jitter + 1, 2 * jitter + 1), np.uint8)
    for f in small:
        e = cv2.Canny(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), 60, 160)
        acc += (cv2.dilate(e, kernel) if jitter else e) > 0
    return acc >= 0.9 * len(small)


def _person_mask(shape: tuple[int, int], tracks: list[Track], k: float) -> np.ndarray:
    """Pixels of the tracked people at the analysis scale: each face box (widened for hair and
    ears) and the body below it, as wide as the shoulders (a face width on either side)."""
    mask = np.zeros(shape, bool)
    for t in tracks:
        x0, y0, x1, y1 = np.median(t.boxes, axis=0) * k
        w = x1 - x0
        top, chin = max(0, int(y0 - 0.3 * w)), int(np.ceil(y1))
        mask[top:chin, max(0, int(x0 - 0.15 * w)) : int(np.ceil(x1 + 0.15 * w))] = True
        mask[chin:, max(0, int(x0 - w)) : int(np.ceil(x1 + w))] = True
    return mask


def _from_border(edges: np.ndarray) -> np.ndarray:
    """(H, W) bool: edge pixels on straight lines that run in from the frame border (the
    edges of walls, stripes, door frames), followed from each border pixel along its row or
    column until the line stops."""
    out = np.zeros_like(edges)
    for e, o in ((edges, out), (edges.T, out.T)):  # rows, then columns (views of the same maps)
        for i in range(e.shape[0]):
            line = e[i]
            stop = np.flatnonzero(~line)
            if line[0]:
                o[i, : stop[0] if len(stop) else len(line)] = True
            if line[-1]:
                o[i, stop[-1] + 1 if len(stop) else 0 :] = True
    return out


def logo_score(edges: np.ndarray, person: np.ndarray, corner: float = 0.25) -> float:
    """How much one corner holds a mark the others do not (0..1).

    A logo is a compact static mark set inside a corner: a connected group of static edges
    (gaps of one pixel bridged) that lies wholly inside the corner box (`corner` of the width
    and height), off the frame border and off the people. Static scenery that runs out of the
    corner (a window, a shelf, a wall's pattern, the edges of a motionless empty room) and a
    person's clothes do not count; the few edges of a small repeated pattern are cancelled by
    taking the largest such mark of each corner, as a fraction of the corner box, minus the
    median corner's.
    """
    h, w = edges.shape
    ch, cw = max(4, int(round(h * corner))), max(4, int(round(w * corner)))
    edges = edges & ~_from_border(edges)
    joined = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8))
    n, label, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    pixels = np.bincount(label[edges], minlength=n)
    on_person = np.bincount(label[edges & person], minlength=n) > 0.5 * pixels
    marks = []
    for y0, x0 in ((0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw)):
        best = 0
        for c in range(1, n):
            cx, cy, cw_, ch_ = stats[c, :4]
            inside = x0 <= cx and cx + cw_ <= x0 + cw and y0 <= cy and cy + ch_ <= y0 + ch
            border = cx == 0 or cy == 0 or cx + cw_ == w or cy + ch_ == h
            if inside and not border and not on_person[c]:
                best = max(best, int(pixels[c]))
        marks.append(best / float(ch * cw))
    return max(marks) - float(np.median(marks))


def _runs(line: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """[a, b) runs of True at least `min_len` long."""
    d = np.diff(np.r_[0, line.astype(np.int8), 0])
    starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True) if b - a >= min_len]


def _side(img: np.ndarray, y1: int, y2: int, x: int, slack: int) -> int | None:
    """The column within `slack` of `x` nearest to it where a static vertical edge covers at
    least 90% of the rows [y1, y2], or None."""
    w = img.shape[1]
    for d in sorted(range(-slack, slack + 1), key=abs):
        c = x + d
        if 1 < c < w - 2 and img[y1 : y2 + 1, c - 1 : c + 2].any(axis=1).mean() >= 0.9:
            return c
    return None


def pip_score(
    edges: np.ndarray,
    cfg: FilterConfig,
    small: np.ndarray | None = None,
    framing: np.ndarray | None = None,
) -> float:
    """Area fraction of the largest inset picture (0: none).

    An inset is a static axis-aligned rectangle inside the frame (pairs of long static
    horizontal edge runs with the same x extent, joined at both ends by static vertical edges)
    whose inside changes over the shot (a window or a picture on the wall does not). The
    vertical sides are looked for a few pixels around the ends of the horizontal runs
    (`cfg.pip_side_slack`): where a thin border meets a similar colour the corner is weak and
    the runs stop short of it. `small` are the sampled frames the edges came from (the change
    check is skipped without). With `framing`, (N, 4) face boxes at the analysis scale, only
    rectangles that wholly contain one of them count.
    """
    h, w = edges.shape
    img = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    min_len = max(6, int(np.sqrt(cfg.pip_min_area) * min(h, w)))
    slack = int(round(cfg.pip_side_slack * min(h, w)))
    rows = [(y, a, b) for y in range(2, h - 2) for a, b in _runs(img[y], min_len)]
    best = 0.0
    for i, (y1, a1, b1) in enumerate(rows):
        for y2, a2, b2 in rows[i + 1 :]:
            if y2 - y1 < min_len or abs(a1 - a2) > 3 or abs(b1 - b2) > 3:
                continue
            xa, xb = (
                _side(img, y1, y2, max(a1, a2), slack),
                _side(img, y1, y2, min(b1, b2) - 1, slack),
            )
            if xa is None or xb is None:
                continue
            bw, bh = xb - xa, y2 - y1
            area = bw * bh / float(h * w)
            if area <= best or not (cfg.pip_min_area <= area <= cfg.pip_max_area):
                continue
            if bw <= 0 or max(bw, bh) > 2.5 * min(bw, bh):
                continue
            if framing is not None and not _frames_one(framing, xa, y1, xb, y2):
                continue
            if small is None or _moves(small, xa, y1, xb, y2):
                best = area
    return best


def inset_score(
    small: np.ndarray, edges: np.ndarray, faces: np.ndarray | None, cfg: FilterConfig
) -> float:
    """`pip_score` of sampled frames and their static edges; when that finds nothing, the
    same search on edges that hold within a pixel (`static_edges(jitter=1)`: a thin inset
    border flickers under codec noise), counting only rectangles that frame one of `faces`
    ((N, 4) tracked face boxes at the analysis scale), so that the rigid outline of a swaying
    body does not."""
    score = pip_score(edges, cfg, small)
    if score == 0 and faces is not None and len(faces):
        score = pip_score(static_edges(small, jitter=1), cfg, small, framing=faces)
    return score


def _frames_one(boxes: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> bool:
    """Whether one of the (N, 4) boxes lies wholly inside the rectangle."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    inside = (b[:, 0] >= x0) & (b[:, 1] >= y0) & (b[:, 2] <= x1) & (b[:, 3] <= y1)
    return bool(inside.any())


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
    fps: float,
) -> tuple[str | None, dict, list[Track]]:
    """Run every shot filter in order (`fps`: the frame rate of `frames`).

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
    people = people_in_shot(tracks, len(frames), dcfg)
    edges = static_edges(small)
    faces = np.stack([np.median(t.boxes, axis=0) * k for t in people]) if people else None
    scores["pip"] = inset_score(small, edges, faces, fcfg)
    windows = int(len(frames) // max(1.0, fcfg.pip_window_s * fps))
    if scores["pip"] == 0 and windows >= 2:
        # An inset shown for part of the shot (it comes in or goes) is static only there.
        cuts = np.linspace(0, len(frames), windows + 1).astype(int)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            part = _analysis(frames[a:b])[0]
            scores["pip"] = max(scores["pip"], inset_score(part, static_edges(part), faces, fcfg))
    if scores["pip"] > 0:
        return "pip", scores, []
    # After the inset: its border in the bottom band is white beside dark, like outlined text.
    scores["subtitles"] = subtitle_score(small)
    if scores["subtitles"] > fcfg.max_subtitle_score:
        return "subtitles", scores, []
    scores["logo"] = logo_score(edges, _person_mask(edges.shape, people, k), fcfg.logo_corner)
    if scores["logo"] > fcfg.max_logo_score:
        return "logo", scores, []
    scores["people"] = float(len(people))
    if not people:
        return "no_person", scores, []
    if len(people) > fcfg.max_people:
        return "too_many_people", scores, []
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
