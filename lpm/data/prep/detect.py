"""Face detection backends: one `Face` per detected face and frame.

Backends (`DetectConfig.backend`):
- `mediapipe` (default, real footage): mediapipe 0.10.21's full-range face detector, then the
  468-point face mesh on each face for the mouth opening and head pose. Models ship in the wheel.
- `dlib`: dlib's HOG frontal face detector, its 68-point shape predictor and (optionally) the
  128-d face embedding, with the model files of the `face_recognition_models` package.
- `stage`: `stage_faces.StageFaces`, for Stage renders.

Units: boxes in pixels of the frame given; `mouth` is the inner-lip gap over the face height,
scaled so a wide-open mouth reads about 1; `yaw`/`roll` in degrees (yaw + toward image right).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from lpm.data.prep.config import DetectConfig


@dataclass(kw_only=True)
class Face:
    """One face in one frame."""

    box: np.ndarray
    """(4,) float x0, y0, x1, y1 in pixels."""
    score: float
    mouth: float = float("nan")
    """Mouth opening, ~0 closed .. ~1 wide open (NaN when the backend has no landmarks)."""
    yaw: float = 0.0
    """Head yaw (degrees, + toward image right)."""
    roll: float = 0.0
    """Head roll (degrees, + clockwise on screen)."""
    feature: np.ndarray | None = None
    """Identity descriptor (dlib: 128-d embedding; others: an appearance histogram)."""


class FaceBackend(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in one (H, W, 3) uint8 RGB frame."""


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(
        f"the {package!r} face backend needs {package}; install it as docs/prep.md says "
        f"({extra}), or pick another backend with detect.backend"
    )


_MESH_UPPER_LIP, _MESH_LOWER_LIP, _MESH_TOP, _MESH_CHIN = 13, 14, 10, 152
_MESH_NOSE, _MESH_LEFT_CHEEK, _MESH_RIGHT_CHEEK = 1, 234, 454
_MESH_EYE_L, _MESH_EYE_R = 33, 263


class MediapipeFaces:
    """mediapipe 0.10.21 face detection + face mesh (models inside the wheel)."""

    name = "mediapipe"

    def __init__(self, min_confidence: float = 0.5, min_face_frac: float = 0.06) -> None:
        try:
            import mediapipe as mp
        except ImportError as err:
            raise _missing("mediapipe", "pip install --no-deps mediapipe==0.10.21") from err
        sol = mp.solutions
        self._det = sol.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=min_confidence
        )
        self._mesh = sol.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, min_detection_confidence=0.3
        )
        self.min_face_frac = min_face_frac

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        res = self._det.process(np.ascontiguousarray(rgb))
        faces = []
        for d in res.detections or []:
            bb = d.location_data.relative_bounding_box
            box = np.array(
                [bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h]
            )
            if box[2] - box[0] < self.min_face_frac * min(h, w):
                continue
            face = Face(box=box, score=float(d.score[0]), feature=appearance(rgb, box))
            self._landmarks(rgb, face)
            faces.append(face)
        return faces

    def _landmarks(self, rgb: np.ndarray, face: Face) -> None:
        """Run the mesh on an enlarged crop around the face; fill mouth, yaw, roll."""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = face.box
        s = 0.5 * max(x1 - x0, y1 - y0) * 1.6
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        ax0, ay0 = int(max(0, cx - s)), int(max(0, cy - s))
        ax1, ay1 = int(min(w, cx + s)), int(min(h, cy + s))
        crop = rgb[ay0:ay1, ax0:ax1]
        if crop.shape[0] < 8 or crop.shape[1] < 8:
            return
        k = 256.0 / max(crop.shape[:2])
        crop = cv2.resize(crop, (int(crop.shape[1] * k), int(crop.shape[0] * k)))
        res = self._mesh.process(np.ascontiguousarray(crop))
        if not res.multi_face_landmarks:
            return
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(p.x * crop.shape[1], p.y * crop.shape[0]) for p in lm]) / k
        pts += [ax0, ay0]
        face.mouth, face.yaw, face.roll = mouth_pose(
            pts[_MESH_UPPER_LIP],
            pts[_MESH_LOWER_LIP],
            pts[_MESH_TOP],
            pts[_MESH_CHIN],
            pts[_MESH_NOSE],
            pts[_MESH_LEFT_CHEEK],
            pts[_MESH_RIGHT_CHEEK],
            pts[_MESH_EYE_L],
            pts[_MESH_EYE_R],
        )


