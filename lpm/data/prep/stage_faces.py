"""A face detector for Stage renders (cartoon faces that detectors trained on photographs miss).

Faces: a dlib FHOG sliding-window detector trained on Stage raw scenes from training identity
seeds (`train_stage_detector`, shipped as `stage_face_fhog.json`), run on frames
upscaled to at least 256 pixels. Mouth: the Stage mouth interior is drawn in one fixed dark red
(and tongue red) that skin, hair and lips avoid, so the open-mouth area is a colour count in
the lower-middle part of the face box, in face-width units. Head yaw: the horizontal offset of
that mouth from the box centre. Select it with `DetectConfig(backend="stage")`; real footage
uses mediapipe or dlib.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lpm.data.prep.detect import Face, appearance

ASSET = Path(__file__).parent / "stage_face_fhog.json"
_UPSCALE_TO = 256
"""Frames are upscaled so the shorter side is at least this many pixels before detection."""
_MOUTH_X = (0.25, 0.75)
_MOUTH_Y = (0.55, 0.98)
"""Mouth window inside the face box (fractions of its width and height)."""
_MOUTH_FULL = 0.018
"""Mouth-interior area (fraction of the squared face width) read as mouth = 1."""
_INTERIOR = np.array([70.0, 20.0, 35.0])


def _load_detector(path: Path = ASSET):
    import dlib

    blob = json.loads(path.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "det.svm"
        f.write_bytes(base64.b64decode(blob["data_base64"]))
        return dlib.simple_object_detector(str(f))


class StageFaces:
    """FHOG face detector and colour mouth meter for Stage renders."""

    name = "stage"

    def __init__(self, min_face_frac: float = 0.06) -> None:
        try:
            self._det = _load_detector()
        except ImportError as err:
            raise ImportError("detect.backend='stage' needs dlib (pip install dlib-bin)") from err
        self.min_face_frac = min_face_frac

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in one (H, W, 3) uint8 RGB frame."""
        h, w = rgb.shape[:2]
        up = max(1.0, _UPSCALE_TO / min(h, w))
        img = cv2.resize(rgb, (round(w * up), round(h * up))) if up > 1 else rgb
        faces = []
        for r in self._det(np.ascontiguousarray(img)):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], float)
            fw = box[2] - box[0]
            if fw / up < self.min_face_frac * min(h, w):
                continue
            mouth, mx = _mouth(img, box)
            yaw = float(np.clip(mx * 180.0, -60.0, 60.0))
            faces.append(
                Face(
                    box=box / up,
                    score=1.0,
                    mouth=mouth,
                    yaw=yaw,
                    roll=0.0,
                    feature=appearance(img, box),
                )
            )
        return faces


def _mouth(img: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """(opening 0..~1.5, mouth x offset from the box centre in face widths)."""
    h, w = img.shape[:2]
    fw, fh = box[2] - box[0], box[3] - box[1]
    x0, x1 = int(max(0, box[0] + _MOUTH_X[0] * fw)), int(min(w, box[0] + _MOUTH_X[1] * fw))
    y0, y1 = int(max(0, box[1] + _MOUTH_Y[0] * fh)), int(min(h, box[1] + _MOUTH_Y[1] * fh))
    if x1 <= x0 or y1 <= y0:
        return 0.0, 0.0
    win = img[y0:y1, x0:x1].astype(np.float32)
    r, g, b = win[..., 0], win[..., 1], win[..., 2]
    interior = (np.linalg.norm(win - _INTERIOR, axis=2) < 38) & (r - g >= 28) & (b - g >= 4)
    tongue = (r > 170) & (r - g > 80) & (b - g > -10) & (b - g < 40)
    mask = interior | tongue
    area = float(interior.sum() + 0.5 * tongue.sum())
    opening = float(np.clip(area / (_MOUTH_FULL * fw * fw), 0.0, 1.5))
    if mask.sum() < 2:
        return opening, 0.0
    xs = np.nonzero(mask)[1].mean() + x0
    return opening, float((xs - (box[0] + box[2]) / 2) / fw)


def train_stage_detector(out: Path, seeds: range = range(1000, 1014), size: int = 128) -> Path:
    """Train the Stage FHOG detector on raw scenes of training identities; write the asset.

    Takes about a minute on one core. Boxes are the ground-truth face boxes made square.
    """
    import dlib

    from lpm.data.stage.raw import render_raw_scene

    rng = np.random.default_rng(0)
    imgs, boxes = [], []
    k = _UPSCALE_TO / size
    for seed in seeds:
        sc = render_raw_scene(seed, seconds=30, size=size, split="train", backend="formant")
        for s in sc.truth["shots"]:
            if s["verdict"] in ("blur", "empty", "pip"):
                continue
            for f in rng.choice(np.arange(s["start_frame"], s["end_frame"]), 2, replace=False):
                rects = []
                for p in (0, 1):
                    b = sc.truth["people"][p]["face_box"][f]
                    if b is None:
                        continue
                    cx, cy = (b[0] + b[2]) * k / 2, (b[1] + b[3]) * k / 2
                    side = int(round(np.sqrt((b[2] - b[0]) * (b[3] - b[1])) * k))
                    x0, y0 = int(cx - side // 2), int(cy - side // 2)
                    rects.append(dlib.rectangle(x0, y0, x0 + side, y0 + side))
                img = cv2.resize(sc.frames[f], (_UPSCALE_TO, _UPSCALE_TO))
                imgs.append(np.ascontiguousarray(img))
                boxes.append(rects)
    opts = dlib.simple_object_detector_training_options()
    opts.add_left_right_image_flips = True
    opts.C = 5
    opts.detection_window_size = 48 * 48
    det = dlib.train_simple_object_detector(imgs, boxes, opts)
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "det.svm"
        det.save(str(f))
        blob = {
            "format": "dlib.simple_object_detector",
            "trained_on": f"Stage raw scenes, train seeds {seeds.start}-{seeds.stop - 1}",
            "window": "48x48",
            "data_base64": base64.b64encode(f.read_bytes()).decode(),
        }
    out = Path(out)
    out.write_text(json.dumps(blob))
    return out
