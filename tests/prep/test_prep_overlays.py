"""Overlay filters on small synthetic shots: picture-in-picture and logos of the kinds that used
to slip through (a flickering inset border, an inset for part of a shot, an inset border in the
subtitle band, a logo where the face detector found nobody) and the scenery they must not take
for one (a window in a corner, an empty room, a patterned shirt)."""

from __future__ import annotations

import cv2
import numpy as np

from lpm.data.prep.config import DetectConfig, FilterConfig
from lpm.data.prep.filters import judge_shot
from lpm.data.prep.track import Track

FPS = 24.0
SIZE = 128
WALL = (211, 181, 94)


def _track(box: tuple[float, float, float, float], n: int) -> Track:
    z = np.zeros(n)
    boxes = np.tile(np.asarray(box, np.float64), (n, 1))
    return Track(id=0, start=0, boxes=boxes, mouth=z, yaw=z, roll=z, detected=np.ones(n, bool))


def _portrait(n: int, shirt: str = "plain") -> tuple[np.ndarray, Track]:
    """A talking head (face box 52 px) and static shoulders on a flat wall; the head sways."""
    frames = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        f = frames[i]
        f[:] = WALL
        cv2.rectangle(f, (16, 92), (112, SIZE), (120, 40, 150), -1)
        if shirt == "dots":
            for x in range(22, 108, 9):
                for y in range(98, SIZE, 9):
                    cv2.circle(f, (x, y), 2, (240, 200, 60), -1)
        dx = int(round(2 * np.sin(i / 5)))
        cv2.ellipse(f, (64 + dx, 44), (26, 30), 0, 0, 360, (150, 100, 70), -1)
        cv2.circle(f, (54 + dx, 38), 4, (30, 30, 30), -1)
        cv2.circle(f, (74 + dx, 38), 4, (30, 30, 30), -1)
        cv2.ellipse(f, (64 + dx, 58), (8, 1 + i % 6), 0, 0, 360, (90, 20, 20), -1)
    return frames, _track((38, 14, 90, 74), n)


def _inset(
    frames: np.ndarray, first: int = 0, dark_bottom: bool = False
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Another talking head in a 42-px inset with a 1-px light border (bottom right), from
    frame `first` on; returns the frames and the inset face box."""
    out, x0, y0, s = frames.copy(), 81, 81, 42
    for i in range(first, len(out)):
        f = out[i]
        f[y0 : y0 + s, x0 : x0 + s] = (178, 209, 213)
        if dark_bottom:
            f[y0 + s - 10 : y0 + s, x0 : x0 + s] = (30, 30, 60)
        dx = int(round(2 * np.sin(i / 3)))
        cv2.circle(f, (x0 + 21 + dx, y0 + 19), 10, (150, 100, 70), -1)
        cv2.ellipse(f, (x0 + 21 + dx, y0 + 25), (4, 1 + i % 4), 0, 0, 360, (90, 20, 20), -1)
        cv2.rectangle(f, (x0, y0), (x0 + s - 1, y0 + s - 1), (255, 253, 208), 1)
    return out, (x0 + 9, y0 + 9, x0 + 33, y0 + 29)


def _flicker_side(frames: np.ndarray, x: int, rows: slice, seed: int = 0) -> np.ndarray:
    """Codec noise on a thin border line (column `x`): in each frame, each row of the stretch
    keeps the line or lets it take the colour of the pixel inside or outside it, at random.
    The edge on one flank then vanishes and the other sits a pixel over: no pixel is an edge in
    90% of the frames, though the border never moves."""
    rng = np.random.default_rng(seed)
    out = frames.copy()
    for f in out:
        for y in range(rows.start, rows.stop):
            f[y, x] = f[y, x + int(rng.integers(-1, 2))]
    return out


def _logo(frames: np.ndarray) -> np.ndarray:
    """A station mark in the top-right corner: a coloured square with a white ring."""
    out, s = frames.copy(), SIZE // 7
    x0, y0 = SIZE - s - SIZE // 20, SIZE // 20
    for f in out:
        cv2.rectangle(f, (x0, y0), (x0 + s, y0 + s), (120, 170, 40), -1, cv2.LINE_AA)
        cv2.circle(f, (x0 + s // 2, y0 + s // 2), s // 3, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def _window(frames: np.ndarray) -> np.ndarray:
    """A window on the wall reaching out of the top-left corner."""
    out = frames.copy()
    for f in out:
        cv2.rectangle(f, (10, 12), (46, 54), (230, 215, 120), -1)
        cv2.rectangle(f, (27, 12), (29, 54), (200, 180, 100), -1)
    return out


def _judge(frames: np.ndarray, tracks: list[Track]) -> str | None:
    cfg = FilterConfig()
    return judge_shot(frames, tracks, True, cfg, DetectConfig(backend="stage"), FPS)[0]


def test_inset_with_a_flickering_thin_border_is_pip():
    frames, face = _portrait(72)
    with_inset, inset_face = _inset(frames)
    people = [face, _track(inset_face, len(frames))]
    assert _judge(with_inset, people) == "pip"
    # A stretch of its right side flickers between the line's flanks: no pixel of it is an
    # edge in 90% of the frames, yet the border is there.
    flickering = _flicker_side(with_inset, x=122, rows=slice(92, 104))
    assert _judge(flickering, people) == "pip"
    # A clean portrait, in a plain or a dotted shirt, is kept: no inset, no logo.
    assert _judge(frames, [face]) is None
    assert _judge(_portrait(72, shirt="dots")[0], [face]) is None


def test_inset_for_part_of_a_shot_and_in_the_subtitle_band_is_pip():
    frames, face = _portrait(168)  # 7 s; the inset comes in half way
    late, _ = _inset(frames, first=84)
    assert _judge(late, [face]) == "pip"
    # A white border beside a dark shirt in the bottom band reads like outlined text.
    dark, _ = _inset(frames[:72], dark_bottom=True)
    assert _judge(dark, [_track((38, 14, 90, 74), 72)]) == "pip"


def test_logo_is_named_even_when_no_face_is_found():
    frames, face = _portrait(72)
    marked = _logo(frames)
    assert _judge(marked, [face]) == "logo"
    assert _judge(marked, []) == "logo"  # the detector missed the face: still a logo
    # Scenery is not a logo: a window reaching out of a corner, an empty room.
    assert _judge(_window(frames), [face]) is None
    empty = _window(np.full_like(frames, 200))
    assert _judge(empty, []) == "no_person"
