"""Metric backends: networks that read per-frame signals out of video frames.

Every metric reads a `Readings` (mouth opening, head pose, blink, expression and action
probabilities, identity embeddings, visual features per frame). Backends:

- `StageBackend`: the Stage probes (`lpm.bench.probes`), for Stage suites; reads everything.
- `RealFaceBackend`: real faces. Landmarks from MediaPipe Face Mesh (optional import) give mouth
  opening, head pose, blink and the face box; identity comes from an `IdentityEmbedder` (ArcFace
  on faces aligned by 5 landmarks, or dlib's face-recognition model when dlib is installed);
  visual features from a `FeatureExtractor` (I3D); lip sync from a `SyncNetScorer` on face crops.
  Signals a backend cannot read stay None and their metrics report n/a.
- External networks load from local files only (`load_network`): their released state dicts
  (`lpm.bench.nets`: insightface IResNet, pytorch-i3d, SyncNet) or TorchScript archives;
  nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from lpm.bench.avsync import SyncNetScorer

CHUNK_FRAMES = 512
"""Frames read per backend call (bounds memory on long videos)."""


@dataclass(kw_only=True)
class Readings:
    """Per-frame readings of one video; arrays have length T (angles in degrees)."""

    mouth_open: np.ndarray | None = None
    """0 closed .. 1 wide open (scale is backend-specific; metrics use it relatively)."""
    yaw: np.ndarray | None = None
    pitch: np.ndarray | None = None
    roll: np.ndarray | None = None
    blink: np.ndarray | None = None
    """Eyelid closure 0 open .. 1 closed."""
    expression_probs: np.ndarray | None = None
    """(T, 8) probabilities over `schema.EXPRESSIONS`."""
    action_probs: np.ndarray | None = None
    """(T, 9) probabilities over `schema.ACTIONS`."""
    identity: np.ndarray | None = None
    """(T, E) unit-norm identity embeddings."""
    features: np.ndarray | None = None
    """(T, F) visual features for the Fréchet distance."""
    brightness: np.ndarray | None = None
    """(T,) mean luma (0..255), for flicker; filled by `read_video_frames`."""
    pixel_motion: np.ndarray | None = None
    """(T,) mean absolute frame difference to the previous frame (0..255; 0 at t=0)."""
    face_box: np.ndarray | None = None
    """(T, 4) face box x0, y0, x1, y1 in pixels (NaN rows: no face found)."""

    @property
    def num_frames(self) -> int:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                return int(len(v))
        return 0

    @staticmethod
    def concat(parts: list[Readings]) -> Readings:
        out = {}
        for f in fields(Readings):
            vals = [getattr(p, f.name) for p in parts]
            out[f.name] = None if any(v is None for v in vals) else np.concatenate(vals)
        return Readings(**out)

    def slice(self, start: int, stop: int) -> Readings:
        return Readings(
            **{
                f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[start:stop]
                for f in fields(self)
            }
        )


class Backend(Protocol):
    """Reads frames (T, H, W, 3) uint8 RGB at `fps` into `Readings`."""

    name: str
    syncnet: SyncNetScorer | None
    """Scores lip sync on the video's face crops (needs `Readings.face_box`), or None."""

    def read(self, frames: np.ndarray, fps: float) -> Readings: ...

    def embed(self, images: np.ndarray) -> np.ndarray | None:
        """(N, E) unit-norm identity embeddings of (N, H, W, 3) images, or None."""
        ...


