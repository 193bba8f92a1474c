"""Drawing primitives and head geometry shared by the Stage renderer.

Shapes are written in head units (head half-width = 1, y down) and mapped to pixels by an
affine matrix; OpenCV draws them anti-aliased with 1/16-pixel precision.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from lpm.data.stage.character import Character

_SHIFT = 4
_ONE = 1 << _SHIFT
AA = cv2.LINE_AA
VIEW_YAW = {"front": 0.0, "left": -90.0, "right": 90.0, "back": 180.0}
_T = np.linspace(0.0, 2.0 * math.pi, 40, endpoint=False)
COS, SIN = np.cos(_T), np.sin(_T)


def shade(colour: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    """Darken (k < 1) or lighten (k > 1) a colour."""
    if k <= 1.0:
        return tuple(int(c * k) for c in colour)  # type: ignore[return-value]
    return tuple(int(c + (255 - c) * (k - 1.0)) for c in colour)  # type: ignore[return-value]


def mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


class Pen:
    """Maps head-unit points to fixed-point pixels and draws filled/stroked shapes."""

    def __init__(self, img: np.ndarray, matrix: np.ndarray, scale_px: float) -> None:
        self.img = img
        self.m = matrix
        self.scale_px = scale_px

    def px(self, pts: np.ndarray) -> np.ndarray:
        out = pts @ self.m[:, :2].T + self.m[:, 2]
        return np.round(out * _ONE).astype(np.int32)

    def fill(self, pts: np.ndarray, colour) -> None:
        cv2.fillPoly(self.img, [self.px(pts)], colour, AA, _SHIFT)

    def line(self, pts: np.ndarray, colour, width: float, closed: bool = False) -> None:
        thickness = max(1, int(round(width * self.scale_px)))
        cv2.polylines(self.img, [self.px(pts)], closed, colour, thickness, AA, _SHIFT)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, colour, angle: float = 0.0):
        if rx <= 0 or ry <= 0:
            return
        if angle:
            c, s = math.cos(angle), math.sin(angle)
            pts = np.stack(
                [cx + rx * COS * c - ry * SIN * s, cy + rx * COS * s + ry * SIN * c], axis=1
            )
        else:
            pts = np.stack([cx + rx * COS, cy + ry * SIN], axis=1)
        self.fill(pts, colour)


def half_width(y: np.ndarray, character: Character) -> np.ndarray:
    """Head half-width at normalised height y in [-1, 1] (head units)."""
    n = {"square": 3.2, "pear": 2.6, "long": 2.4}.get(character.head_shape, 2.0)
    base = np.power(np.clip(1.0 - np.abs(y) ** n, 0.0, 1.0), 1.0 / n)
    taper = np.where(y > 0, 1.0 + (character.jaw - 1.0) * np.clip(y, 0, 1) ** 1.5, 1.0)
    return base * taper


_Y_OUTLINE = -np.cos(np.linspace(0.0, math.pi, 24))


def head_outline(character: Character, b: float, jaw_drop: float, grow: float = 1.0):
    y = _Y_OUTLINE
    x = half_width(y, character) * grow
    yy = y * b * grow
    yy = np.where(yy > 0, yy * (1.0 + jaw_drop), yy)
    right = np.stack([x, yy], axis=1)
    left = np.stack([-x[::-1], yy[::-1]], axis=1)
    return np.concatenate([right, left], axis=0)


def feature_x(character: Character, lam: float, y_norm: float, yaw: float) -> tuple[float, float]:
    """Screen x (head units) and foreshortening of a surface point at longitude `lam`."""
    phi = lam + yaw
    half = float(half_width(np.array([y_norm]), character)[0])
    return 0.93 * half * math.sin(phi), math.cos(phi)


def head_matrix(cx: float, cy: float, scale: float, roll_deg: float, pivot_y: float):
    """Affine 2x3 matrix: head units -> pixels, rolling about the neck pivot."""
    r = math.radians(roll_deg)
    c, s = math.cos(r), math.sin(r)
    rot = np.array([[c, -s], [s, c]]) * scale
    pivot = np.array([0.0, pivot_y])
    t = np.array([cx, cy]) + rot @ (-pivot) + pivot * scale
    return np.concatenate([rot, t[:, None]], axis=1)
