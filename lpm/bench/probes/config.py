"""Typed configurations of the Stage probes: network geometry and the training recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from lpm.bench.probes.data import FACE_PARAMS
from lpm.data.stage.render import head_layout
from lpm.data.stage.schema import ACTIONS, EXPRESSIONS

POSE_OUTPUTS: tuple[str, ...] = ("yaw_sin", "yaw_cos", "pitch", "roll", "lean", "wave")
"""Outputs of the pose head, in order."""
FACE_SCALARS: tuple[str, ...] = (
    "mouth_open",
    "blink",
    "brow_raise",
    "gaze_x",
    "gaze_y",
    "mouth_round",
)
"""Scalar outputs of the face head, in order (then expression logits, then `FACE_PARAMS`)."""
BRANCHES: tuple[str, ...] = ("pose", "face", "identity")
"""The frame probe's branches (`ProbeConfig` fields of the same names)."""


@dataclass(frozen=True, kw_only=True)
class BranchConfig:
    """One convolutional branch: a patch stem and strided stages down to a small flattened map."""

    region: str = "full"
    """`full` reads the whole frame; `face` reads the face crop (`ProbeConfig.face_box`)."""
    size: int = 128
    """Side (pixels) the region is resized to before the stem."""
    patch: int = 4
    """Patch size (pixels) of the strided stem convolution."""
    widths: tuple[int, ...] = (24, 32, 48, 64)
    """Channels per stage; every stage after the first halves the resolution (two convs each)."""
    out_channels: int = 48
    """Channels of the final strided convolution whose map is flattened."""
    feat_dim: int = 128
    """Width of the branch feature."""

    def __post_init__(self) -> None:
        if self.region not in ("full", "face"):
            raise ValueError(f"BranchConfig.region must be 'full' or 'face', got {self.region!r}")
        if len(self.widths) < 1 or min(self.widths) < 1:
            raise ValueError(f"BranchConfig.widths needs >= 1 positive stage, got {self.widths}")
        if self.size < 8 * self.patch:
            raise ValueError(f"BranchConfig.size={self.size} is too small for patch {self.patch}")
        if self.feat_dim <= 0 or self.out_channels <= 0:
            raise ValueError("BranchConfig.feat_dim and out_channels must be positive")

    @property
    def final_map(self) -> int:
        """Side (cells) of the map that is flattened (ceil-halving after the stem)."""
        side = self.size // self.patch
        for _ in range(len(self.widths)):
            side = (side + 1) // 2
        return side


def _pose_branch() -> BranchConfig:
    return BranchConfig(region="full", size=128, patch=4, widths=(24, 32, 48), out_channels=48)


def _face_branch() -> BranchConfig:
    return BranchConfig(region="face", size=72, patch=3, widths=(32, 48, 64), out_channels=64)


