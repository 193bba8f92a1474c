"""Frame renderer: one `Character` in one `FrameState` -> an RGB uint8 image.

Drawing uses OpenCV anti-aliased polygons on numpy arrays with 1/16-pixel precision. The head is
a pseudo-3D ellipsoid: facial features sit at fixed longitudes and move and foreshorten with yaw,
so one code path draws the front, three-quarter, profile and back views. Geometry is written in
head units (head half-width = 1, y points down) and mapped to pixels by one affine transform that
also applies roll, sway and lean. Backgrounds and torsos are cached per character and scale.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import cv2
import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.face import (
    blend_face,
    draw_brow,
    draw_eye,
    draw_face_extras,
    draw_facial_hair,
    draw_glasses,
    draw_mouth,
    draw_nose,
)
from lpm.data.stage.hair import draw_back_hair, draw_ears, draw_hair_top, draw_hat
from lpm.data.stage.pen import AA, VIEW_YAW, Pen, head_matrix, head_outline, shade
from lpm.data.stage.schema import VIEWS
from lpm.data.stage.state import FrameState

__all__ = [
    "FrameState",
    "contact_sheet",
    "draw_character",
    "head_layout",
    "render_background",
    "render_frame",
]


def _torso_sprite(
    ch: Character, scale: float, view: str
) -> tuple[np.ndarray, np.ndarray, int, int]:
    return _torso_sprite_cached(ch, round(scale * 4) / 4, view)


@lru_cache(maxsize=256)
def _torso_sprite_cached(ch: Character, scale: float, view: str):
    """Clothed torso as (rgb, mask, anchor_x, anchor_y); the anchor is the neck base."""
    side = view in ("left", "right")
    sw = ch.shoulder_width * (0.6 if side else 1.0)
    w = int(math.ceil(2 * (sw + 0.3) * scale)) + 4
    h = int(math.ceil(3.2 * scale)) + 4
    ax, ay = w // 2, int(0.15 * scale) + 2
    rgb = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    m = np.array([[scale, 0.0, ax], [0.0, scale, ay]])
    body = np.array(
        [
            [-0.45, 0.0],
            [-sw + 0.35, 0.12],
            [-sw, 0.5],
            [-sw - 0.1, 3.2],
            [sw + 0.1, 3.2],
            [sw, 0.5],
            [sw - 0.35, 0.12],
            [0.45, 0.0],
        ]
    )
    pen = Pen(rgb, m, scale)
    pen.fill(body, ch.clothing)
    pen_m = Pen(mask, m, scale)
    pen_m.fill(body, 255)
    pat = ch.clothing_pattern
    c2 = ch.clothing_2
    if view != "back" or pat in ("stripes", "dots", "checker", "two_tone"):
        if pat == "stripes":
            for k in range(7):
                y = 0.45 + 0.42 * k
                pen.fill(np.array([[-3, y], [3, y], [3, y + 0.16], [-3, y + 0.16]]), c2)
        elif pat == "dots":
            for i in range(-4, 5):
                for j in range(6):
                    pen.ellipse(i * 0.45 + 0.2 * (j % 2), 0.5 + j * 0.45, 0.09, 0.09, c2)
        elif pat == "checker":
            for i in range(-5, 5):
                for j in range(8):
                    if (i + j) % 2 == 0:
                        x, y = i * 0.4, j * 0.4
                        pen.fill(
                            np.array([[x, y], [x + 0.4, y], [x + 0.4, y + 0.4], [x, y + 0.4]]), c2
                        )
        elif pat == "two_tone":
            pen.fill(np.array([[-3, 1.6], [3, 1.6], [3, 3.3], [-3, 3.3]]), c2)
    if view == "front":
        if pat == "collar":
            pen.fill(np.array([[-0.5, 0.0], [0.0, 0.5], [-0.2, 0.65], [-0.65, 0.12]]), c2)
            pen.fill(np.array([[0.5, 0.0], [0.0, 0.5], [0.2, 0.65], [0.65, 0.12]]), c2)
        elif pat == "vneck":
            pen.fill(np.array([[-0.4, -0.05], [0.0, 0.75], [0.4, -0.05]]), ch.skin)
            pen.line(np.array([[-0.42, -0.05], [0.0, 0.78], [0.42, -0.05]]), c2, 0.08)
    rgb[mask == 0] = 0
    return rgb, mask > 127, ax, ay


def _paste(canvas: np.ndarray, rgb: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
    h, w = mask.shape
    ch, cw = canvas.shape[:2]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(cw, x + w), min(ch, y + h)
    if x1 <= x0 or y1 <= y0:
        return
    sub = canvas[y0:y1, x0:x1]
    np.copyto(
        sub,
        rgb[y0 - y : y1 - y, x0 - x : x1 - x],
        where=mask[y0 - y : y1 - y, x0 - x : x1 - x, None],
    )


def _draw_wave(pen: Pen, ch: Character, state: FrameState, b: float) -> None:
    """A waving arm on the image-right side; `pen` draws in (unrolled) body head units."""
    if state.wave <= 0.01:
        return
    lift = float(np.clip(state.wave, 0, 1))
    shoulder = np.array([0.75 * ch.shoulder_width, b + 0.55])
    rest = np.array([ch.shoulder_width + 0.2, b + 2.2])
    up = np.array([1.5 + 0.18 * math.sin(state.wave_phase), 0.1])
    hand = rest + (up - rest) * lift
    elbow = np.array([1.85, b + 0.75]) * lift + (shoulder + rest) / 2 * (1 - lift)
    pen.line(np.array([shoulder, elbow, hand]), shade(ch.clothing, 0.9), 0.38)
    tilt = 0.35 * math.sin(state.wave_phase)
    pen.ellipse(hand[0], hand[1], 0.24, 0.28, ch.skin, angle=tilt)
    for k in range(4):
        a = tilt + (k - 1.5) * 0.3
        fx, fy = hand[0] + 0.3 * math.sin(a), hand[1] - 0.3 * math.cos(a)
        pen.ellipse(fx, fy, 0.055, 0.14, ch.skin, angle=a)
    pen.ellipse(hand[0] + 0.25, hand[1] + 0.02, 0.12, 0.06, ch.skin, angle=-0.6)


def draw_character(
    canvas: np.ndarray,
    character: Character,
    state: FrameState,
    center: tuple[float, float],
    head_px: float,
) -> tuple[int, int, int, int]:
    """Draw one character in place on an RGB canvas.

    Args:
        canvas: HxWx3 uint8 RGB image, modified in place.
        center: head centre (pixels) before sway and lean.
        head_px: head half-width (pixels).

    Returns:
        The face box (x0, y0, x1, y1) in pixels, clipped to the canvas.
    """
    if state.view not in VIEW_YAW:
        raise ValueError(f"FrameState.view must be one of {VIEWS}, got {state.view!r}")
    ch = character
    face = blend_face(state)
    yaw = math.radians(VIEW_YAW[state.view] + state.yaw)
    pitch = state.pitch + face["pitch"]
    pitch_dy = -0.35 * math.sin(math.radians(pitch))
    b = ch.head_aspect
    lean = float(np.clip(state.lean, 0, 1))
    scale = head_px * (1.0 + 0.15 * lean)
    cx = center[0] + state.sway_x * head_px
    cy = center[1] + (state.sway_y + 0.25 * lean) * head_px
    open_total = float(np.clip(state.mouth_open + face["mouth_open"], 0, 1))
    jaw_drop = 0.12 * open_total * (math.cos(yaw) > 0)

    # 1. torso and neck (body does not roll with the head)
    body_view = state.view
    rgb, mask, ax, ay = _torso_sprite(ch, head_px, body_view)
    neck_y = center[1] + (b + 0.2 + state.sway_y * 0.6) * head_px
    _paste(
        canvas,
        rgb,
        mask,
        int(round(cx - ax - 0.3 * state.sway_x * head_px)),
        int(round(neck_y - ay)),
    )
    m = head_matrix(cx, cy, scale, state.roll, pivot_y=b * 1.2)
    body_pen = Pen(canvas, np.array([[head_px, 0, cx], [0, head_px, cy]]), head_px)
    body_pen.fill(
        np.array([[-0.32, 0.4 * b], [0.32, 0.4 * b], [0.34, b + 0.3], [-0.34, b + 0.3]]),
        shade(ch.skin, 0.85),
    )
    pen = Pen(canvas, m, scale)
    # 2. back hair, hidden ears, head
    draw_back_hair(pen, ch, yaw, b)
    draw_ears(pen, ch, yaw, b, front=False)
    outline = head_outline(ch, b, jaw_drop)
    pen.fill(outline, ch.skin)
    # 3. face features (skipped automatically when facing away)
    draw_face_extras(pen, ch, yaw, b, pitch_dy)
    draw_facial_hair(pen, ch, yaw, b, pitch_dy, jaw_drop)
    draw_nose(pen, ch, yaw, b, pitch_dy)
    draw_mouth(pen, ch, face, state, yaw, b, pitch_dy, jaw_drop)
    for side in (-1.0, 1.0):
        draw_eye(pen, ch, face, state, side, yaw, b, pitch_dy)
    draw_glasses(pen, ch, yaw, b, pitch_dy)
    # 4. hair, visible ears, hat, then the brows over them, hand
    draw_hair_top(pen, ch, yaw, b, pitch_dy)
    draw_ears(pen, ch, yaw, b, front=True)
    draw_hat(pen, ch, yaw, b, pitch_dy)
    for side in (-1.0, 1.0):
        draw_brow(pen, ch, face, state, side, yaw, b, pitch_dy)
    _draw_wave(body_pen, ch, state, b)
    corners = outline @ m[:, :2].T + m[:, 2]
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    h, w = canvas.shape[:2]
    return (max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1)))


@lru_cache(maxsize=512)
def _background_cached(ch: Character, width: int, height: int) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    c1 = np.array(ch.background, np.float32)
    c2 = np.array(ch.background_2, np.float32)
    pat = ch.background_pattern
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    if pat in ("gradient", "rays"):
        img[:] = (c1 * (1 - t) + (0.6 * c2 + 0.4 * c1) * t).astype(np.uint8)
    else:
        img[:] = c1.astype(np.uint8)
    soft = tuple(int(v) for v in (0.75 * c1 + 0.25 * c2))
    unit = max(width, height) / 8.0
    if pat == "stripes":
        for k in range(0, 9, 2):
            cv2.rectangle(img, (int(k * unit), 0), (int((k + 1) * unit), height), soft, -1)
    elif pat == "dots":
        for i in range(9):
            for j in range(9):
                cv2.circle(
                    img,
                    (int((i + 0.5 * (j % 2)) * unit), int(j * unit)),
                    max(1, int(unit * 0.18)),
                    soft,
                    -1,
                    AA,
                )
    elif pat == "checker":
        for i in range(9):
            for j in range(9):
                if (i + j) % 2:
                    cv2.rectangle(
                        img,
                        (int(i * unit), int(j * unit)),
                        (int((i + 1) * unit), int((j + 1) * unit)),
                        soft,
                        -1,
                    )
    elif pat == "window":
        x0, y0 = int(width * 0.08), int(height * 0.1)
        cv2.rectangle(
            img,
            (x0, y0),
            (x0 + int(2.2 * unit), y0 + int(2.6 * unit)),
            tuple(int(v) for v in c2),
            -1,
        )
        cv2.rectangle(
            img,
            (x0, y0),
            (x0 + int(2.2 * unit), y0 + int(2.6 * unit)),
            soft,
            max(1, int(unit * 0.15)),
        )
        cv2.line(
            img,
            (x0 + int(1.1 * unit), y0),
            (x0 + int(1.1 * unit), y0 + int(2.6 * unit)),
            soft,
            max(1, int(unit * 0.1)),
        )
    elif pat == "rays":
        cx, cy = width / 2, height * 0.4
        for k in range(0, 16, 2):
            a0, a1 = k * math.pi / 8, (k + 1) * math.pi / 8
            r = 2 * max(width, height)
            pts = np.array(
                [
                    [cx, cy],
                    [cx + r * math.cos(a0), cy + r * math.sin(a0)],
                    [cx + r * math.cos(a1), cy + r * math.sin(a1)],
                ],
                np.int32,
            )
            cv2.fillPoly(img, [pts], soft, AA)
    img.setflags(write=False)
    return img


def render_background(character: Character, width: int, height: int | None = None) -> np.ndarray:
    """The character's background (read-only, cached), HxWx3 uint8 RGB."""
    return _background_cached(character, int(width), int(height or width))


