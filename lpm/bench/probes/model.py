"""Probe networks: a frame probe (three conv branches + heads) and a temporal action probe.

Shape legend:
    B  batch (frames or windows)
    T  frames in an action window (`ProbeConfig.action_window`)
    S  input side (pixels) = `ProbeConfig.input_size`
    F  per-frame feature width (`ProbeConfig.feat_dim` = pose + face features + readouts)
    E  identity embedding width (`ProbeConfig.id_dim`)

The frame probe takes float frames in [-0.5, 0.5] of shape (B, 3, S, S); resizing and
validation of user input live in `probes.py`. Three branches share nothing, so no head's loss
can swamp another's features:

1. pose branch: the whole frame -> head pose, lean, wave;
2. face branch: a fixed crop around the head (`ProbeConfig.face_box`, from `render.head_layout`)
   at full resolution -> mouth, expression, blink, brows, gaze, lip rounding;
3. identity branch: the whole frame at half resolution -> unit-norm identity embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lpm.bench.probes.config import FACE_SCALARS, POSE_OUTPUTS, BranchConfig, ProbeConfig
from lpm.bench.probes.data import FACE_PARAMS

AUX_FIELDS: tuple[str, ...] = ("brow_raise", "lean", "wave", "gaze_x", "gaze_y", "mouth_round")
"""Auxiliary per-frame regressions; they make the frame feature carry what actions move."""

FACE_AUX_FIELDS: tuple[str, ...] = ("brow_raise", "gaze_x", "gaze_y", "mouth_round")
"""The auxiliaries read from the face: trained on visible faces only, with a weight that keeps
them in the face feature (the expression head alone learns to ignore a raised brow)."""

POSE_SCALE_DEG = 20.0
"""Pitch and roll are regressed in units of this many degrees."""


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    pad = (kernel - 1) // 2 if kernel % 2 else 0
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, pad, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def _mlp(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, c_out))


class ConvBranch(nn.Module):
    """Patch stem, stages of two 3x3 conv-BN-ReLU (strided on entry), flattened final map.

    Position matters (pose, lean, where the mouth is), so the final map is flattened rather
    than pooled.
    """

    def __init__(self, config: BranchConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        layers = [_conv_bn_relu(3, w[0], config.patch, config.patch), _conv_bn_relu(w[0], w[0])]
        for i in range(1, len(w)):
            layers += [_conv_bn_relu(w[i - 1], w[i], stride=2), _conv_bn_relu(w[i], w[i])]
        layers.append(_conv_bn_relu(w[-1], config.out_channels, stride=2))
        self.trunk = nn.Sequential(*layers)
        flat = config.out_channels * config.final_map**2
        self.proj = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, config.feat_dim), nn.ReLU(inplace=True)
        )

    def forward(self, x_b3hw: torch.Tensor) -> torch.Tensor:
        """(B, 3, size, size) -> (B, feat_dim)."""
        return self.proj(self.trunk(x_b3hw))


@dataclass
class FrameOutputs:
    """Raw head outputs of `FrameProbeNet` (all float tensors, batch first)."""

    feat: torch.Tensor
    """(B, F) frame feature: pose then face branch features, then (`ProbeConfig.action_readouts`)
    the raw pose and face head outputs."""
    mouth_open: torch.Tensor
    """(B,) visible mouth opening, 0..1."""
    yaw_sincos: torch.Tensor
    """(B, 2) sine and cosine of the head yaw (not normalised)."""
    pitch_roll: torch.Tensor
    """(B, 2) pitch and roll in units of `POSE_SCALE_DEG`."""
    blink: torch.Tensor
    """(B,) eyelid closure, 0..1."""
    expression_logits: torch.Tensor
    """(B, num_expressions)."""
    aux: torch.Tensor
    """(B, len(AUX_FIELDS)) auxiliary regressions."""
    identity: torch.Tensor
    """(B, E) unit-norm identity embedding."""
    face_params: torch.Tensor
    """(B, len(data.FACE_PARAMS)) the renderer's blended expression parameters (training aid)."""


