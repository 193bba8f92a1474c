"""SyncNet (Chung & Zisserman, "Out of time", 2016): audio and lip embeddings in one space.

Shape legend:
    B  batch of windows
    C  MFCC coefficients (13)             S  MFCC steps per window (20: 0.2 s at 100 Hz)
    T  video frames per window (5: 0.2 s at 25 fps)
    H, W  face crop side (224)            E  embedding size (1024)

Two streams with the released network's geometry. The audio stream reads (B, 1, C, S) MFCCs
through six conv + BN + ReLU stages (2-D) to (B, 512, 1, 1); the lip stream reads (B, 3, T, H,
W) face crops (BGR, raw 0..255) through six stages (3-D; the first kernel spans all 5 frames)
to (B, 512, 1, 1, 1). Each stream ends in Linear -> BN -> ReLU -> Linear to E. The distance
between an audio and a lip embedding is small when the two are in sync.

Released weights (`syncnet_v2.model` of the public syncnet_python project) name the streams
`netcnnaud` / `netfcaud` (audio) and `netcnnlip` / `netfclip` (lips), each an `nn.Sequential`
whose indices count every layer (conv, BN, ReLU, pool); `released_key` maps this module's names
onto those.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Size = int | tuple[int, ...]


@dataclass(frozen=True, kw_only=True)
class _StageSpec:
    kernel: tuple[int, ...]
    stride: Size = 1
    padding: Size = 0
    pool: tuple[tuple[int, ...], tuple[int, ...], Size] | None = None
    """(kernel, stride, padding) of the max pool after the ReLU, or None."""


# The released geometry: kernels, strides, paddings and pools fix the input sizes (13 x 20 MFCC
# steps, 5 x 224 x 224 crops) that reduce to 1 x 1 before the fully connected head.
AUDIO_STAGES: tuple[_StageSpec, ...] = (
    _StageSpec(kernel=(3, 3), padding=1, pool=((1, 1), (1, 1), 0)),  # a 1x1 pool: no-op, kept
    _StageSpec(kernel=(3, 3), padding=1, pool=((3, 3), (1, 2), 0)),
    _StageSpec(kernel=(3, 3), padding=1),
    _StageSpec(kernel=(3, 3), padding=1),
    _StageSpec(kernel=(3, 3), padding=1, pool=((3, 3), (2, 2), 0)),
    _StageSpec(kernel=(5, 4)),
)
LIP_STAGES: tuple[_StageSpec, ...] = (
    _StageSpec(kernel=(5, 7, 7), stride=(1, 2, 2), pool=((1, 3, 3), (1, 2, 2), 0)),
    _StageSpec(
        kernel=(1, 5, 5),
        stride=(1, 2, 2),
        padding=(0, 1, 1),
        pool=((1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ),  # fmt: skip
    _StageSpec(kernel=(1, 3, 3), padding=(0, 1, 1)),
    _StageSpec(kernel=(1, 3, 3), padding=(0, 1, 1)),
    _StageSpec(kernel=(1, 3, 3), padding=(0, 1, 1), pool=((1, 3, 3), (1, 2, 2), 0)),
    _StageSpec(kernel=(1, 6, 6)),
)


@dataclass(frozen=True, kw_only=True)
class SyncNetConfig:
    """Widths of SyncNet (the geometry is fixed; narrower widths make tiny test models)."""

    audio_channels: tuple[int, ...] = (64, 192, 384, 256, 256, 512)
    """Output channels of the six audio stages."""
    lip_channels: tuple[int, ...] = (96, 256, 256, 256, 256, 512)
    """Output channels of the six lip stages."""
    hidden: int = 512
    """Width of the hidden fully connected layer of each head."""
    embed_dim: int = 1024
    """Embedding size E."""

    def __post_init__(self) -> None:
        for name, n in (("audio_channels", len(AUDIO_STAGES)), ("lip_channels", len(LIP_STAGES))):
            chans = getattr(self, name)
            if len(chans) != n or min(chans) < 1:
                raise ValueError(f"{name} must be {n} positive widths, got {chans}")
        if self.hidden < 1 or self.embed_dim < 1:
            raise ValueError(
                f"hidden and embed_dim must be >= 1, got {self.hidden}, {self.embed_dim}"
            )


class _Stage(nn.Module):
    """conv -> BN -> ReLU (-> max pool)."""

    def __init__(self, spec: _StageSpec, c_in: int, c_out: int, dims: int) -> None:
        super().__init__()
        conv, norm, pool = (
            (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d)
            if dims == 2
            else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
        )
        self.conv = conv(c_in, c_out, spec.kernel, stride=spec.stride, padding=spec.padding)
        self.norm = norm(c_out)
        self.pool = None if spec.pool is None else pool(*spec.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x)))
        return x if self.pool is None else self.pool(x)


class _Stream(nn.Module):
    """Conv stages to a (B, C, 1, ...) map, then Linear -> BN -> ReLU -> Linear."""

    def __init__(
        self,
        stages: tuple[_StageSpec, ...],
        c_in: int,
        channels: tuple[int, ...],
        cfg: SyncNetConfig,
    ) -> None:
        super().__init__()
        dims = len(stages[0].kernel)
        ins = (c_in, *channels[:-1])
        self.stages = nn.ModuleList(
            _Stage(s, i, o, dims) for s, i, o in zip(stages, ins, channels, strict=True)
        )
        self.fc1 = nn.Linear(channels[-1], cfg.hidden)
        self.fc_norm = nn.BatchNorm1d(cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.embed_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_last) conv features (the map must have reduced to one position)."""
        for stage in self.stages:
            x = stage(x)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc_norm(self.fc1(self.features(x)))))


