"""Frame renderer: one `Character` in one `FrameState` -> an RGB uint8 image.

Drawing uses OpenCV anti-aliased polygons on numpy arrays with 1/16-pixel precision. The head is
a pseudo-3D ellipsoid: facial features sit at fixed longitudes and move and foreshorten with yaw,
so one code path draws the front, three-quarter, profile and back views. Geometry is written in
head units (head half-width = 1, y points down) and mapped to pixels by one affine transform that
also applies roll, sway and lean. Backgrounds and torsos are cached per character and scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.schema import EXPRESSIONS, VIEWS

_SHIFT = 4
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA
_VIEW_YAW = {"front": 0.0, "left": -90.0, "right": 90.0, "back": 180.0}
_T = np.linspace(0.0, 2.0 * math.pi, 40, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)
_UNIT_CIRCLE = np.stack([_COS, _SIN], axis=1)


@dataclass(kw_only=True)
class FrameState:
    """Everything that changes from frame to frame. Angles in degrees, offsets in head units."""

    mouth_open: float = 0.0
    """Jaw opening from speech, 0 (closed) .. 1 (wide open); expressions may add to it."""
    mouth_round: float = 0.0
    """Lip rounding, 0 (spread, "ee") .. 1 (rounded, "oo")."""
    yaw: float = 0.0
    """Head turn (degrees, + turns the face toward image right), added to the view's yaw."""
    pitch: float = 0.0
    """Head tilt (degrees, + looks up)."""
    roll: float = 0.0
    """Head roll (degrees, + tilts clockwise on screen)."""
    gaze_x: float = 0.0
    """Horizontal gaze, -1 (image left) .. 1 (image right)."""
    gaze_y: float = 0.0
    """Vertical gaze, -1 (up) .. 1 (down)."""
    brow_raise: float = 0.0
    """Extra eyebrow raise from prosody or actions, -1 .. 1."""
    expression: int = 0
    """Index into `schema.EXPRESSIONS`."""
    intensity: float = 0.0
    """Strength of `expression`, 0 .. 1."""
    prev_expression: int = 0
    """Expression fading out during a transition."""
    prev_intensity: float = 0.0
    """Remaining strength of `prev_expression`, 0 .. 1."""
    blink: float = 0.0
    """Eyelid closure, 0 (open) .. 1 (closed)."""
    view: str = "front"
    """Body facing, one of `schema.VIEWS`."""
    sway_x: float = 0.0
    """Horizontal body sway (head units)."""
    sway_y: float = 0.0
    """Vertical body offset, + moves down (head units); breathing uses it."""
    lean: float = 0.0
    """Lean toward the camera, 0 .. 1 (head grows and lowers)."""
    wave: float = 0.0
    """Waving hand raised amount, 0 (hidden) .. 1."""
    wave_phase: float = 0.0
    """Phase of the waving hand (radians)."""


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
    "sad": _Face(smile=-0.8, brow_inner=0.9, eye_open=-0.25, lid_slant=-0.35, gaze_y=0.5,
                 pitch=-6.0),
    "angry": _Face(smile=-0.5, brow_inner=-1.0, brow_up=-0.35, lid_slant=0.6, mouth_w=-0.1),
    "surprised": _Face(brow_up=1.0, eye_open=0.4, mouth_open=0.45, mouth_round=0.9, pitch=3.0),
    "disgusted": _Face(smile=-0.6, sneer=1.0, lower_lid=0.45, brow_inner=-0.5, brow_asym=0.4,
                       pitch=-3.0),
    "fearful": _Face(brow_up=0.7, brow_inner=0.8, eye_open=0.35, mouth_open=0.18, mouth_w=0.25,
                     smile=-0.35),
    "thinking": _Face(brow_asym=0.9, gaze_x=0.6, gaze_y=-0.7, mouth_w=-0.3, smile=-0.15,
                      pitch=4.0),
}
_FACE_FIELDS = ("smile", "mouth_w", "brow_up", "brow_inner", "brow_asym", "eye_open",
                "lower_lid", "lid_slant", "mouth_open", "mouth_round", "sneer", "gaze_x",
                "gaze_y", "pitch")
