"""Faces: expression parameters and the eyes, brows, nose, mouth and face accessories."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.pen import COS, SIN, Pen, feature_x, half_width, mix, shade
from lpm.data.stage.schema import EXPRESSIONS
from lpm.data.stage.state import FrameState


@dataclass(frozen=True)
class _Face:
    """Continuous face parameters after blending expressions."""

    smile: float = 0.0
    mouth_w: float = 0.0
    brow_up: float = 0.0
    brow_inner: float = 0.0
    brow_asym: float = 0.0
    eye_open: float = 0.0
    lower_lid: float = 0.0
    lid_slant: float = 0.0
    mouth_open: float = 0.0
    mouth_round: float = 0.0
    sneer: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0
    pitch: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)


_EXPRESSION_FACE: dict[str, _Face] = {
    "neutral": _Face(),
    "happy": _Face(smile=1.0, mouth_w=0.2, brow_up=0.2, lower_lid=0.45, mouth_open=0.12),
    "sad": _Face(
        smile=-0.8, brow_inner=0.9, eye_open=-0.25, lid_slant=-0.35, gaze_y=0.5, pitch=-6.0
    ),
    "angry": _Face(smile=-0.5, brow_inner=-1.0, brow_up=-0.35, lid_slant=0.6, mouth_w=-0.1),
    "surprised": _Face(brow_up=1.0, eye_open=0.4, mouth_open=0.45, mouth_round=0.9, pitch=3.0),
    "disgusted": _Face(
        smile=-0.6, sneer=1.0, lower_lid=0.45, brow_inner=-0.5, brow_asym=0.4, pitch=-3.0
    ),
    "fearful": _Face(
        brow_up=0.7, brow_inner=0.8, eye_open=0.35, mouth_open=0.18, mouth_w=0.25, smile=-0.35
    ),
    "thinking": _Face(brow_asym=0.9, gaze_x=0.6, gaze_y=-0.7, mouth_w=-0.3, smile=-0.15, pitch=4.0),
}
_FACE_FIELDS = (
    "smile",
    "mouth_w",
    "brow_up",
    "brow_inner",
    "brow_asym",
    "eye_open",
    "lower_lid",
    "lid_slant",
    "mouth_open",
    "mouth_round",
    "sneer",
    "gaze_x",
    "gaze_y",
    "pitch",
)
FACE_TABLE = np.array(
    [[getattr(_EXPRESSION_FACE[name], f) for f in _FACE_FIELDS] for name in EXPRESSIONS]
)


def blend_face(state: FrameState) -> dict[str, float]:
    values = (
        FACE_TABLE[state.expression] * state.intensity
        + FACE_TABLE[state.prev_expression] * state.prev_intensity
    )
    return dict(zip(_FACE_FIELDS, values.tolist(), strict=True))


def _eye_centre(
    ch: Character, side: float, yaw: float, b: float, pitch_dy: float
) -> tuple[float, float, float] | None:
    """(x, y, foreshortening) of one eye in head units, or None when it faces away."""
    x, fs = feature_x(ch, side * ch.eye_spacing, -0.05, yaw)
    if fs < 0.08:
        return None
    return x, (-0.05 + pitch_dy) * b, fs


def draw_eye(
    pen: Pen,
    ch: Character,
    face: dict,
    state: FrameState,
    side: float,
    yaw: float,
    b: float,
    pitch_dy: float,
) -> None:
    centre = _eye_centre(ch, side, yaw, b, pitch_dy)
    if centre is None:
        return
    x, y, fs = centre
    open_k = max(0.3, 1.0 + face["eye_open"])
    hw = 0.19 * ch.eye_size * fs * min(1.15, open_k)
    hh = 0.235 * ch.eye_size * open_k
    outline = shade(ch.skin, 0.35)
    sclera = np.stack([x + hw * COS, y + hh * SIN], axis=1)
    pen.fill(sclera, (250, 250, 250))
    gx = np.clip(state.gaze_x + face["gaze_x"], -1, 1) + math.sin(yaw) * 0.5
    gy = np.clip(state.gaze_y + face["gaze_y"], -1, 1)
    r_iris = 0.135 * ch.eye_size
    ix = x + float(np.clip(gx, -1, 1)) * max(0.0, hw - r_iris * fs) * 0.85
    iy = y + float(gy) * max(0.0, hh - r_iris) * 0.8
    pen.ellipse(ix, iy, r_iris * fs, r_iris, ch.eye_colour)
    pen.ellipse(ix, iy, 0.55 * r_iris * fs, 0.55 * r_iris, (15, 15, 20))
    pen.ellipse(
        ix + 0.35 * r_iris * fs,
        iy - 0.4 * r_iris,
        0.25 * r_iris * fs,
        0.25 * r_iris,
        (255, 255, 255),
    )
    pen.line(sclera, outline, 0.035, closed=True)
    # upper lid: covers the eye from the top down to a (slanted) lid line
    close = float(np.clip(state.blink, 0.0, 1.0))
    slant = face["lid_slant"] * 0.5 * (-side)
    xs = np.linspace(-1.0, 1.0, 9)
    lid_top = -hh * 1.3
    lid_y = -hh + 2 * hh * close + slant * hh * xs * (1 - close) + 0.15 * hh * (1 - xs**2) * close
    lid_y = np.maximum(lid_y, -hh * 1.05)
    skin = ch.skin
    pts = np.concatenate(
        [
            np.stack([x + xs * hw * 1.25, y + lid_y], 1),
            np.array([[x + hw * 1.25, y + lid_top], [x - hw * 1.25, y + lid_top]]),
        ]
    )
    if close > 0.02 or abs(slant) > 0.01:
        pen.fill(pts, skin)
        inside = np.clip(1 - ((lid_y) / hh) ** 2, 0.0, 1.0)
        pen.line(
            np.stack([x + xs * hw * np.sqrt(inside) * 1.05, y + lid_y], 1),
            outline,
            0.05 if close > 0.6 else 0.035,
        )
    # lower lid: raised by smiles and disgust (a squint)
    lower = float(np.clip(face["lower_lid"], 0.0, 0.8)) * (1 - close)
    if lower > 0.02:
        ly = hh - 2 * hh * lower * (1 - 0.5 * xs**2)
        pts = np.concatenate(
            [
                np.stack([x + xs * hw * 1.25, y + ly], 1),
                np.array([[x + hw * 1.25, y + hh * 1.3], [x - hw * 1.25, y + hh * 1.3]]),
            ]
        )
        pen.fill(pts, skin)
        inside = np.clip(1 - (ly / hh) ** 2, 0.0, 1.0)
        pen.line(np.stack([x + xs * hw * np.sqrt(inside), y + ly], 1), outline, 0.03)
    if ch.eyelashes and close < 0.6:
        ox = x + side * hw * 0.95 * (1 if fs > 0 else -1)
        oy = y - hh * 0.45 + 2 * hh * close
        for k in range(2):
            pen.line(
                np.array([[ox, oy + 0.06 * k], [ox + side * 0.1, oy - 0.08 + 0.06 * k]]),
                outline,
                0.03,
            )


def _luma(rgb: tuple[int, int, int]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


BROW_MIN_CONTRAST = 70.0
"""Least luma difference (0..255) between brows and skin; closer hair colours get an ink brow."""


def brow_colour(ch: Character) -> tuple[int, int, int]:
    """A darker shade of the hair, or a dark (light on dark skin) ink when that would not stand
    out from the skin: expressions live in the brows, so they must be readable on every face."""
    colour = shade(ch.hair_colour, 0.5)
    if abs(_luma(colour) - _luma(ch.skin)) >= BROW_MIN_CONTRAST:
        return colour
    return shade(ch.skin, 0.35) if _luma(ch.skin) > 90 else shade(ch.skin, 1.6)


def draw_brow(
    pen: Pen,
    ch: Character,
    face: dict,
    state: FrameState,
    side: float,
    yaw: float,
    b: float,
    pitch_dy: float,
) -> None:
    """One eyebrow, drawn after hair and hats (the cartoon convention): a fringe or a cap never
    hides the brows, which carry surprise, anger, sadness, thinking and raised-brow actions."""
    centre = _eye_centre(ch, side, yaw, b, pitch_dy)
    if centre is None:
        return
    x, y, fs = centre
    hh = 0.235 * ch.eye_size * max(0.3, 1.0 + face["eye_open"])
    brow_up = face["brow_up"] + state.brow_raise + face["brow_asym"] * (0.5 + 0.5 * side) * 0.6
    inner_up = face["brow_inner"]
    bx = np.array([-1.0, 0.0, 1.0]) * side
    by = np.array(
        [
            -hh - 0.1 - 0.13 * brow_up - 0.12 * inner_up,
            -hh - 0.16 - 0.14 * brow_up,
            -hh - 0.09 - 0.13 * brow_up + 0.04 * inner_up,
        ]
    )
    brow = np.stack([x + (bx * 0.18 - side * 0.02) * max(0.3, fs) * ch.eye_size, y + by], 1)
    # inner end first: points go from the nose side outward
    pen.line(brow[::-1] if side > 0 else brow, brow_colour(ch), ch.brow_thickness)


def draw_nose(pen: Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    x, fs = feature_x(ch, 0.0, 0.2, yaw)
    if fs < -0.1:
        return
    y = (0.22 + pitch_dy) * b
    s = ch.nose_size
    dark = shade(ch.skin, 0.72)
    side = abs(math.sin(yaw))
    if side > 0.6:
        tip = x / 0.93 * (1.0 + 0.12 * s) * 1.0
        base = x * 0.96
        tri = np.array([[base, y - 0.3 * s], [tip, y + 0.02], [base, y + 0.08]])
        pen.fill(tri, shade(ch.skin, 0.95))
        pen.line(tri[:3], dark, 0.03)
        return
    kind = ch.nose
    if kind == "dot":
        pen.ellipse(x, y, 0.06 * s, 0.05 * s, dark)
    elif kind == "button":
        pen.ellipse(x, y, 0.11 * s * fs, 0.08 * s, shade(ch.skin, 0.88))
        pen.ellipse(x - 0.04 * s, y + 0.02, 0.025, 0.02, dark)
        pen.ellipse(x + 0.04 * s, y + 0.02, 0.025, 0.02, dark)
    elif kind == "triangle":
        pen.line(
            np.array([[x, y - 0.22 * s], [x + 0.07 * s, y + 0.04], [x - 0.05 * s, y + 0.05]]),
            dark,
            0.03,
        )
    elif kind == "long":
        pen.line(
            np.array([[x - 0.02, y - 0.3 * s], [x + 0.04, y], [x - 0.06 * s, y + 0.05]]),
            dark,
            0.035,
        )
    else:
        pen.ellipse(x, y, 0.14 * s * fs, 0.1 * s, shade(ch.skin, 0.85))


def _mouth_curves(face: dict, state: FrameState, ch: Character, fs: float):
    open_ = float(np.clip(state.mouth_open + face["mouth_open"] * (1 - state.mouth_open), 0, 1))
    rnd = float(np.clip(state.mouth_round + face["mouth_round"], 0, 1))
    w = 0.36 * ch.mouth_width * (1.0 + face["mouth_w"]) * (1.0 - 0.35 * rnd) * max(0.15, fs)
    xs = np.linspace(-1.0, 1.0, 13)
    curve = -face["smile"] * 0.16 * xs**2
    profile = np.power(1.0 - xs**2, 0.5 + 0.4 * (1.0 - rnd))
    gap = 0.6 * open_ * (1.0 + 0.25 * rnd)
    upper = curve - 0.28 * gap * profile - face["sneer"] * 0.07 * np.clip(xs, 0, 1)
    lower = curve + 0.72 * gap * profile
    return xs * w, upper, lower, open_


def draw_mouth(
    pen: Pen,
    ch: Character,
    face: dict,
    state: FrameState,
    yaw: float,
    b: float,
    pitch_dy: float,
    jaw_drop: float,
) -> None:
    x0, fs = feature_x(ch, 0.0, 0.5, yaw)
    if fs < -0.05:
        return
    y0 = (0.52 + pitch_dy) * b * (1.0 + jaw_drop * 0.5)
    xs, upper, lower, open_ = _mouth_curves(face, state, ch, fs)
    lip = shade(ch.lip_colour, 0.8)
    width = 0.045
    if open_ < 0.04:
        pen.line(np.stack([x0 + xs, y0 + upper], 1), lip, width + 0.01)
        return
    top = np.stack([x0 + xs, y0 + upper], 1)
    bottom = np.stack([x0 + xs, y0 + lower], 1)
    pen.fill(np.concatenate([top, bottom[::-1]]), (70, 20, 35))
    span = lower - upper
    if open_ > 0.12:
        teeth = np.stack([x0 + xs * 0.92, y0 + upper + np.minimum(0.07, 0.3 * span)], 1)
        pen.fill(np.concatenate([top, teeth[::-1]]), (245, 245, 240))
        tongue = np.stack([x0 + xs * 0.8, y0 + lower - 0.35 * span], 1)
        pen.fill(np.concatenate([tongue, bottom[::-1] * [1, 1]]), (205, 95, 105))
    pen.line(top, lip, width)
    pen.line(bottom, lip, width)


def draw_face_extras(pen: Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    for side in (-1.0, 1.0):
        x, fs = feature_x(ch, side * 0.75, 0.3, yaw)
        if fs < 0.2:
            continue
        y = (0.3 + pitch_dy) * b
        if ch.cheek_blush > 0:
            pen.ellipse(x, y, 0.16 * fs, 0.09, mix(ch.skin, (235, 110, 120), 0.35 * ch.cheek_blush))
        if ch.freckles:
            for k in range(3):
                pen.ellipse(
                    x + (k - 1) * 0.07 * fs, y - 0.03 * (k % 2), 0.018, 0.018, shade(ch.skin, 0.7)
                )


def draw_facial_hair(
    pen: Pen, ch: Character, yaw: float, b: float, pitch_dy: float, jaw_drop: float
) -> None:
    if ch.facial_hair == "none":
        return
    x0, fs = feature_x(ch, 0.0, 0.5, yaw)
    if fs < 0.1:
        return
    y0 = (0.52 + pitch_dy) * b * (1.0 + jaw_drop * 0.5)
    col = shade(ch.hair_colour, 0.9)
    if ch.facial_hair == "beard":
        ys = np.linspace(0.3, 1.0, 8)
        half = half_width(ys, ch) * 0.98
        yy = ys * b * (1 + jaw_drop)
        right = np.stack([half * max(0.2, fs) + x0 * 0.5, yy], 1)
        left = np.stack([-half[::-1] * max(0.2, fs) + x0 * 0.5, yy[::-1]], 1)
        pen.fill(np.concatenate([right, left]), col)
    elif ch.facial_hair == "goatee":
        pen.ellipse(x0, y0 + 0.3 * b * (1 + jaw_drop), 0.15 * fs, 0.14, col)
    w = 0.28 * ch.mouth_width * fs
    pen.fill(
        np.array([[x0 - w, y0 - 0.02], [x0, y0 - 0.14], [x0 + w, y0 - 0.02], [x0, y0 - 0.07]]), col
    )


def draw_glasses(pen: Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    if ch.glasses == "none":
        return
    col = ch.glasses_colour
    centres = []
    for side in (-1.0, 1.0):
        x, fs = feature_x(ch, side * ch.eye_spacing, -0.05, yaw)
        if fs < 0.1:
            continue
        y = (-0.05 + pitch_dy) * b
        r = 0.25 * ch.eye_size
        if ch.glasses == "round":
            pts = np.stack([x + r * fs * COS, y + r * SIN], 1)
        else:
            pts = np.array(
                [
                    [x - r * fs, y - 0.8 * r],
                    [x + r * fs, y - 0.8 * r],
                    [x + r * fs, y + 0.8 * r],
                    [x - r * fs, y + 0.8 * r],
                ]
            )
        pen.line(pts, col, 0.05, closed=True)
        centres.append((x + (-side) * r * fs, y))
    if len(centres) == 2:
        pen.line(np.array(centres), col, 0.045)