class SyncNet(nn.Module):
    """SyncNet audio and lip streams (eval mode for scoring: BN uses its running statistics)."""

    MFCC_COEFFS = 13
    """C: MFCC coefficients per step."""
    MFCC_STEPS = 20
    """S: MFCC steps per window (0.2 s at 100 Hz)."""
    FRAMES = 5
    """T: video frames per window (0.2 s at 25 fps)."""
    CROP = 224
    """H = W: face crop side (pixels)."""

    def __init__(self, config: SyncNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SyncNetConfig()
        self.audio = _Stream(AUDIO_STAGES, 1, cfg.audio_channels, cfg)
        self.lip = _Stream(LIP_STAGES, 3, cfg.lip_channels, cfg)

    def embed_audio(self, mfcc_bcs: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, E)."""
        return self.audio(mfcc_bcs)

    def embed_lips(self, crops_bcthw: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR face crops, raw 0..255 floats -> (B, E)."""
        return self.lip(crops_bcthw)


_RELEASED_STREAMS = {"audio": "aud", "lip": "lip"}
_RELEASED_FC = {"fc1": 0, "fc_norm": 1, "fc2": 3}
"""Indices of the head layers in the released `netfc*` sequentials (2 is the ReLU)."""


def _sequential_index(stages: tuple[_StageSpec, ...], stage: int) -> int:
    """Index of a stage's conv in the released `nn.Sequential` (conv, BN, ReLU[, pool] each)."""
    return sum(3 + (s.pool is not None) for s in stages[:stage])


def released_key(key: str) -> str:
    """This module's state-dict key -> the released `syncnet_v2.model` key.

    `audio.stages.4.norm.running_var` -> `netcnnaud.15.running_var`;
    `lip.fc_norm.weight` -> `netfclip.1.weight`.
    """
    stream, rest = key.split(".", 1)
    suffix = _RELEASED_STREAMS[stream]
    stages = AUDIO_STAGES if stream == "audio" else LIP_STAGES
    if rest.startswith("stages."):
        _, i, layer, param = rest.split(".")
        idx = _sequential_index(stages, int(i)) + (layer == "norm")
        return f"netcnn{suffix}.{idx}.{param}"
    layer, param = rest.split(".", 1)
    return f"netfc{suffix}.{_RELEASED_FC[layer]}.{param}"


def load_syncnet(path, config: SyncNetConfig | None = None) -> SyncNet:
    """SyncNet with released weights from a local file (`syncnet_v2.model` or safetensors).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a state dict, or one whose tensors do not match the released layout
            (every missing, unexpected and mis-shaped tensor is named).
    """
    from lpm.bench.nets.checkpoint import load_released, read_state_dict

    state = read_state_dict(path, "SyncNet")
    return load_released(SyncNet(config), state, released_key, "SyncNet")