_FACE_TABLE = np.array(
    [[getattr(_EXPRESSION_FACE[name], f) for f in _FACE_FIELDS] for name in EXPRESSIONS]
)


def _blend_face(state: FrameState) -> dict[str, float]:
    values = (_FACE_TABLE[state.expression] * state.intensity
              + _FACE_TABLE[state.prev_expression] * state.prev_intensity)
    return dict(zip(_FACE_FIELDS, values.tolist(), strict=True))


def _shade(colour: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    """Darken (k < 1) or lighten (k > 1) a colour."""
    if k <= 1.0:
        return tuple(int(c * k) for c in colour)  # type: ignore[return-value]
    return tuple(int(c + (255 - c) * (k - 1.0)) for c in colour)  # type: ignore[return-value]


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


class _Pen:
    """Maps head-unit points to fixed-point pixels and draws filled/stroked shapes."""

    def __init__(self, img: np.ndarray, matrix: np.ndarray, scale_px: float) -> None:
        self.img = img
        self.m = matrix
        self.scale_px = scale_px

    def px(self, pts: np.ndarray) -> np.ndarray:
        out = pts @ self.m[:, :2].T + self.m[:, 2]
        return np.round(out * _ONE).astype(np.int32)

    def fill(self, pts: np.ndarray, colour) -> None:
        cv2.fillPoly(self.img, [self.px(pts)], colour, _AA, _SHIFT)

    def line(self, pts: np.ndarray, colour, width: float, closed: bool = False) -> None:
        thickness = max(1, int(round(width * self.scale_px)))
        cv2.polylines(self.img, [self.px(pts)], closed, colour, thickness, _AA, _SHIFT)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour, angle: float = 0.0):
        if rx <= 0 or ry <= 0:
            return
        if angle:
            c, s = math.cos(angle), math.sin(angle)
            pts = np.stack([cx + rx * _COS * c - ry * _SIN * s,
                            cy + rx * _COS * s + ry * _SIN * c], axis=1)
        else:
            pts = np.stack([cx + rx * _COS, cy + ry * _SIN], axis=1)
        self.fill(pts, colour)


def _superellipse_half_width(y: np.ndarray, character: Character) -> np.ndarray:
    """Head half-width at normalised height y in [-1, 1] (head units)."""
    n = {"square": 3.2, "pear": 2.6, "long": 2.4}.get(character.head_shape, 2.0)
    base = np.power(np.clip(1.0 - np.abs(y) ** n, 0.0, 1.0), 1.0 / n)
    taper = np.where(y > 0, 1.0 + (character.jaw - 1.0) * np.clip(y, 0, 1) ** 1.5, 1.0)
    return base * taper


_Y_OUTLINE = -np.cos(np.linspace(0.0, math.pi, 24))


def _head_outline(character: Character, b: float, jaw_drop: float, grow: float = 1.0):
    y = _Y_OUTLINE
    x = _superellipse_half_width(y, character) * grow
    yy = y * b * grow
    yy = np.where(yy > 0, yy * (1.0 + jaw_drop), yy)
    right = np.stack([x, yy], axis=1)
    left = np.stack([-x[::-1], yy[::-1]], axis=1)
    return np.concatenate([right, left], axis=0)


_HAIRLINES = {
    # style: control points (|longitude| in radians, normalised height) of the hairline
    "buzz": ((0.0, -0.55), (1.57, -0.15), (3.14, 0.3)),
    "short": ((0.0, -0.5), (0.7, -0.45), (1.57, -0.05), (3.14, 0.35)),
    "side_part": ((0.0, -0.45), (0.7, -0.42), (1.57, -0.05), (3.14, 0.35)),
    "bob": ((0.0, -0.36), (0.45, -0.36), (0.75, -0.3), (1.2, 0.45), (3.14, 0.55)),
    "long": ((0.0, -0.4), (0.45, -0.38), (0.75, -0.3), (1.2, 0.6), (3.14, 0.8)),
    "spiky": ((0.0, -0.5), (0.7, -0.45), (1.57, -0.1), (3.14, 0.3)),
    "bun": ((0.0, -0.6), (0.8, -0.5), (1.57, -0.1), (3.14, 0.3)),
    "curly": ((0.0, -0.45), (0.7, -0.4), (1.57, 0.0), (3.14, 0.4)),
    "mohawk": ((0.0, -0.6), (3.14, -0.1)),
    "ponytail": ((0.0, -0.55), (0.8, -0.5), (1.57, -0.1), (3.14, 0.3)),
    "afro": ((0.0, -0.5), (0.7, -0.42), (1.57, 0.05), (3.14, 0.5)),
    "_cap": ((0.0, -0.5), (3.14, -0.35)),
    "_beanie": ((0.0, -0.42), (3.14, -0.2)),
}
_PHI = np.linspace(-math.pi / 2, math.pi / 2, 21)


