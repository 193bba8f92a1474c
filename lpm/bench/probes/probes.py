"""`StageProbes`: read mouth, head pose, expression, blink, identity and action from frames.

The probes are the automatic eyes of the benchmark: they read Stage-style portraits (rendered or
generated) of any size, resizing them to the trunk's input side. Frames are uint8 RGB arrays of
shape (N, H, W, 3) (or a single (H, W, 3) frame). `load_probes()` loads the weights shipped in
`lpm/bench/probes/weights/`; `save_probes` writes the same format (fp16 safetensors + JSON card).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lpm.bench.probes.config import BranchConfig, ProbeConfig
from lpm.bench.probes.model import AUX_FIELDS, POSE_SCALE_DEG, ActionProbeNet, FrameProbeNet
from lpm.data.stage.schema import ACTIONS, EXPRESSIONS

WEIGHTS_DIR = Path(__file__).parent / "weights"
"""Directory of the shipped probe weights."""
WEIGHTS_NAME = "probes.safetensors"
CARD_NAME = "card.json"
BLINK_THRESHOLD = 0.5
"""Eyelid closure above which a frame counts as a blink."""


def to_probe_input(frames: np.ndarray | torch.Tensor, size: int) -> torch.Tensor:
    """Validate uint8 RGB frames and turn them into the trunk input.

    Args:
        frames: (N, H, W, 3) or (H, W, 3) uint8 RGB, H and W >= 16 pixels.
        size: trunk input side (pixels); frames are resized (antialiased bilinear) to size x size.

    Returns:
        (N, 3, size, size) float32 in [-0.5, 0.5].
    """
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy uint8 array (N, H, W, 3), got {type(frames)}")
    if frames.dtype != np.uint8:
        raise ValueError(
            f"frames must have dtype uint8 (0..255 RGB), got {frames.dtype}; "
            "convert with np.clip(x * 255, 0, 255).astype(np.uint8) for [0, 1] floats"
        )
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must have shape (N, H, W, 3) or (H, W, 3) with 3 RGB channels, "
            f"got {frames.shape}"
        )
    if frames.shape[1] < 16 or frames.shape[2] < 16:
        raise ValueError(f"frames must be at least 16x16 pixels, got {frames.shape[1:3]}")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return x / 255.0 - 0.5


@dataclass
class FrameReadings:
    """Per-frame readings; every array has length N (angles in degrees)."""

    mouth_open: np.ndarray
    """Visible mouth opening, 0 (closed) .. 1 (wide open)."""
    yaw: np.ndarray
    """Head yaw in (-180, 180]; 0 faces the camera, + turns toward image right."""
    pitch: np.ndarray
    """Head pitch (+ looks up), including the expression's tilt."""
    roll: np.ndarray
    """Head roll (+ clockwise on screen)."""
    blink: np.ndarray
    """Eyelid closure, 0 (open) .. 1 (closed)."""
    blinking: np.ndarray
    """bool: `blink > BLINK_THRESHOLD`."""
    expression: np.ndarray
    """int64 index into `schema.EXPRESSIONS`."""
    expression_probs: np.ndarray
    """(N, 8) class probabilities."""
    brow_raise: np.ndarray
    lean: np.ndarray
    wave: np.ndarray
    gaze_x: np.ndarray
    gaze_y: np.ndarray
    mouth_round: np.ndarray
    identity: np.ndarray
    """(N, E) unit-norm identity embeddings (compare with cosine similarity)."""

    def as_dict(self) -> dict[str, np.ndarray]:
        return asdict(self)

    @property
    def expression_names(self) -> list[str]:
        return [EXPRESSIONS[int(e)] for e in self.expression]


@dataclass
class ActionReadings:
    """Per-frame (or per-window) action readings."""

    action: np.ndarray
    """(N,) int64 index into `schema.ACTIONS` (0 = none)."""
    probs: np.ndarray
    """(N, len(ACTIONS)) probabilities."""

    @property
    def names(self) -> list[str]:
        return [ACTIONS[int(a)] for a in self.action]