def _resize(x_b3hw: torch.Tensor, size: int) -> torch.Tensor:
    if x_b3hw.shape[-1] == size:
        return x_b3hw
    if x_b3hw.shape[-1] % size == 0:  # exact integer downscale: box filter
        return F.avg_pool2d(x_b3hw, x_b3hw.shape[-1] // size)
    return F.interpolate(x_b3hw, size=(size, size), mode="bilinear", align_corners=False)


class FrameProbeNet(nn.Module):
    """Pose, face-crop and identity branches + per-frame heads."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        self.pose_branch = ConvBranch(config.pose)
        self.face_branch = ConvBranch(config.face)
        self.id_branch = ConvBranch(config.identity)
        self.pose_head = _mlp(config.pose.feat_dim, 128, len(POSE_OUTPUTS))
        n_face = len(FACE_SCALARS) + config.num_expressions + len(FACE_PARAMS)
        self.face_head = _mlp(config.face.feat_dim, 128, n_face)
        self.id_head = _mlp(config.identity.feat_dim, 128, config.id_dim)

    def branch_modules(self) -> dict[str, nn.Module]:
        """Each branch (`config.BRANCHES`) with its head."""
        return {
            "pose": nn.ModuleList([self.pose_branch, self.pose_head]),
            "face": nn.ModuleList([self.face_branch, self.face_head]),
            "identity": nn.ModuleList([self.id_branch, self.id_head]),
        }

    def branch_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per branch with its head (each is clipped on its own in training)."""
        return {k: list(m.parameters()) for k, m in self.branch_modules().items()}

    def forward(self, x_b3ss: torch.Tensor) -> FrameOutputs:
        """Read frames; `x_b3ss` is (B, 3, S, S) float in [-0.5, 0.5], S = `input_size`."""
        cfg = self.config
        # 1. branch inputs: whole frame, face crop, half-resolution frame
        x0, y0, side = cfg.face_box
        face_b3hw = _resize(x_b3ss[:, :, y0 : y0 + side, x0 : x0 + side], cfg.face.size)
        # 2. branch features
        pose_bf = self.pose_branch(_resize(x_b3ss, cfg.pose.size))
        face_bf = self.face_branch(face_b3hw)
        id_bf = self.id_branch(_resize(x_b3ss, cfg.identity.size))
        # 3. heads
        p = self.pose_head(pose_bf)
        f = self.face_head(face_bf)
        fs = {k: f[:, i] for i, k in enumerate(FACE_SCALARS)}
        n_s, n_e = len(FACE_SCALARS), cfg.num_expressions
        ps = {k: p[:, i] for i, k in enumerate(POSE_OUTPUTS)}
        aux_src = {**fs, **ps}
        feats = [pose_bf, face_bf, p, f] if cfg.action_readouts else [pose_bf, face_bf]
        return FrameOutputs(
            feat=torch.cat(feats, dim=-1),
            mouth_open=torch.sigmoid(fs["mouth_open"]),
            yaw_sincos=p[:, 0:2],
            pitch_roll=p[:, 2:4],
            blink=torch.sigmoid(fs["blink"]),
            expression_logits=f[:, n_s : n_s + n_e],
            aux=torch.stack([aux_src[k] for k in AUX_FIELDS], dim=-1),
            identity=F.normalize(self.id_head(id_bf), dim=-1),
            face_params=f[:, n_s + n_e :],
        )


class ActionProbeNet(nn.Module):
    """Temporal convolutions over a window of frame features -> action logits of the window.

    Features are standardised per channel with statistics of the training windows
    (`set_input_stats`): branch features and head readouts have very different scales.
    """

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.config = config
        h = config.action_hidden
        layers: list[nn.Module] = []
        c_in = config.feat_dim
        for d in config.action_dilations:
            layers += [nn.Conv1d(c_in, h, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            c_in = h
        self.net = nn.Sequential(*layers)
        self.head = nn.Linear(2 * h, config.num_actions)
        self.register_buffer("feat_mean", torch.zeros(config.feat_dim))
        self.register_buffer("feat_std", torch.ones(config.feat_dim))

    @torch.no_grad()
    def set_input_stats(self, feat_ktf: torch.Tensor) -> None:
        """Per-channel mean and std of (K, T, F) training windows."""
        self.feat_mean.copy_(feat_ktf.mean(dim=(0, 1)))
        self.feat_std.copy_(feat_ktf.std(dim=(0, 1)).clamp(min=1e-2))

    def forward(self, feat_btf: torch.Tensor) -> torch.Tensor:
        """(B, T, F) frame features -> (B, num_actions) logits for the window's centre frame."""
        x_btf = (feat_btf - self.feat_mean) / self.feat_std
        h_bht = self.net(x_btf.transpose(1, 2))
        t = h_bht.shape[-1]
        # the centre frames carry the label; the mean sees the whole motion
        centre = h_bht[:, :, t // 2 - 1 : t // 2 + 1].mean(-1)
        return self.head(torch.cat([centre, h_bht.mean(-1)], dim=-1))