def _hairline(style: str, lam: np.ndarray) -> np.ndarray:
    pts = _HAIRLINES[style]
    h = np.interp(np.abs(lam), [p[0] for p in pts], [p[1] for p in pts])
    if style == "side_part":
        h = h + 0.18 * np.clip(-np.sin(lam), 0, 1) * (np.abs(lam) < 1.5)
    return h


def _cap_polygon(character: Character, style: str, yaw: float, b: float, grow: float,
                 pitch_dy: float) -> np.ndarray | None:
    """Hair (or hat) region on the visible head: silhouette over the top + hairline curve."""
    lam = _PHI - yaw
    lam = (lam + math.pi) % (2 * math.pi) - math.pi
    h = np.clip(_hairline(style, lam) + pitch_dy * np.cos(lam), -0.98, 0.98)
    if style == "mohawk":
        h = np.where(np.abs(lam) < 0.3, h, -0.999)
    if np.all(h <= -0.97):
        return None
    widen = 1.0 + (grow - 1.0) * np.abs(np.sin(_PHI))
    xs = _superellipse_half_width(h, character) * np.sin(_PHI) * widen
    hair_line = np.stack([xs, h * b], axis=1)[::-1]
    y_left, y_right = h[0], h[-1]
    ys_left = np.linspace(y_left, -1.0, 10)
    ys_right = np.linspace(-1.0, y_right, 10)
    left = np.stack([-_superellipse_half_width(ys_left, character) * grow, ys_left * b * grow], 1)
    right = np.stack([_superellipse_half_width(ys_right, character) * grow,
                      ys_right * b * grow], 1)
    return np.concatenate([left, right, hair_line], axis=0)


def _feature_x(character: Character, lam: float, y_norm: float, yaw: float) -> tuple[float, float]:
    """Screen x (head units) and foreshortening of a surface point at longitude `lam`."""
    phi = lam + yaw
    half = float(_superellipse_half_width(np.array([y_norm]), character)[0])
    return 0.93 * half * math.sin(phi), math.cos(phi)


def _draw_back_hair(pen: _Pen, ch: Character, yaw: float, b: float) -> None:
    col = ch.hair_colour
    style = ch.hair_style
    if style == "long":
        pts = np.array([[-1.2, -0.6 * b], [-1.25, 1.3 * b], [1.25, 1.3 * b], [1.2, -0.6 * b],
                        [0.0, -1.2 * b]])
        pen.fill(pts, _shade(col, 0.8))
    elif style == "bob":
        pen.ellipse(0.0, 0.05 * b, 1.17, 0.95 * b, _shade(col, 0.85))
    elif style == "afro":
        pen.ellipse(0.0, -0.25 * b, 1.45, 1.15 * b, col)
    elif style == "curly":
        for k in range(14):
            a = 2 * math.pi * k / 14
            pen.ellipse(1.05 * math.cos(a), -0.15 * b + 0.95 * b * math.sin(a) * 0.9, 0.3, 0.3,
                        col)
    elif style in ("bun", "ponytail"):
        sx, _ = _feature_x(ch, math.pi, -0.2, yaw)
        if style == "bun":
            pen.ellipse(0.55 * sx, -1.0 * b, 0.42, 0.38, col)
        else:
            side = 1.0 if math.sin(yaw) <= 0 else -1.0
            off = 0.9 * abs(math.sin(yaw)) * side + 0.25 * (1 - abs(math.sin(yaw))) * side
            pen.ellipse(off, 0.45 * b, 0.28, 0.75 * b, _shade(col, 0.9), angle=0.2 * side)