def _identity_branch() -> BranchConfig:
    return BranchConfig(region="full", size=64, patch=2, widths=(16, 24, 32), out_channels=32)


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """Geometry of the frame probe (three branches + heads) and the action probe."""

    input_size: int = 128
    """Side (pixels) every frame is resized to first; branches resize or crop from it."""
    pose: BranchConfig = field(default_factory=_pose_branch)
    """Whole-frame branch: head pose, lean, wave (its feature also feeds the action probe)."""
    face: BranchConfig = field(default_factory=_face_branch)
    """Face-crop branch: mouth, expression, blink, gaze, brows (feature feeds actions too)."""
    identity: BranchConfig = field(default_factory=_identity_branch)
    """Whole-frame branch of the identity embedding only, so its loss cannot swamp the others."""
    face_scale: float = 2.25
    """Face crop side in head half-widths (`render.head_layout`); covers sway, lean, shifts."""
    face_drop: float = 0.1
    """Face crop centre below the head centre, in head half-widths (toward the mouth)."""
    id_dim: int = 64
    """Identity embedding width (unit-norm)."""
    num_expressions: int = len(EXPRESSIONS)
    num_actions: int = len(ACTIONS)
    action_window: int = 24
    """Frames (at `action_fps`) the action probe reads around each frame (1 s: a nod or a
    shake lasts 1 to 1.6 s)."""
    action_fps: int = 24
    """Frame rate (frames per second) the action probe was trained at."""
    action_hidden: int = 96
    """Channels of the temporal convolutions of the action probe."""
    action_dilations: tuple[int, ...] = (1, 2, 4, 8)
    """Dilations of the kernel-3 temporal convolutions (receptive field 1 + 2 * sum frames)."""
    action_readouts: bool = True
    """The frame feature also carries the raw pose and face head outputs (yaw, brows, gaze,
    lean...), so the action probe reads what actions move directly."""

    def __post_init__(self) -> None:
        if self.input_size < 32:
            raise ValueError(f"ProbeConfig.input_size must be >= 32, got {self.input_size}")
        x0, y0, side = self.face_box
        if x0 < 0 or y0 < 0 or x0 + side > self.input_size or y0 + side > self.input_size:
            raise ValueError(
                f"ProbeConfig.face_scale={self.face_scale} / face_drop={self.face_drop} put the "
                f"face crop {self.face_box} outside the {self.input_size}px frame"
            )
        if self.face.region != "face" or self.pose.region != "full":
            raise ValueError("ProbeConfig.face must read region 'face' and pose region 'full'")
        if self.action_window < 4:
            raise ValueError(f"ProbeConfig.action_window must be >= 4, got {self.action_window}")
        if not self.action_dilations or min(self.action_dilations) < 1:
            raise ValueError(
                f"ProbeConfig.action_dilations needs >= 1 positive dilation, got "
                f"{self.action_dilations}"
            )
        if self.id_dim <= 0:
            raise ValueError("ProbeConfig.id_dim must be positive")

    @property
    def face_box(self) -> tuple[int, int, int]:
        """Face crop (x0, y0, side) in pixels of the `input_size` frame."""
        (cx, cy), head_px = head_layout(self.input_size)
        side = int(round(self.face_scale * head_px))
        x0 = int(round(cx - side / 2))
        y0 = int(round(cy + self.face_drop * head_px - side / 2))
        return x0, y0, side

    @property
    def num_readouts(self) -> int:
        """Raw head outputs in the frame feature (0 without `action_readouts`)."""
        if not self.action_readouts:
            return 0
        return len(POSE_OUTPUTS) + len(FACE_SCALARS) + self.num_expressions + len(FACE_PARAMS)

    @property
    def feat_dim(self) -> int:
        """Per-frame feature width the action probe reads (pose + face features + readouts)."""
        return self.pose.feat_dim + self.face.feat_dim + self.num_readouts


