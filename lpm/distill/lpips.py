"""LPIPS (Zhang et al. 2018): a perceptual distance from an ImageNet trunk and learned heads.

Legend: B images, H/W pixels, C_k channels of tap k.

Images (B, 3, H, W) in [-1, 1] are shifted and scaled per channel, passed through the trunk
(AlexNet or VGG16 ``features``), and at five taps (after ReLU) the features are unit-normalised
over channels; the squared difference of the two images' features is weighted per channel by a
non-negative 1x1 head, averaged over space and summed over taps: a distance (B,).

Weights are never downloaded: `load_lpips` reads local files that the user supplies, in
safetensors (preferred) or, if a ``.pth`` must be read, with ``torch.load(weights_only=True)``.
Accepted names: torchvision's ``features.N.*`` (trunk), the LPIPS release's
``lin{k}.model.1.weight`` (heads) and its full-module names ``net.slice{s}.N.*``; ours are
``features.N.*`` and ``heads.k.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

#: Per-channel input shift and scale of the LPIPS release (inputs in [-1, 1]).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
#: Default tap widths.
WIDTHS: dict[str, tuple[int, ...]] = {
    "alex": (64, 192, 384, 256, 256),
    "vgg16": (64, 128, 256, 512, 512),
}


@dataclass(kw_only=True, frozen=True)
class LPIPSConfig:
    """Which trunk, and its tap widths (smaller widths only for tests)."""

    trunk: str = "alex"
    """``alex`` or ``vgg16``."""
    widths: tuple[int, ...] | None = None
    """Channels at the five taps; None = the standard network's."""

    def __post_init__(self) -> None:
        if self.trunk not in WIDTHS:
            raise ValueError(f"trunk={self.trunk!r} must be one of {sorted(WIDTHS)}")
        if self.widths is not None and (len(self.widths) != 5 or min(self.widths) < 1):
            raise ValueError(f"widths={self.widths} must be five positive channel counts")

    @property
    def tap_widths(self) -> tuple[int, ...]:
        return self.widths or WIDTHS[self.trunk]


def _alex_features(w: Sequence[int]) -> tuple[nn.Sequential, tuple[int, ...]]:
    layers = [
        nn.Conv2d(3, w[0], 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(w[0], w[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(w[1], w[2], 3, padding=1), nn.ReLU(),
        nn.Conv2d(w[2], w[3], 3, padding=1), nn.ReLU(),
        nn.Conv2d(w[3], w[4], 3, padding=1), nn.ReLU(),
    ]  # fmt: skip
    return nn.Sequential(*layers), (1, 4, 7, 9, 11)


def _vgg16_features(w: Sequence[int]) -> tuple[nn.Sequential, tuple[int, ...]]:
    layers: list[nn.Module] = []
    taps, c_in = [], 3
    for stage, (c, convs) in enumerate(zip(w, (2, 2, 3, 3, 3), strict=True)):
        if stage:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(convs):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            c_in = c
        taps.append(len(layers) - 1)
    return nn.Sequential(*layers), tuple(taps)


class LPIPS(nn.Module):
    """The LPIPS distance; see the module docstring. Frozen once loaded."""

    def __init__(self, config: LPIPSConfig) -> None:
        super().__init__()
        self.config = config
        build = _alex_features if config.trunk == "alex" else _vgg16_features
        self.features, self.taps = build(config.tap_widths)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in config.tap_widths)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h / (h.square().sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if i == self.taps[-1]:
                break
        return out

    def forward(self, x_b3hw: torch.Tensor, y_b3hw: torch.Tensor) -> torch.Tensor:
        """Distance (B,) between images x and y (B, 3, H, W) in [-1, 1]."""
        total = x_b3hw.new_zeros(x_b3hw.shape[0])
        for head, fx, fy in zip(self.heads, self._taps(x_b3hw), self._taps(y_b3hw), strict=True):
            total = total + head((fx - fy).square()).mean(dim=(1, 2, 3))
        return total


_IGNORED = re.compile(r"^(classifier\.|scaling_layer\.)")
_HEAD = re.compile(r"^lin(\d)\.model\.1\.weight$")
_SLICE = re.compile(r"^net\.slice\d\.(\d+)\.(weight|bias)$")


def _canonical(name: str) -> str | None:
    """Our parameter name for a name from a weight file; None for entries that are not used."""
    if _IGNORED.match(name):
        return None
    if m := _HEAD.match(name):
        return f"heads.{m.group(1)}.weight"
    if m := _SLICE.match(name):
        return f"features.{m.group(1)}.{m.group(2)}"
    return name


def read_weight_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, or of a ``.pth``/``.pt`` read with ``weights_only=True``."""
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS weight file {path} does not exist; pass the trunk and head weights you have "
            "locally (e.g. lpips_weights=alexnet.safetensors,alex_heads.safetensors)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in (".pth", ".pt"):
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"{path} does not hold a state dict of tensors")
        return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    raise ValueError(f"{path}: LPIPS weights must be .safetensors (or .pth / .pt)")


def load_lpips(paths: str | Sequence[str | Path], config: LPIPSConfig | None = None) -> LPIPS:
    """An `LPIPS` with weights from local files (comma-separated string or a list), strictly.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a tensor is missing, unexpected or of the wrong shape (named).
    """
    config = config or LPIPSConfig()
    if isinstance(paths, str):
        paths = [p for p in (s.strip() for s in paths.split(",")) if p]
    if not paths:
        raise ValueError("no LPIPS weight files given (lpips_weights=TRUNK_FILE,HEADS_FILE)")
    state: dict[str, torch.Tensor] = {}
    for path in paths:
        for name, tensor in read_weight_file(Path(path).expanduser()).items():
            key = _canonical(name)
            if key is not None:
                state[key] = tensor
    model = LPIPS(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs {tuple(s)}"
        for k, s in expected.items()
        if k in state and state[k].shape != s
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"LPIPS weights {list(map(str, paths))} do not match the {config.trunk} network "
            f"(widths {config.tap_widths}): missing {missing[:6]}, unexpected {unexpected[:6]}, "
            f"wrong shapes {wrong[:4]}"
        )
    model.load_state_dict({k: state[k].float() for k in expected}, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
