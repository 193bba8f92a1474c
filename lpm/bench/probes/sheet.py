"""A contact sheet of frames with the probe readings written on them (for looking, not scoring)."""

from __future__ import annotations

import cv2
import numpy as np

from lpm.bench.probes.data import FrameSet
from lpm.bench.probes.probes import StageProbes
from lpm.data.stage.schema import EXPRESSIONS

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _text(img: np.ndarray, line: str, y: int, colour: tuple[int, int, int]) -> None:
    cv2.putText(img, line, (3, y), _FONT, 0.33, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(img, line, (3, y), _FONT, 0.33, colour, 1, cv2.LINE_AA)


def readings_sheet(probes: StageProbes, fs: FrameSet, cols: int = 6, scale: int = 2) -> np.ndarray:
    """Frames of `fs` upscaled by `scale`, each with readings (top) and labels (bottom).

    Per tile: `m` mouth opening, `y` yaw (degrees), expression, `b` blink closure;
    the label line repeats them in the same order. Readings that disagree with the label are
    drawn in red.

    Returns:
        (rows * S * scale, cols * S * scale, 3) uint8 RGB, S = frame side (pixels).
    """
    if len(fs.frames) == 0 or cols < 1 or scale < 1:
        raise ValueError("readings_sheet needs frames, cols >= 1 and scale >= 1")
    r = probes.read_frames(fs.frames)
    t = fs.targets
    tiles = []
    for i, frame in enumerate(fs.frames):
        img = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        h = img.shape[0]
        ok_e = r.expression[i] == t["expression"][i] or not t["face_visible"][i]
        ok = (255, 255, 255) if ok_e else (255, 80, 80)
        _text(img, f"m{r.mouth_open[i]:.2f} y{r.yaw[i]:+.0f} b{r.blink[i]:.1f}", 11, ok)
        _text(img, EXPRESSIONS[int(r.expression[i])], 23, ok)
        label = (
            f"m{t['mouth_open'][i]:.2f} y{t['yaw'][i]:+.0f} b{t['blink'][i]:.1f} "
            f"{EXPRESSIONS[int(t['expression'][i])][:5]}"
        )
        _text(img, label, h - 5, (255, 255, 120))
        tiles.append(img)
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[k : k + cols], axis=1) for k in range(0, len(tiles), cols)]
    return np.concatenate(rows, axis=0)