@dataclass(frozen=True, kw_only=True)
class ProbeTrainConfig:
    """The training recipe of `train_probes` (every count is deterministic for a seed)."""

    steps: int = 12000
    """Optimiser steps of the frame probe; 0 keeps the frame probe of `init_from` exactly as it
    is and trains only the action probe (no frame cache is rendered)."""
    seed: int = 0
    """Seeds identities, frame states, augmentations and initialisation."""
    train_ids: int = 3000
    """Training identities rendered into the frame cache."""
    frames_per_id: int = 6
    """Random `FrameState`s rendered per training identity."""
    easy_per_id: int = 2
    """Extra unobstructed frames per identity (`data.sample_easy_frame_state`), for the
    curriculum."""
    curriculum_frac: float = 0.4
    """Fraction of the steps over which easy frames fade from all of the batch to `easy_floor`
    and the degradation probability rises to `augment_prob` (expression is learned on easy
    frames first; from random states alone its loss sits at chance for hundreds of steps)."""
    easy_floor: float = 0.2
    """Share of easy frames in a batch after the curriculum."""
    batch_ids: int = 16
    """Identities per batch; each contributes 2 frames (identity positives)."""
    lr: float = 2e-3
    """Peak AdamW learning rate (cosine decay, linear warm-up)."""
    weight_decay: float = 1e-4
    augment_prob: float = 0.8
    """Probability that a training frame is degraded (blur, noise, JPEG, shifts, colour...)."""
    action_sessions: int = 300
    """Training performances (10-s sessions) whose action windows train the action probe."""
    action_windows_per_event: int = 4
    """Training windows centred inside every action event (and on action-free frames) of each
    training performance (evaluation keeps 2)."""
    action_steps: int = 2000
    """Optimiser steps of the action probe (on cached frame features)."""
    session_seconds: float = 10.0
    """Length of each performance session (seconds)."""
    eval_ids: int = 300
    """Held-out identities for frame metrics and identity verification."""
    eval_frames_per_id: int = 4
    eval_sessions: int = 60
    """Held-out performances for action accuracy and real-performance frame metrics."""
    render_workers: int = 2
    """Processes that render frames (1 renders in the calling process)."""
    torch_threads: int = 0
    """Torch intra-op threads; 0 = min(2, torch's default), which honours `OMP_NUM_THREADS`."""
    init_from: str | None = None
    """Trained probes (directory or weights file) whose frame probe starts training: a
    fine-tune. None trains from scratch. Their branch geometry must match `ProbeConfig`."""
    train_branches: tuple[str, ...] = BRANCHES
    """Frame-probe branches trained (with their heads and losses); the others stay frozen in
    eval mode, so their readings are exactly those of `init_from`."""

    def __post_init__(self) -> None:
        for name in (
            "train_ids",
            "frames_per_id",
            "batch_ids",
            "action_sessions",
            "eval_ids",
            "eval_frames_per_id",
            "eval_sessions",
            "render_workers",
            "action_windows_per_event",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ProbeTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.frames_per_id < 2 or self.eval_frames_per_id < 2:
            raise ValueError(
                "ProbeTrainConfig.frames_per_id and eval_frames_per_id must be >= 2 "
                "(identity positives need two frames of one identity)"
            )
        if self.batch_ids > self.train_ids:
            raise ValueError(
                f"ProbeTrainConfig.batch_ids={self.batch_ids} exceeds train_ids={self.train_ids}"
            )
        if not 0.0 <= self.augment_prob <= 1.0:
            raise ValueError(
                f"ProbeTrainConfig.augment_prob must be in [0, 1], got {self.augment_prob}"
            )
        if not 0.0 <= self.curriculum_frac <= 1.0 or not 0.0 <= self.easy_floor <= 1.0:
            raise ValueError("ProbeTrainConfig.curriculum_frac and easy_floor must be in [0, 1]")
        if self.easy_per_id < 0:
            raise ValueError(f"ProbeTrainConfig.easy_per_id must be >= 0, got {self.easy_per_id}")
        if self.torch_threads < 0:
            raise ValueError(
                f"ProbeTrainConfig.torch_threads must be >= 0 (0 = default), "
                f"got {self.torch_threads}"
            )
        if not self.train_branches or not set(self.train_branches) <= set(BRANCHES):
            raise ValueError(
                f"ProbeTrainConfig.train_branches must be a non-empty subset of {BRANCHES}, "
                f"got {self.train_branches}"
            )
        if set(self.train_branches) != set(BRANCHES) and self.init_from is None:
            raise ValueError(
                "ProbeTrainConfig.train_branches leaves branches untrained: set init_from to "
                "trained probes to fine-tune from"
            )
        if self.steps < 0 or (self.steps == 0 and self.init_from is None):
            raise ValueError(
                f"ProbeTrainConfig.steps must be >= 1, or 0 with init_from set (keep that frame "
                f"probe, train the action probe only), got {self.steps}"
            )
        if self.action_steps < 0:
            raise ValueError("ProbeTrainConfig.action_steps must be >= 0")
