"""I3D (Carreira & Zisserman, 2017): Inception-v1 inflated to 3-D, the network behind FVD.

Shape legend:
    B  clips    T  frames per clip (16)    H = W = 224    K  classes (400 for Kinetics-400)

Input (B, 3, T, 224, 224) RGB in [-1, 1]. Every convolution is a `Unit3D` (conv3d without
bias -> BN(eps 1e-3) -> ReLU) padded like TensorFlow's "SAME" (asymmetric, computed from the
input size), as are the max pools. Stem: 7x7x7/2 conv, 1x3x3/(1,2,2) pool, 1x1x1 and 3x3x3
convs, pool; then Inception modules 3b 3c, a 3x3x3/2 pool, 4b..4f, a 2x2x2/2 pool, 5b 5c
(1024 channels at (T/8, 7, 7)); a 2x7x7 average pool and a 1x1x1 conv with bias give (B, K,
T/8 - 1) logits. `forward` returns them averaged over time: (B, K), the features of FVD.

Module names are the released ones (`rgb_imagenet.pt` of the public pytorch-i3d project:
`Conv3d_1a_7x7.conv3d.weight`, `Mixed_4b.b1b.bn.running_mean`, `logits.conv3d.bias`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

INCEPTION_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
"""Per Inception module: 1x1 branch; 1x1 -> 3x3 branch (2); 1x1 -> 3x3 branch (2); pool -> 1x1."""
POOL_BEFORE = {
    "Mixed_3b": "MaxPool3d_3a_3x3",
    "Mixed_4b": "MaxPool3d_4a_3x3",
    "Mixed_5b": "MaxPool3d_5a_2x2",
}
POOLS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}
"""(kernel, stride) of the max pools, all TF-"SAME" padded."""


@dataclass(frozen=True, kw_only=True)
class I3DConfig:
    """I3D size: `width` scales every channel count (1.0: released; smaller: test models)."""

    num_classes: int = 400
    """K: logits (400 for the Kinetics-400 weights used by FVD)."""
    width: float = 1.0
    """Multiplier of every channel count (rounded up)."""

    def __post_init__(self) -> None:
        if self.num_classes < 1 or not 0 < self.width <= 1:
            raise ValueError(f"num_classes must be >= 1 and 0 < width <= 1, got {self}")

    def ch(self, n: int) -> int:
        return max(1, math.ceil(n * self.width))


def _same_pad(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """F.pad amounts (last dim first) of TensorFlow "SAME" padding."""
    pad: list[int] = []
    for s, k, st in reversed(list(zip(size, kernel, stride, strict=True))):
        total = max(k - (st if s % st == 0 else s % st), 0)
        pad += [total // 2, total - total // 2]
    return pad


class Unit3D(nn.Module):
    """SAME-padded conv3d -> BN -> ReLU (the logits unit: conv with bias only)."""

    def __init__(
        self, c_in: int, c_out: int, kernel=(1, 1, 1), stride=(1, 1, 1), head: bool = False
    ) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(c_in, c_out, self.kernel, stride=self.stride, bias=head)
        self.bn = None if head else nn.BatchNorm3d(c_out, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, _same_pad(tuple(x.shape[2:]), self.kernel, self.stride)))
        return x if self.bn is None else torch.relu(self.bn(x))


class SamePool3d(nn.Module):
    """Max pool with TF-"SAME" zero padding (inputs follow a ReLU, so zeros never win wrongly)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pad(tuple(x.shape[2:]), self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches concatenated: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1."""

    def __init__(self, c_in: int, c: tuple[int, ...]) -> None:
        super().__init__()
        self.b0 = Unit3D(c_in, c[0])
        self.b1a, self.b1b = Unit3D(c_in, c[1]), Unit3D(c[1], c[2], (3, 3, 3))
        self.b2a, self.b2b = Unit3D(c_in, c[3]), Unit3D(c[3], c[4], (3, 3, 3))
        self.b3a, self.b3b = SamePool3d((3, 3, 3), (1, 1, 1)), Unit3D(c_in, c[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1
        )


class InceptionI3d(nn.Module):
    """(B, 3, T, 224, 224) RGB clips in [-1, 1] -> (B, K) time-averaged logits."""

    def __init__(self, config: I3DConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or I3DConfig()
        ch = cfg.ch
        self.Conv3d_1a_7x7 = Unit3D(3, ch(64), (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = SamePool3d(*POOLS["MaxPool3d_2a_3x3"])
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64))
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3))
        c_in = ch(192)
        for name, chans in INCEPTION_CHANNELS.items():
            if name in POOL_BEFORE:
                self.add_module(POOL_BEFORE[name], SamePool3d(*POOLS[POOL_BEFORE[name]]))
            scaled = tuple(ch(c) for c in chans)
            self.add_module(name, InceptionModule(c_in, scaled))
            c_in = scaled[0] + scaled[2] + scaled[4] + scaled[5]
        self.logits = Unit3D(c_in, cfg.num_classes, head=True)
        self.feature_dim = c_in

    def features(self, clips_bcthw: torch.Tensor) -> torch.Tensor:
        """(B, 1024, T/8 - 1, 1, 1) average-pooled Mixed_5c features."""
        x = clips_bcthw
        for module in self.children():
            if module is self.logits:
                break
            x = module(x)
        return F.avg_pool3d(x, (2, 7, 7), stride=1)

    def forward(self, clips_bcthw: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(clips_bcthw)).mean(dim=(2, 3, 4))


def released_key(key: str) -> str:
    """Module names are the released ones."""
    return key


def load_i3d(path, config: I3DConfig | None = None) -> InceptionI3d:
    """I3D with released weights from a local file (pytorch-i3d `rgb_imagenet.pt` or
    safetensors); the number of classes is read off `logits.conv3d.weight`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a state dict, or tensors that do not fit (all named).
    """
    from lpm.bench.nets.checkpoint import load_released, read_state_dict

    state = read_state_dict(path, "I3D")
    if config is None:
        head = state.get("logits.conv3d.weight")
        config = I3DConfig(num_classes=int(head.shape[0]) if head is not None else 400)
    return load_released(InceptionI3d(config), state, released_key, "I3D (Inception-v1)")