class StageProbes:
    """Frame and action probes in eval mode, with numpy in and numpy out."""

    def __init__(
        self,
        frame_net: FrameProbeNet,
        action_net: ActionProbeNet,
        card: dict | None = None,
        batch_size: int = 256,
    ) -> None:
        self.frame_net = frame_net.eval()
        self.action_net = action_net.eval()
        self.config: ProbeConfig = frame_net.config
        self.card = card or {}
        self.batch_size = batch_size

    @torch.no_grad()
    def _forward(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        x = to_probe_input(frames, self.config.input_size)
        parts: dict[str, list[torch.Tensor]] = {}
        for i in range(0, x.shape[0], self.batch_size):
            out = self.frame_net(x[i : i + self.batch_size])
            for k, v in out.__dict__.items():
                parts.setdefault(k, []).append(v)
        return {k: torch.cat(v) for k, v in parts.items()}

    def read_frames(self, frames: np.ndarray | torch.Tensor) -> FrameReadings:
        """Read (N, H, W, 3) uint8 RGB frames (any H, W >= 16) -> `FrameReadings`."""
        o = self._forward(frames)
        yaw = torch.rad2deg(torch.atan2(o["yaw_sincos"][:, 0], o["yaw_sincos"][:, 1]))
        probs = torch.softmax(o["expression_logits"], -1)
        blink = o["blink"]
        aux = {k: o["aux"][:, i].numpy() for i, k in enumerate(AUX_FIELDS)}
        return FrameReadings(
            mouth_open=o["mouth_open"].numpy(),
            yaw=yaw.numpy(),
            pitch=(o["pitch_roll"][:, 0] * POSE_SCALE_DEG).numpy(),
            roll=(o["pitch_roll"][:, 1] * POSE_SCALE_DEG).numpy(),
            blink=blink.numpy(),
            blinking=(blink > BLINK_THRESHOLD).numpy(),
            expression=probs.argmax(-1).numpy(),
            expression_probs=probs.numpy(),
            identity=o["identity"].numpy(),
            **aux,
        )

    def identity_embedding(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, E) unit-norm identity embeddings; same character -> cosine similarity near 1."""
        return self._forward(frames)["identity"].numpy()

    def frame_features(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, F) per-frame features that the action probe reads."""
        return self._forward(frames)["feat"].numpy()

    @torch.no_grad()
    def classify_windows(self, feats_ktf: np.ndarray | torch.Tensor) -> ActionReadings:
        """Actions of (K, T, F) windows of frame features (T = `config.action_window`)."""
        f = torch.as_tensor(feats_ktf, dtype=torch.float32)
        if f.ndim != 3 or f.shape[-1] != self.config.feat_dim:
            raise ValueError(
                f"feature windows must be (K, T, {self.config.feat_dim}), got {tuple(f.shape)}"
            )
        probs = torch.cat(
            [torch.softmax(self.action_net(f[i : i + 512]), -1) for i in range(0, f.shape[0], 512)]
        )
        return ActionReadings(action=probs.argmax(-1).numpy(), probs=probs.numpy())

    def read_actions(self, frames: np.ndarray | torch.Tensor, fps: float = 24.0) -> ActionReadings:
        """Per-frame actions of a video: each frame is read from a window centred on it.

        Args:
            frames: (T, H, W, 3) uint8 RGB frames in time order.
            fps: frame rate (frames per second); other rates are resampled to the probe's
                `config.action_fps` by nearest frame. Edges repeat the first/last frame.

        Returns:
            `ActionReadings` with one entry per input frame.
        """
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        feats = self.frame_features(frames)
        n = feats.shape[0]
        rate = self.config.action_fps / float(fps)
        w = self.config.action_window
        offsets = np.arange(w) - w // 2
        # window of input frame i: probe-rate steps around i mapped back to input indices
        idx = np.round(np.arange(n)[:, None] + offsets[None, :] / rate).astype(np.int64)
        return self.classify_windows(feats[np.clip(idx, 0, n - 1)])


# --- save / load --------------------------------------------------------------------------------


def probe_config_from_dict(raw: dict) -> ProbeConfig:
    """Rebuild a `ProbeConfig` from `dataclasses.asdict` output (as stored in the weights)."""
    fields = dict(raw)
    for name in ("pose", "face", "identity"):
        if not isinstance(fields.get(name), dict):
            raise ValueError(
                f"probe config has no branch {name!r}: weights from an older probe layout; "
                "retrain with `lpm bench train-probes`"
            )
        branch = dict(fields[name])
        branch["widths"] = tuple(branch["widths"])
        fields[name] = BranchConfig(**branch)
    # weights from before these fields read pose + face features with dilations 1, 2, 4
    fields.setdefault("action_readouts", False)
    fields["action_dilations"] = tuple(fields.get("action_dilations", (1, 2, 4)))
    return ProbeConfig(**fields)


def save_probes(
    frame_net: FrameProbeNet, action_net: ActionProbeNet, out_dir: Path | str, card: dict
) -> Path:
    """Write fp16 weights (`probes.safetensors`) and the JSON card to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for prefix, net in (("frame.", frame_net), ("action.", action_net)):
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            tensors[prefix + k] = v.detach().to(torch.float16).contiguous()
    meta = {"config": json.dumps(asdict(frame_net.config))}
    save_file(tensors, str(out / WEIGHTS_NAME), metadata=meta)
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return out / WEIGHTS_NAME


def load_probes(path: Path | str | None = None) -> StageProbes:
    """Load probes from a directory written by `save_probes` (default: the shipped weights)."""
    root = Path(path) if path is not None else WEIGHTS_DIR
    file = root / WEIGHTS_NAME if root.is_dir() else root
    if not file.is_file():
        raise FileNotFoundError(
            f"no probe weights at {file}; train them with `lpm bench train-probes --out DIR`"
        )
    from safetensors import safe_open

    with safe_open(str(file), "pt") as f:
        raw = json.loads(f.metadata()["config"])
    config = probe_config_from_dict(raw)
    state = load_file(str(file))
    frame_net, action_net = FrameProbeNet(config), ActionProbeNet(config)
    for prefix, net in (("frame.", frame_net), ("action.", action_net)):
        sub = {k[len(prefix) :]: v.float() for k, v in state.items() if k.startswith(prefix)}
        missing, unexpected = net.load_state_dict(sub, strict=False)
        # weights from before input standardisation read raw features (mean 0, std 1 = as is)
        optional = ("num_batches_tracked", "feat_mean", "feat_std")
        missing = [k for k in missing if not k.endswith(optional)]
        if missing or unexpected:
            raise ValueError(
                f"probe weights {file} do not match the config: missing {missing}, "
                f"unexpected {unexpected}"
            )
    card_file = file.parent / CARD_NAME
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    return StageProbes(frame_net, action_net, card)
