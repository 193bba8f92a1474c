"""Hair, hats and ears. A hairstyle is a hairline on the head ellipsoid (a height per
longitude), so the same description draws the front, profile and back views.
"""

from __future__ import annotations

import math

import numpy as np

from lpm.data.stage.character import Character
from lpm.data.stage.pen import Pen, feature_x, half_width, mix, shade

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


def _cap_polygon(
    character: Character, style: str, yaw: float, b: float, grow: float, pitch_dy: float
) -> np.ndarray | None:
    """Hair (or hat) region on the visible head: silhouette over the top + hairline curve."""
    lam = _PHI - yaw
    lam = (lam + math.pi) % (2 * math.pi) - math.pi
    h = np.clip(_hairline(style, lam) + pitch_dy * np.cos(lam), -0.98, 0.98)
    if style == "mohawk":
        h = np.where(np.abs(lam) < 0.3, h, -0.999)
    if np.all(h <= -0.97):
        return None
    widen = 1.0 + (grow - 1.0) * np.abs(np.sin(_PHI))
    xs = half_width(h, character) * np.sin(_PHI) * widen
    hair_line = np.stack([xs, h * b], axis=1)[::-1]
    y_left, y_right = h[0], h[-1]
    ys_left = np.linspace(y_left, -1.0, 10)
    ys_right = np.linspace(-1.0, y_right, 10)
    left = np.stack([-half_width(ys_left, character) * grow, ys_left * b * grow], 1)
    right = np.stack([half_width(ys_right, character) * grow, ys_right * b * grow], 1)
    return np.concatenate([left, right, hair_line], axis=0)


def draw_back_hair(pen: Pen, ch: Character, yaw: float, b: float) -> None:
    col = ch.hair_colour
    style = ch.hair_style
    if style == "long":
        pts = np.array(
            [[-1.2, -0.6 * b], [-1.25, 1.3 * b], [1.25, 1.3 * b], [1.2, -0.6 * b], [0.0, -1.2 * b]]
        )
        pen.fill(pts, shade(col, 0.8))
    elif style == "bob":
        pen.ellipse(0.0, 0.05 * b, 1.17, 0.95 * b, shade(col, 0.85))
    elif style == "afro":
        pen.ellipse(0.0, -0.25 * b, 1.45, 1.15 * b, col)
    elif style == "curly":
        for k in range(14):
            a = 2 * math.pi * k / 14
            pen.ellipse(1.05 * math.cos(a), -0.15 * b + 0.95 * b * math.sin(a) * 0.9, 0.3, 0.3, col)
    elif style in ("bun", "ponytail"):
        sx, _ = feature_x(ch, math.pi, -0.2, yaw)
        if style == "bun":
            pen.ellipse(0.55 * sx, -1.0 * b, 0.42, 0.38, col)
        else:
            side = 1.0 if math.sin(yaw) <= 0 else -1.0
            off = 0.9 * abs(math.sin(yaw)) * side + 0.25 * (1 - abs(math.sin(yaw))) * side
            pen.ellipse(off, 0.45 * b, 0.28, 0.75 * b, shade(col, 0.9), angle=0.2 * side)


def draw_hair_top(pen: Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    style = ch.hair_style
    if style == "bald":
        return
    col = ch.hair_colour if style != "buzz" else mix(ch.skin, ch.hair_colour, 0.7)
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
            tri = np.array(
                [[x0 - 0.16, y0 + 0.1], [x0 + 0.05 * u, y0 - 0.42], [x0 + 0.16, y0 + 0.1]]
            )
            pen.fill(tri, col)
    if style == "afro":
        pen.ellipse(0.0, -0.72 * b, 1.05, 0.5 * b, col)


def draw_hat(pen: Pen, ch: Character, yaw: float, b: float, pitch_dy: float) -> None:
    col = ch.hat_colour
    if ch.hat == "none":
        return
    if ch.hat in ("cap", "beanie"):
        cap = _cap_polygon(ch, "_" + ch.hat, yaw, b, 1.1, pitch_dy)
        if cap is not None:
            pen.fill(cap, col)
            pen.line(cap[-21:], shade(col, 0.7), 0.07)
        if ch.hat == "cap" and math.cos(yaw) > -0.3:
            bx, fs = feature_x(ch, 0.0, -0.5, yaw)
            pen.ellipse(
                bx * 1.15, (-0.5 + pitch_dy) * b, 0.75 * max(0.35, abs(fs)), 0.16, shade(col, 0.8)
            )
    elif ch.hat == "headband":
        lam = _PHI - yaw
        h = np.full_like(_PHI, -0.62) + pitch_dy * np.cos(lam)
        xs = half_width(h, ch) * np.sin(_PHI) * 1.02
        pen.line(np.stack([xs, h * b], 1), col, 0.16)
    elif ch.hat == "bow":
        x0, y0 = 0.55, -0.85 * b
        pen.fill(np.array([[x0, y0], [x0 - 0.35, y0 - 0.22], [x0 - 0.35, y0 + 0.22]]), col)
        pen.fill(np.array([[x0, y0], [x0 + 0.35, y0 - 0.22], [x0 + 0.35, y0 + 0.22]]), col)
        pen.ellipse(x0, y0, 0.1, 0.1, shade(col, 0.7))


def draw_ears(pen: Pen, ch: Character, yaw: float, b: float, front: bool) -> None:
    for side in (-1.0, 1.0):
        lam = side * math.pi / 2
        depth = math.cos(lam + yaw)
        if (depth > 0.25) != front:
            continue
        x, _ = feature_x(ch, lam, 0.05, yaw)
        x = x / 0.93 * (1.0 if front else 1.02)
        rx = 0.17 * ch.ear_size * max(0.45, abs(math.sin(lam + yaw)) if not front else 0.8)
        ry = 0.25 * ch.ear_size
        pen.ellipse(x, 0.08 * b, rx, ry, shade(ch.skin, 0.93))
        pen.ellipse(x, 0.08 * b, rx * 0.5, ry * 0.55, shade(ch.skin, 0.8))
        if ch.earrings:
            pen.ellipse(x, 0.08 * b + ry * 1.1, 0.07, 0.07, (240, 200, 60))