def mouth_pose(upper, lower, top, chin, nose, left, right, eye_l, eye_r):
    """(mouth, yaw, roll) from 2-D landmark points (pixels).

    mouth: inner-lip gap over face height, x4 (a wide-open mouth is ~1). yaw: from where the
    nose tip sits between the face sides (0 centred, +-90 at a side). roll: eye-line angle.
    """
    face_h = max(float(np.linalg.norm(np.subtract(chin, top))), 1e-6)
    mouth = 4.0 * float(np.linalg.norm(np.subtract(lower, upper))) / face_h
    span = float(right[0] - left[0])
    rel = (float(nose[0]) - float(left[0])) / span if abs(span) > 1e-6 else 0.5
    yaw = float(np.degrees(np.arcsin(np.clip(2.0 * rel - 1.0, -1.0, 1.0))))
    roll = float(np.degrees(np.arctan2(eye_r[1] - eye_l[1], eye_r[0] - eye_l[0])))
    return mouth, yaw, roll


def dlib_model_dir() -> Path:
    """Folder of the `face_recognition_models` .dat files (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        raise _missing("face_recognition_models", "pip install face_recognition_models")
    return Path(spec.origin).parent / "models"


class DlibFaces:
    """dlib HOG detector + 68 landmarks (+ 128-d embeddings when `embeddings`)."""

    name = "dlib"

    def __init__(self, min_face_frac: float = 0.06, embeddings: bool = False) -> None:
        try:
            import dlib
        except ImportError as err:
            raise _missing("dlib", "pip install dlib-bin") from err
        models = dlib_model_dir()
        self._det = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self._embed = (
            dlib.face_recognition_model_v1(
                str(models / "dlib_face_recognition_resnet_model_v1.dat")
            )
            if embeddings
            else None
        )
        self._rect = dlib.rectangle
        self.min_face_frac = min_face_frac

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        img = np.ascontiguousarray(rgb)
        up = 1 if min(h, w) < 400 else 0
        faces = []
        rects, scores, _ = self._det.run(img, up, 0.0)
        for r, sc in zip(rects, scores, strict=True):
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], float)
            if box[2] - box[0] < self.min_face_frac * min(h, w):
                continue
            shape = self._shape(img, r)
            p = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], float)
            mouth, yaw, roll = mouth_pose(
                p[62], p[66], (p[19] + p[24]) / 2, p[8], p[30], p[0], p[16], p[36], p[45]
            )
            feat = appearance(img, box)
            if self._embed is not None:
                feat = np.asarray(self._embed.compute_face_descriptor(img, shape), np.float32)
            faces.append(
                Face(
                    box=box,
                    score=float(1 / (1 + np.exp(-sc))),
                    mouth=mouth,
                    yaw=yaw,
                    roll=roll,
                    feature=feat,
                )
            )
        return faces


def appearance(img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A 48-d colour descriptor (hue/saturation histogram of the face box) for re-id."""
    h, w = img.shape[:2]
    x0, y0 = int(max(0, box[0])), int(max(0, box[1]))
    x1, y1 = int(min(w, box[2])), int(min(h, box[3]))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros(48, np.float32)
    hsv = cv2.cvtColor(np.ascontiguousarray(img[y0:y1, x0:x1]), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [12, 4], [0, 180, 0, 256]).ravel()
    return (hist / max(hist.sum(), 1.0)).astype(np.float32)


def make_backend(cfg: DetectConfig) -> FaceBackend:
    """The face backend a config names (models load here, once per process)."""
    if cfg.backend == "mediapipe":
        return MediapipeFaces(cfg.min_confidence, cfg.min_face_frac)
    if cfg.backend == "dlib":
        return DlibFaces(cfg.min_face_frac, cfg.embeddings)
    from lpm.data.prep.stage_faces import StageFaces

    return StageFaces(cfg.min_face_frac)


def detect_frames(frames: np.ndarray, backend: FaceBackend) -> list[list[Face]]:
    """Faces of every frame of (T, H, W, 3) uint8 RGB frames."""
    return [backend.detect(f) for f in frames]