def pixel_stats(frames: np.ndarray, prev: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Mean luma per frame and mean absolute difference to the previous frame (both 0..255)."""
    x = frames.astype(np.float32)
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = luma.mean(axis=(1, 2))
    before = np.concatenate([luma[:1] if prev is None else prev[None], luma[:-1]])
    motion = np.abs(luma - before).mean(axis=(1, 2))
    return bright, motion


def read_all(backend: Backend, frames: np.ndarray | Iterator[np.ndarray], fps: float) -> Readings:
    """Read a whole video (an array, or an iterator of frame chunks) in `CHUNK_FRAMES` pieces."""
    chunks = (
        (frames[i : i + CHUNK_FRAMES] for i in range(0, len(frames), CHUNK_FRAMES))
        if isinstance(frames, np.ndarray)
        else frames
    )
    parts, prev = [], None
    for chunk in chunks:
        r = backend.read(chunk, fps)
        r.brightness, r.pixel_motion = pixel_stats(chunk, prev)
        prev = chunk[-1].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        parts.append(r)
    if not parts:
        raise ValueError("the video has no frames")
    return Readings.concat(parts)


def iter_video(path: Path, chunk: int = CHUNK_FRAMES) -> tuple[Iterator[np.ndarray], float]:
    """Frames of a video file as chunks of (<= chunk, H, W, 3) uint8 RGB, and its fps."""
    import av

    if not Path(path).is_file():
        raise FileNotFoundError(f"video {path} does not exist")
    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    stream = container.streams.video[0]
    fps = float(stream.average_rate or 0) or 24.0

    def gen() -> Iterator[np.ndarray]:
        buf = []
        try:
            for frame in container.decode(stream):
                buf.append(frame.to_ndarray(format="rgb24"))
                if len(buf) == chunk:
                    yield np.stack(buf)
                    buf = []
            if buf:
                yield np.stack(buf)
        finally:
            container.close()

    return gen(), fps


# --- Stage probes -------------------------------------------------------------------------------


class StageBackend:
    """The Stage probes: every reading, for Stage-style portraits."""

    name = "stage-probes"
    syncnet = None

    def __init__(self, probes=None) -> None:
        if probes is None:
            from lpm.bench.probes import load_probes

            probes = load_probes()
        self.probes = probes

    def read(self, frames: np.ndarray, fps: float) -> Readings:
        fr = self.probes.read_frames(frames)
        feats = self.probes.frame_features(frames)
        cfg = self.probes.config
        n, w = feats.shape[0], cfg.action_window
        rate = cfg.action_fps / float(fps)
        offsets = np.arange(w) - w // 2
        idx = np.round(np.arange(n)[:, None] + offsets[None, :] / rate).astype(np.int64)
        actions = self.probes.classify_windows(feats[np.clip(idx, 0, n - 1)])
        return Readings(
            mouth_open=fr.mouth_open,
            yaw=fr.yaw,
            pitch=fr.pitch,
            roll=fr.roll,
            blink=fr.blink,
            expression_probs=fr.expression_probs,
            action_probs=actions.probs,
            identity=fr.identity,
            features=feats,
        )

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.probes.identity_embedding(images)


# --- external networks --------------------------------------------------------------------------


def load_scripted(path: str | Path, what: str) -> torch.jit.ScriptModule:
    """Load a TorchScript module from a local file (`torch.jit.save` output), in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} weights {path} do not exist; export the network with "
            "torch.jit.script(model).save(path) and pass that file"
        )
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any load error becomes one clear message
        raise ValueError(f"{path} is not a TorchScript file ({what}): {err}") from None
    return module.eval()


def load_network(path: str | Path, kind: str) -> nn.Module:
    """A network from a local file: a TorchScript archive, or released weights of `kind`
    (`arcface`: insightface IResNet `backbone.pth`; `i3d`: pytorch-i3d `rgb_imagenet.pt`;
    `syncnet`: `syncnet_v2.model`; or the same tensors as `.safetensors`)."""
    from lpm.bench.nets import load_arcface, load_i3d, load_syncnet
    from lpm.bench.nets.checkpoint import is_torchscript

    loaders = {"arcface": load_arcface, "i3d": load_i3d, "syncnet": load_syncnet}
    if kind not in loaders:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {sorted(loaders)}")
    path = Path(path)
    if kind != "syncnet" and path.is_file() and is_torchscript(path):
        return load_scripted(path, kind)
    return loaders[kind](path)


def _resize(frames: np.ndarray, side: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, side, side) float in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return x / 127.5 - 1.0


def face_points5(lm: np.ndarray) -> np.ndarray:
    """(5, 2) eye centres, nose tip and mouth corners (image left first) from Face Mesh points."""
    return np.stack(
        [
            (lm[33] + lm[133]) / 2,
            (lm[362] + lm[263]) / 2,
            lm[1],
            lm[61],
            lm[291],
        ]
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (rotation, uniform scale, shift) taking src onto dst."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    flip = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ flip @ vt
    scale = float((sig * np.diag(flip)).sum() / ((s0**2).sum() / len(src)))
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align_face(rgb: np.ndarray, points5: np.ndarray, side: int = 112) -> np.ndarray:
    """(side, side, 3) crop with the 5 points moved onto ArcFace's template (scaled to side)."""
    import cv2

    from lpm.bench.nets.arcface import ARCFACE_TEMPLATE, INPUT_SIZE

    m = similarity_transform(points5.astype(np.float64), ARCFACE_TEMPLATE * side / INPUT_SIZE)
    return cv2.warpAffine(rgb, m, (side, side), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))