def _draw_hair_top(pen: _Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    style = ch.hair_style
    if style == "bald":
        return
    col = ch.hair_colour if style != "buzz" else _mix(ch.skin, ch.hair_colour, 0.7)
    cap = _cap_polygon(ch, style, yaw, b, 1.07, pitch_dy)
    if cap is not None:
        pen.fill(cap, col)
    if style in ("spiky", "mohawk"):
        n = 7 if style == "spiky" else 4
        spread = 0.8 if style == "spiky" else 0.25
        for k in range(n):
            u = (k / (n - 1) - 0.5) * 2 * spread
            x0 = u * math.cos(yaw) if style == "mohawk" else u
            y0 = -b * math.sqrt(max(0.0, 1 - min(0.95, x0 * x0)))
            tri = np.array([[x0 - 0.16, y0 + 0.1], [x0 + 0.05 * u, y0 - 0.42], [x0 + 0.16, y0 + 0.1]])
            pen.fill(tri, col)
    if style == "afro":
        pen.ellipse(0.0, -0.72 * b, 1.05, 0.5 * b, col)


def _draw_hat(pen: _Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    col = ch.hat_colour
    if ch.hat == "none":
        return
    if ch.hat in ("cap", "beanie"):
        cap = _cap_polygon(ch, "_" + ch.hat, yaw, b, 1.1, pitch_dy)
        if cap is not None:
            pen.fill(cap, col)
            pen.line(cap[-21:], _shade(col, 0.7), 0.07)
        if ch.hat == "cap" and math.cos(yaw) > -0.3:
            bx, fs = _feature_x(ch, 0.0, -0.5, yaw)
            pen.ellipse(bx * 1.15, (-0.5 + pitch_dy) * b, 0.75 * max(0.35, abs(fs)), 0.16,
                        _shade(col, 0.8))
    elif ch.hat == "headband":
        lam = _PHI - yaw
        h = np.full_like(_PHI, -0.62) + pitch_dy * np.cos(lam)
        xs = _superellipse_half_width(h, ch) * np.sin(_PHI) * 1.02
        pen.line(np.stack([xs, h * b], 1), col, 0.16)
    elif ch.hat == "bow":
        x0, y0 = 0.55, -0.85 * b
        pen.fill(np.array([[x0, y0], [x0 - 0.35, y0 - 0.22], [x0 - 0.35, y0 + 0.22]]), col)
        pen.fill(np.array([[x0, y0], [x0 + 0.35, y0 - 0.22], [x0 + 0.35, y0 + 0.22]]), col)
        pen.ellipse(x0, y0, 0.1, 0.1, _shade(col, 0.7))


def _draw_ears(pen: _Pen, ch: Character, yaw: float, b: float, front: bool) -> None:
    for side in (-1.0, 1.0):
        lam = side * math.pi / 2
        depth = math.cos(lam + yaw)
        if (depth > 0.25) != front:
            continue
        x, _ = _feature_x(ch, lam, 0.05, yaw)
        x = x / 0.93 * (1.0 if front else 1.02)
        rx = 0.17 * ch.ear_size * max(0.45, abs(math.sin(lam + yaw)) if not front else 0.8)
        ry = 0.25 * ch.ear_size
        pen.ellipse(x, 0.08 * b, rx, ry, _shade(ch.skin, 0.93))
        pen.ellipse(x, 0.08 * b, rx * 0.5, ry * 0.55, _shade(ch.skin, 0.8))
        if ch.earrings:
            pen.ellipse(x, 0.08 * b + ry * 1.1, 0.07, 0.07, (240, 200, 60))


def _draw_eye(pen: _Pen, ch: Character, face: dict, state: FrameState, side: float, yaw: float,
              b: float, pitch_dy: float) -> None:
    lam = side * ch.eye_spacing
    x, fs = _feature_x(ch, lam, -0.05, yaw)
    if fs < 0.08:
        return
    y = (-0.05 + pitch_dy) * b
    open_k = max(0.3, 1.0 + face["eye_open"])
    hw = 0.19 * ch.eye_size * fs * min(1.15, open_k)
    hh = 0.235 * ch.eye_size * open_k
    outline = _shade(ch.skin, 0.35)
    sclera = np.stack([x + hw * _COS, y + hh * _SIN], axis=1)
    pen.fill(sclera, (250, 250, 250))
    gx = np.clip(state.gaze_x + face["gaze_x"], -1, 1) + math.sin(yaw) * 0.5
    gy = np.clip(state.gaze_y + face["gaze_y"], -1, 1)
    r_iris = 0.135 * ch.eye_size
    ix = x + float(np.clip(gx, -1, 1)) * max(0.0, hw - r_iris * fs) * 0.85
    iy = y + float(gy) * max(0.0, hh - r_iris) * 0.8
    pen.ellipse(ix, iy, r_iris * fs, r_iris, ch.eye_colour)
    pen.ellipse(ix, iy, 0.55 * r_iris * fs, 0.55 * r_iris, (15, 15, 20))
    pen.ellipse(ix + 0.35 * r_iris * fs, iy - 0.4 * r_iris, 0.25 * r_iris * fs, 0.25 * r_iris,
                (255, 255, 255))
    pen.line(sclera, outline, 0.035, closed=True)
    # upper lid: covers the eye from the top down to a (slanted) lid line
    close = float(np.clip(state.blink, 0.0, 1.0))
    slant = face["lid_slant"] * 0.5 * (-side)
    xs = np.linspace(-1.0, 1.0, 9)
    lid_top = -hh * 1.3
    lid_y = -hh + 2 * hh * close + slant * hh * xs * (1 - close) + 0.15 * hh * (1 - xs**2) * close
    lid_y = np.maximum(lid_y, -hh * 1.05)
    skin = ch.skin
    pts = np.concatenate([np.stack([x + xs * hw * 1.25, y + lid_y], 1),
                          np.array([[x + hw * 1.25, y + lid_top], [x - hw * 1.25, y + lid_top]])])
    if close > 0.02 or abs(slant) > 0.01:
        pen.fill(pts, skin)
        inside = np.clip(1 - ((lid_y) / hh) ** 2, 0.0, 1.0)
        pen.line(np.stack([x + xs * hw * np.sqrt(inside) * 1.05, y + lid_y], 1), outline,
                 0.05 if close > 0.6 else 0.035)
    # lower lid: raised by smiles and disgust (a squint)
    lower = float(np.clip(face["lower_lid"], 0.0, 0.8)) * (1 - close)
    if lower > 0.02:
        ly = hh - 2 * hh * lower * (1 - 0.5 * xs**2)
        pts = np.concatenate([np.stack([x + xs * hw * 1.25, y + ly], 1),
                              np.array([[x + hw * 1.25, y + hh * 1.3], [x - hw * 1.25, y + hh * 1.3]])])
        pen.fill(pts, skin)
        inside = np.clip(1 - (ly / hh) ** 2, 0.0, 1.0)
        pen.line(np.stack([x + xs * hw * np.sqrt(inside), y + ly], 1), outline, 0.03)
    if ch.eyelashes and close < 0.6:
        ox = x + side * hw * 0.95 * (1 if fs > 0 else -1)
        oy = y - hh * 0.45 + 2 * hh * close
        for k in range(2):
            pen.line(np.array([[ox, oy + 0.06 * k], [ox + side * 0.1, oy - 0.08 + 0.06 * k]]),
                     outline, 0.03)
    # eyebrow
    brow_up = face["brow_up"] + state.brow_raise + face["brow_asym"] * (0.5 + 0.5 * side) * 0.6
    inner_up = face["brow_inner"]
    bx = np.array([-1.0, 0.0, 1.0]) * side
    by = np.array([
        -hh - 0.1 - 0.13 * brow_up - 0.12 * inner_up,
        -hh - 0.16 - 0.14 * brow_up,
        -hh - 0.09 - 0.13 * brow_up + 0.04 * inner_up,
    ])
    brow = np.stack([x + (bx * 0.18 - side * 0.02) * max(0.3, fs) * ch.eye_size, y + by], 1)
    # inner end first: points go from the nose side outward
    pen.line(brow[::-1] if side > 0 else brow, _shade(ch.hair_colour, 0.8),
             ch.brow_thickness)


def _draw_nose(pen: _Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    x, fs = _feature_x(ch, 0.0, 0.2, yaw)
    if fs < -0.1:
        return
    y = (0.22 + pitch_dy) * b
    s = ch.nose_size
    dark = _shade(ch.skin, 0.72)
    side = abs(math.sin(yaw))
    if side > 0.6:
        tip = x / 0.93 * (1.0 + 0.12 * s) * 1.0
        base = x * 0.96
        tri = np.array([[base, y - 0.3 * s], [tip, y + 0.02], [base, y + 0.08]])
        pen.fill(tri, _shade(ch.skin, 0.95))
        pen.line(tri[:3], dark, 0.03)
        return
    kind = ch.nose
    if kind == "dot":
        pen.ellipse(x, y, 0.06 * s, 0.05 * s, dark)
    elif kind == "button":
        pen.ellipse(x, y, 0.11 * s * fs, 0.08 * s, _shade(ch.skin, 0.88))
        pen.ellipse(x - 0.04 * s, y + 0.02, 0.025, 0.02, dark)
        pen.ellipse(x + 0.04 * s, y + 0.02, 0.025, 0.02, dark)
    elif kind == "triangle":
        pen.line(np.array([[x, y - 0.22 * s], [x + 0.07 * s, y + 0.04], [x - 0.05 * s, y + 0.05]]),
                 dark, 0.03)
    elif kind == "long":
        pen.line(np.array([[x - 0.02, y - 0.3 * s], [x + 0.04, y], [x - 0.06 * s, y + 0.05]]),
                 dark, 0.035)
    else:
        pen.ellipse(x, y, 0.14 * s * fs, 0.1 * s, _shade(ch.skin, 0.85))


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


def _draw_mouth(pen: _Pen, ch: Character, face: dict, state: FrameState, yaw: float, b: float,
                pitch_dy: float, jaw_drop: float) -> None:
    x0, fs = _feature_x(ch, 0.0, 0.5, yaw)
    if fs < -0.05:
        return
    y0 = (0.52 + pitch_dy) * b * (1.0 + jaw_drop * 0.5)
    xs, upper, lower, open_ = _mouth_curves(face, state, ch, fs)
    lip = _shade(ch.lip_colour, 0.8)
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


def _draw_face_extras(pen: _Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    for side in (-1.0, 1.0):
        x, fs = _feature_x(ch, side * 0.75, 0.3, yaw)
        if fs < 0.2:
            continue
        y = (0.3 + pitch_dy) * b
        if ch.cheek_blush > 0:
            pen.ellipse(x, y, 0.16 * fs, 0.09, _mix(ch.skin, (235, 110, 120), 0.35 * ch.cheek_blush))
        if ch.freckles:
            for k in range(3):
                pen.ellipse(x + (k - 1) * 0.07 * fs, y - 0.03 * (k % 2), 0.018, 0.018,
                            _shade(ch.skin, 0.7))


def _draw_facial_hair(pen: _Pen, ch: Character, yaw: float, b: float, pitch_dy: float,
                      jaw_drop: float) -> None:
    if ch.facial_hair == "none":
        return
    x0, fs = _feature_x(ch, 0.0, 0.5, yaw)
    if fs < 0.1:
        return
    y0 = (0.52 + pitch_dy) * b * (1.0 + jaw_drop * 0.5)
    col = _shade(ch.hair_colour, 0.9)
    if ch.facial_hair == "beard":
        ys = np.linspace(0.3, 1.0, 8)
        half = _superellipse_half_width(ys, ch) * 0.98
        yy = ys * b * (1 + jaw_drop)
        right = np.stack([half * max(0.2, fs) + x0 * 0.5, yy], 1)
        left = np.stack([-half[::-1] * max(0.2, fs) + x0 * 0.5, yy[::-1]], 1)
        pen.fill(np.concatenate([right, left]), col)
    elif ch.facial_hair == "goatee":
        pen.ellipse(x0, y0 + 0.3 * b * (1 + jaw_drop), 0.15 * fs, 0.14, col)
    w = 0.28 * ch.mouth_width * fs
    pen.fill(np.array([[x0 - w, y0 - 0.02], [x0, y0 - 0.14], [x0 + w, y0 - 0.02],
                       [x0, y0 - 0.07]]), col)


def _draw_glasses(pen: _Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    if ch.glasses == "none":
        return
    col = ch.glasses_colour
    centres = []
    for side in (-1.0, 1.0):
        x, fs = _feature_x(ch, side * ch.eye_spacing, -0.05, yaw)
        if fs < 0.1:
            continue
        y = (-0.05 + pitch_dy) * b
        r = 0.25 * ch.eye_size
        if ch.glasses == "round":
            pts = np.stack([x + r * fs * _COS, y + r * _SIN], 1)
        else:
            pts = np.array([[x - r * fs, y - 0.8 * r], [x + r * fs, y - 0.8 * r],
                            [x + r * fs, y + 0.8 * r], [x - r * fs, y + 0.8 * r]])
        pen.line(pts, col, 0.05, closed=True)
        centres.append((x + (-side) * r * fs, y))
    if len(centres) == 2:
        pen.line(np.array(centres), col, 0.045)


def _head_matrix(cx: float, cy: float, scale: float, roll_deg: float, pivot_y: float):
    """Affine 2x3 matrix: head units -> pixels, rolling about the neck pivot."""
    r = math.radians(roll_deg)
    c, s = math.cos(r), math.sin(r)
    rot = np.array([[c, -s], [s, c]]) * scale
    pivot = np.array([0.0, pivot_y])
    t = np.array([cx, cy]) + rot @ (-pivot) + pivot * scale
    return np.concatenate([rot, t[:, None]], axis=1)


def _torso_sprite(ch: Character, scale: float, view: str) -> tuple[np.ndarray, np.ndarray, int, int]:
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
    body = np.array([[-0.45, 0.0], [-sw + 0.35, 0.12], [-sw, 0.5], [-sw - 0.1, 3.2],
                     [sw + 0.1, 3.2], [sw, 0.5], [sw - 0.35, 0.12], [0.45, 0.0]])
    pen = _Pen(rgb, m, scale)
    pen.fill(body, ch.clothing)
    pen_m = _Pen(mask, m, scale)
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
                        pen.fill(np.array([[x, y], [x + 0.4, y], [x + 0.4, y + 0.4],
                                           [x, y + 0.4]]), c2)
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
    np.copyto(sub, rgb[y0 - y:y1 - y, x0 - x:x1 - x],
              where=mask[y0 - y:y1 - y, x0 - x:x1 - x, None])


def _draw_wave(pen: _Pen, ch: Character, state: FrameState, b: float) -> None:
    """A waving arm on the image-right side; `pen` draws in (unrolled) body head units."""
    if state.wave <= 0.01:
        return
    lift = float(np.clip(state.wave, 0, 1))
    shoulder = np.array([0.75 * ch.shoulder_width, b + 0.55])
    rest = np.array([ch.shoulder_width + 0.2, b + 2.2])
    up = np.array([1.5 + 0.18 * math.sin(state.wave_phase), 0.1])
    hand = rest + (up - rest) * lift
    elbow = np.array([1.85, b + 0.75]) * lift + (shoulder + rest) / 2 * (1 - lift)
    pen.line(np.array([shoulder, elbow, hand]), _shade(ch.clothing, 0.9), 0.38)
    tilt = 0.35 * math.sin(state.wave_phase)
    pen.ellipse(hand[0], hand[1], 0.24, 0.28, ch.skin, angle=tilt)
    for k in range(4):
        a = tilt + (k - 1.5) * 0.3
        fx, fy = hand[0] + 0.3 * math.sin(a), hand[1] - 0.3 * math.cos(a)
        pen.ellipse(fx, fy, 0.055, 0.14, ch.skin, angle=a)
    pen.ellipse(hand[0] + 0.25, hand[1] + 0.02, 0.12, 0.06, ch.skin, angle=-0.6)


def draw_character(canvas: np.ndarray, character: Character, state: FrameState,
                   center: tuple[float, float], head_px: float) -> tuple[int, int, int, int]:
    """Draw one character in place on an RGB canvas.

    Args:
        canvas: HxWx3 uint8 RGB image, modified in place.
        center: head centre (pixels) before sway and lean.
        head_px: head half-width (pixels).

    Returns:
        The face box (x0, y0, x1, y1) in pixels, clipped to the canvas.
    """
    if state.view not in _VIEW_YAW:
        raise ValueError(f"FrameState.view must be one of {VIEWS}, got {state.view!r}")
    ch = character
    face = _blend_face(state)
    yaw = math.radians(_VIEW_YAW[state.view] + state.yaw)
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
    _paste(canvas, rgb, mask, int(round(cx - ax - 0.3 * state.sway_x * head_px)),
           int(round(neck_y - ay)))
    m = _head_matrix(cx, cy, scale, state.roll, pivot_y=b * 1.2)
    body_pen = _Pen(canvas, np.array([[head_px, 0, cx], [0, head_px, cy]]), head_px)
    body_pen.fill(np.array([[-0.32, 0.4 * b], [0.32, 0.4 * b], [0.34, b + 0.3], [-0.34, b + 0.3]]),
                  _shade(ch.skin, 0.85))
    pen = _Pen(canvas, m, scale)
    # 2. back hair, hidden ears, head
    _draw_back_hair(pen, ch, yaw, b)
    _draw_ears(pen, ch, yaw, b, front=False)
    outline = _head_outline(ch, b, jaw_drop)
    pen.fill(outline, ch.skin)
    # 3. face features (skipped automatically when facing away)
    _draw_face_extras(pen, ch, yaw, b, pitch_dy)
    _draw_facial_hair(pen, ch, yaw, b, pitch_dy, jaw_drop)
    _draw_nose(pen, ch, yaw, b, pitch_dy)
    _draw_mouth(pen, ch, face, state, yaw, b, pitch_dy, jaw_drop)
    for side in (-1.0, 1.0):
        _draw_eye(pen, ch, face, state, side, yaw, b, pitch_dy)
    _draw_glasses(pen, ch, yaw, b, pitch_dy)
    # 4. hair, visible ears, hat, hand
    _draw_hair_top(pen, ch, yaw, b, pitch_dy)
    _draw_ears(pen, ch, yaw, b, front=True)
    _draw_hat(pen, ch, yaw, b, pitch_dy)
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
                cv2.circle(img, (int((i + 0.5 * (j % 2)) * unit), int(j * unit)),
                           max(1, int(unit * 0.18)), soft, -1, _AA)
    elif pat == "checker":
        for i in range(9):
            for j in range(9):
                if (i + j) % 2:
                    cv2.rectangle(img, (int(i * unit), int(j * unit)),
                                  (int((i + 1) * unit), int((j + 1) * unit)), soft, -1)
    elif pat == "window":
        x0, y0 = int(width * 0.08), int(height * 0.1)
        cv2.rectangle(img, (x0, y0), (x0 + int(2.2 * unit), y0 + int(2.6 * unit)),
                      tuple(int(v) for v in c2), -1)
        cv2.rectangle(img, (x0, y0), (x0 + int(2.2 * unit), y0 + int(2.6 * unit)), soft,
                      max(1, int(unit * 0.15)))
        cv2.line(img, (x0 + int(1.1 * unit), y0), (x0 + int(1.1 * unit), y0 + int(2.6 * unit)),
                 soft, max(1, int(unit * 0.1)))
    elif pat == "rays":
        cx, cy = width / 2, height * 0.4
        for k in range(0, 16, 2):
            a0, a1 = k * math.pi / 8, (k + 1) * math.pi / 8
            r = 2 * max(width, height)
            pts = np.array([[cx, cy], [cx + r * math.cos(a0), cy + r * math.sin(a0)],
                            [cx + r * math.cos(a1), cy + r * math.sin(a1)]], np.int32)
            cv2.fillPoly(img, [pts], soft, _AA)
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


def contact_sheet(images: list[np.ndarray], cols: int, labels: list[str] | None = None,
                  pad: int = 2) -> np.ndarray:
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
        sheet[y:y + h, x:x + w] = im
        if labels:
            cv2.putText(sheet, labels[i][: max(4, w // 6)], (x + 1, y + h + text_h - 3),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, _AA)
    return sheet
