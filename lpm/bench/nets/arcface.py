"""ArcFace identity backbone: insightface's IResNet (iresnet18/34/50/100/200 of `arcface_torch`).

Shape legend:
    B  faces    H = W = 112 (aligned crops)    F  embedding size (512)

Input (B, 3, 112, 112) RGB in [-1, 1] (pixel / 127.5 - 1) of faces aligned to the 5-point
template `ARCFACE_TEMPLATE`. A 3x3 stem (conv -> BN -> PReLU), four stages of "improved"
residual blocks (BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus a 1x1 conv + BN
shortcut where the shape changes), each halving the resolution (112 -> 7), then BN -> flatten
-> Linear -> BN1d gives the (B, F) embedding; compare embeddings by cosine similarity.

Module names are the released ones (`backbone.pth` of arcface_torch: `conv1`, `bn1`, `prelu`,
`layer{1-4}.{i}.{bn1,conv1,bn2,prelu,conv2,bn3,downsample.0,downsample.1}`, `bn2`, `fc`,
`features`), so the key mapping is the identity; the depth is read off the checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

ARCH_LAYERS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
"""Residual blocks per stage of the released depths."""
INPUT_SIZE = 112
"""Side (pixels) of the aligned face crops."""
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # eye on the image's left
        [73.5318, 51.5014],  # eye on the image's right
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth corner, image left
        [70.7299, 92.2041],  # mouth corner, image right
    ],
    np.float64,
)
"""Where insightface's alignment puts 5 face points in a 112 x 112 crop (pixels)."""


@dataclass(frozen=True, kw_only=True)
class IResNetConfig:
    """IResNet depth and widths (released: `ARCH_LAYERS`, widths 64..512, 512-d embedding)."""

    layers: tuple[int, int, int, int] = ARCH_LAYERS["r50"]
    """Residual blocks per stage."""
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    """Channels per stage (the stem has widths[0])."""
    embed_dim: int = 512
    """Embedding size F."""

    def __post_init__(self) -> None:
        if len(self.layers) != 4 or min(self.layers) < 1:
            raise ValueError(f"layers must be 4 block counts >= 1, got {self.layers}")
        if len(self.widths) != 4 or min(self.widths) < 1 or self.embed_dim < 1:
            raise ValueError(f"widths must be 4 positive widths, got {self.widths}")

    @property
    def arch(self) -> str:
        """Released name of this depth (`r50`, ...), or `custom`."""
        return next((k for k, v in ARCH_LAYERS.items() if v == self.layers), "custom")


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.prelu = nn.PReLU(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out, eps=1e-5)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out, eps=1e-5),
            )
            if stride != 1 or c_in != c_out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """(B, 3, 112, 112) aligned RGB faces in [-1, 1] -> (B, F) identity embeddings."""

    FINAL_SIDE = INPUT_SIZE // 16
    """Side of the last feature map (four stride-2 stages): 7."""

    def __init__(self, config: IResNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or IResNetConfig()
        self.conv1 = nn.Conv2d(3, cfg.widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cfg.widths[0], eps=1e-5)
        self.prelu = nn.PReLU(cfg.widths[0])
        c_in = cfg.widths[0]
        for i, (blocks, width) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            stage = [IBasicBlock(c_in, width, 2)] + [
                IBasicBlock(width, width, 1) for _ in range(blocks - 1)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            c_in = width
        self.bn2 = nn.BatchNorm2d(c_in, eps=1e-5)
        self.fc = nn.Linear(c_in * self.FINAL_SIDE**2, cfg.embed_dim)
        self.features = nn.BatchNorm1d(cfg.embed_dim, eps=1e-5)

    def forward(self, faces_bchw: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(faces_bchw)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))


def config_from_state(state: dict[str, torch.Tensor]) -> IResNetConfig:
    """The depth, widths and embedding size of an IResNet state dict (released key names)."""
    blocks = {i: set() for i in range(1, 5)}
    for key in state:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            blocks[int(m[1])].add(int(m[2]))
    widths, embed = [], state.get("fc.weight")
    for i in range(1, 5):
        w = state.get(f"layer{i}.0.conv1.weight")
        widths.append(int(w.shape[0]) if w is not None else 0)
    if not all(blocks.values()) or not all(widths) or embed is None:
        raise ValueError(
            "the checkpoint is not an insightface IResNet backbone: it lacks "
            "layer1..layer4 blocks or fc.weight (expected arcface_torch's backbone.pth keys)"
        )
    layers = tuple(max(b) + 1 for b in blocks.values())
    return IResNetConfig(layers=layers, widths=tuple(widths), embed_dim=int(embed.shape[0]))


def released_key(key: str) -> str:
    """Module names are the released ones."""
    return key


def load_arcface(path, config: IResNetConfig | None = None) -> IResNet:
    """IResNet with released weights from a local `backbone.pth` (or safetensors).

    The depth is read off the checkpoint unless `config` is given.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an IResNet state dict, or tensors that do not fit (all named).
    """
    from lpm.bench.nets.checkpoint import load_released, read_state_dict

    state = read_state_dict(path, "ArcFace (IResNet)")
    cfg = config or config_from_state(state)
    return load_released(IResNet(cfg), state, released_key, f"ArcFace IResNet-{cfg.arch}")