class IdentityEmbedder:
    """ArcFace-style embedder: a network (N, 3, side, side) RGB in [-1, 1] -> (N, E).

    Args:
        network: a module, or a local file for `load_network(..., "arcface")` (insightface
            `backbone.pth`, safetensors, or TorchScript).
    """

    def __init__(
        self, network: str | Path | nn.Module, input_size: int = 112, batch: int = 64
    ) -> None:
        self.module = (
            network if isinstance(network, nn.Module) else load_network(network, "arcface")
        )
        self.module.eval()
        self.input_size, self.batch = input_size, batch

    def _inputs(
        self, images: np.ndarray, landmarks: list[np.ndarray | None] | None
    ) -> torch.Tensor:
        """(N, 3, side, side) network inputs: aligned faces where landmarks exist, else resized."""
        if landmarks is None:
            return _resize(images, self.input_size)
        side = self.input_size
        return torch.cat(
            [
                _resize(
                    (img if lm is None else align_face(img, face_points5(lm), side))[None], side
                )
                for img, lm in zip(images, landmarks, strict=True)
            ]
        )

    @torch.no_grad()
    def __call__(
        self, images: np.ndarray, landmarks: list[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(N, E) unit-norm embeddings of (N, H, W, 3) uint8 RGB images.

        With `landmarks` (Face Mesh points per image), each face is first aligned to the
        5-point template, the input ArcFace was trained on; an image without landmarks (or all
        of them when none are given: crops that are already aligned) is resized whole.
        """
        x = self._inputs(images, landmarks)
        outs = [self.module(x[i : i + self.batch]) for i in range(0, len(x), self.batch)]
        e = torch.cat(outs).float()
        return F.normalize(e.reshape(e.shape[0], -1), dim=-1).numpy()


class FeatureExtractor:
    """I3D video features: a network (B, 3, clip, side, side) RGB in [-1, 1] -> (B, F).

    Each frame gets the feature of the clip of `clip` frames centred on it, evaluated every
    `stride` frames and held in between.

    Args:
        network: a module, or a local file for `load_network(..., "i3d")` (pytorch-i3d
            `rgb_imagenet.pt`, safetensors, or TorchScript).
    """

    def __init__(
        self,
        network: str | Path | nn.Module,
        input_size: int = 224,
        clip: int = 16,
        stride: int = 8,
    ) -> None:
        self.module = network if isinstance(network, nn.Module) else load_network(network, "i3d")
        self.module.eval()
        self.input_size, self.clip, self.stride = input_size, clip, stride

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = _resize(frames, self.input_size)  # (T, 3, s, s)
        n = x.shape[0]
        centres = list(range(0, n, self.stride))
        feats = []
        for c in centres:
            idx = np.clip(np.arange(c - self.clip // 2, c - self.clip // 2 + self.clip), 0, n - 1)
            feats.append(self.module(x[idx].permute(1, 0, 2, 3)[None]).reshape(-1))
        f = torch.stack(feats).numpy()
        return f[np.minimum(np.arange(n) // self.stride, len(centres) - 1)]


# --- real faces ---------------------------------------------------------------------------------

_MOUTH = (13, 14)  # inner upper / lower lip (MediaPipe Face Mesh indices)
_FACE = (10, 152)  # forehead top / chin
_EYES = ((159, 145, 33, 133), (386, 374, 362, 263))  # upper, lower, outer corner, inner corner
_POSE_POINTS = (1, 152, 33, 263, 61, 291)  # nose tip, chin, eye corners, mouth corners
_POSE_MODEL = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.0, -63.6, -12.5],
        [-43.3, 32.7, -26.0],
        [43.3, 32.7, -26.0],
        [-28.9, -28.9, -24.1],
        [28.9, -28.9, -24.1],
    ]
)


def landmark_readings(lm: np.ndarray, width: int, height: int) -> dict[str, float]:
    """Mouth opening, blink and head pose (degrees) from one face's (468+, 2) pixel landmarks."""
    import cv2

    face_h = np.linalg.norm(lm[_FACE[0]] - lm[_FACE[1]]) + 1e-6
    mouth = float(np.clip(np.linalg.norm(lm[_MOUTH[0]] - lm[_MOUTH[1]]) / face_h * 4.0, 0, 1))
    ears = [
        np.linalg.norm(lm[u] - lm[d]) / (np.linalg.norm(lm[o] - lm[i]) + 1e-6)
        for u, d, o, i in _EYES
    ]
    blink = float(np.clip(1.0 - np.mean(ears) / 0.3, 0, 1))
    f = float(max(width, height))
    cam = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    ok, rvec, _ = cv2.solvePnP(_POSE_MODEL, lm[list(_POSE_POINTS)].astype(np.float64), cam, None)
    yaw = pitch = roll = 0.0
    if ok:
        rot, _ = cv2.Rodrigues(rvec)
        angles = cv2.RQDecomp3x3(rot)[0]
        pitch, yaw, roll = (float(a) for a in angles)
    return {"mouth_open": mouth, "blink": blink, "yaw": yaw, "pitch": pitch, "roll": roll}


class RealFaceBackend:
    """Real-face readings: MediaPipe landmarks (+ optional identity, feature and sync networks).

    Frames without a face hold the previous frame's landmarks (readings and alignment); their
    face box is NaN, so SyncNet interpolates the crop track instead.
    """

    name = "real-face"

    def __init__(
        self,
        identity: IdentityEmbedder | None = None,
        features: FeatureExtractor | None = None,
        landmarker=None,
        syncnet: SyncNetScorer | None = None,
    ) -> None:
        self.identity, self.features, self.syncnet = identity, features, syncnet
        self.landmarker = landmarker if landmarker is not None else _mediapipe_landmarker()

    def _identity(
        self, images: np.ndarray, landmarks: list[np.ndarray | None] | None = None
    ) -> np.ndarray:
        if not isinstance(self.identity, IdentityEmbedder):
            return self.identity(images)  # embedders with their own face detection (dlib)
        if landmarks is None:
            landmarks = [self.landmarker(img) for img in images]
        return self.identity(images, landmarks)

    def read(self, frames: np.ndarray, fps: float) -> Readings:
        h, w = frames.shape[1:3]
        rows, held, boxes = [], [], []
        last = {"mouth_open": 0.0, "blink": 0.0, "yaw": 0.0, "pitch": 0.0, "roll": 0.0}
        last_lm = None
        for rgb in frames:
            lm = self.landmarker(rgb)
            boxes.append([np.nan] * 4 if lm is None else [*lm.min(0), *lm.max(0)])
            if lm is not None:
                last, last_lm = landmark_readings(lm, w, h), lm
            rows.append(last)
            held.append(last_lm)
        col = lambda k: np.array([r[k] for r in rows], np.float32)
        return Readings(
            mouth_open=col("mouth_open"),
            blink=col("blink"),
            yaw=col("yaw"),
            pitch=col("pitch"),
            roll=col("roll"),
            identity=self._identity(frames, held) if self.identity else None,
            features=self.features(frames) if self.features else None,
            face_box=np.asarray(boxes, np.float32),
        )

    def embed(self, images: np.ndarray) -> np.ndarray | None:
        return self._identity(images) if self.identity else None


def _mediapipe_landmarker():
    """A function RGB frame -> (468, 2) pixel landmarks or None, from MediaPipe Face Mesh."""
    try:
        import mediapipe as mp
    except Exception as err:  # noqa: BLE001 - a broken install fails like a missing one
        raise ImportError(
            f"the real-face backend needs MediaPipe (`pip install mediapipe`); "
            f"importing it failed: {err}"
        ) from None
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)

    def landmarks(rgb: np.ndarray) -> np.ndarray | None:
        res = mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        pts = res.multi_face_landmarks[0].landmark
        return np.array([[p.x * w, p.y * h] for p in pts], np.float64)

    return landmarks


class DlibEmbedder:
    """dlib's face-recognition ResNet (optional import): (N, H, W, 3) -> (N, 128) unit-norm.

    Args:
        predictor: path of `shape_predictor_5_face_landmarks.dat`.
        model: path of `dlib_face_recognition_resnet_model_v1.dat`.
    """

    def __init__(self, predictor: str | Path, model: str | Path) -> None:
        try:
            import dlib
        except Exception as err:  # noqa: BLE001
            raise ImportError(f"DlibEmbedder needs dlib (`pip install dlib`): {err}") from None
        for p in (predictor, model):
            if not Path(p).is_file():
                raise FileNotFoundError(f"dlib model file {p} does not exist")
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(predictor))
        self.net = dlib.face_recognition_model_v1(str(model))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        out = []
        for rgb in images:
            boxes = self.detector(rgb, 0)
            if not boxes:
                out.append(np.zeros(128))
                continue
            desc = np.asarray(self.net.compute_face_descriptor(rgb, self.shape(rgb, boxes[0])))
            out.append(desc / (np.linalg.norm(desc) + 1e-8))
        return np.stack(out).astype(np.float32)


def identity_code(identity_seed: int, dim: int = 32) -> np.ndarray:
    """A fixed unit vector per identity seed (the label oracle's identity embedding)."""
    v = np.random.default_rng(int(identity_seed)).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def readings_from_labels(labels: dict[str, list]) -> Readings:
    """Exact `Readings` from Stage labels (an oracle backend: what perfect probes would read).

    Used to validate the metrics themselves; classes become one-hot probabilities and the
    identity seed becomes `identity_code(seed)`.
    """
    from lpm.data.stage.schema import ACTIONS, EXPRESSIONS

    f = lambda k: np.asarray(labels[k], np.float32)
    onehot = lambda names, vocab: np.eye(len(vocab), dtype=np.float32)[
        [vocab.index(n) for n in names]
    ]
    return Readings(
        mouth_open=f("mouth_open"),
        yaw=f("head_yaw"),
        pitch=f("head_pitch"),
        roll=f("head_roll"),
        blink=f("blink"),
        expression_probs=onehot(labels["expression"], EXPRESSIONS),
        action_probs=onehot(labels["action"], ACTIONS),
        identity=np.stack([identity_code(s) for s in labels["identity"]]),
    )