def head_layout(size: int) -> tuple[tuple[float, float], float]:
    """Head centre (pixels) and head half-width (pixels) of a single-performer portrait."""
    return (size * 0.5, size * 0.4), size * 0.25


def render_frame(character: Character, state: FrameState, size: int) -> np.ndarray:
    """Render a head-and-shoulders portrait of one character.

    Args:
        size: output height and width (pixels), at least 16.

    Returns:
        size x size x 3 uint8 RGB image.
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    img = render_background(character, size).copy()
    center, head_px = head_layout(size)
    draw_character(img, character, state, center, head_px)
    return img


def mouth_region(
    character: Character, state: FrameState, size: int, *, threshold: int = 8, dilate: int = 1
) -> np.ndarray:
    """Where the mouth can be in this frame: (size, size) bool.

    The frame's pose is rendered with the mouth shut and wide open (flat and round); the pixels
    that differ are the mouth and the jaw that moves with it, whether the mouth in ``state`` is
    open or not. ``dilate`` grows the region by that many pixels.
    """
    shut = render_frame(character, replace(state, mouth_open=0.0, mouth_round=0.0), size)
    region = np.zeros(shut.shape[:2], dtype=bool)
    for rnd in (0.0, 1.0):
        wide = render_frame(character, replace(state, mouth_open=1.0, mouth_round=rnd), size)
        region |= np.abs(wide.astype(np.int16) - shut).max(axis=-1) > threshold
    return _grow(region, dilate)


def eye_region(
    character: Character, state: FrameState, size: int, *, threshold: int = 8, dilate: int = 1
) -> np.ndarray:
    """Where the eyes are in this frame: (size, size) bool.

    The frame's pose is rendered with the eyes open and shut (`FrameState.blink`); the pixels
    that differ are the eyes, whose place in the face is what tells a turned or shaking head.
    ``dilate`` grows the region by that many pixels.
    """
    shut = render_frame(character, replace(state, blink=1.0), size)
    open_ = render_frame(character, replace(state, blink=0.0), size)
    return _grow(np.abs(open_.astype(np.int16) - shut).max(axis=-1) > threshold, dilate)


def _grow(region: np.ndarray, dilate: int) -> np.ndarray:
    for _ in range(dilate):
        grown = region.copy()
        grown[1:] |= region[:-1]
        grown[:-1] |= region[1:]
        grown[:, 1:] |= region[:, :-1]
        grown[:, :-1] |= region[:, 1:]
        region = grown
    return region


def contact_sheet(
    images: list[np.ndarray], cols: int, labels: list[str] | None = None, pad: int = 2
) -> np.ndarray:
    """Tile equally sized RGB images into one sheet, optionally with a caption under each."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w = images[0].shape[:2]
    text_h = 12 if labels else 0
    rows = (len(images) + cols - 1) // cols
    sheet = np.full((rows * (h + text_h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + text_h + pad), pad + c * (w + pad)
        sheet[y : y + h, x : x + w] = im
        if labels:
            cv2.putText(
                sheet,
                labels[i][: max(4, w // 6)],
                (x + 1, y + h + text_h - 3),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.3,
                (0, 0, 0),
                1,
                AA,
            )
    return sheet
