"""Released checkpoints of external networks, read from local files and checked tensor by tensor.

A released checkpoint is a state dict saved by the network's own project (`torch.save`, zip or
legacy format, read with ``weights_only=True`` so nothing but tensors is unpickled) or the same
tensors in a safetensors file. Its key names are the released ones; each network module supplies
the mapping from those names to its own (`load_released`). Nothing is ever downloaded.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

OPTIONAL_SUFFIXES: tuple[str, ...] = ("num_batches_tracked",)
"""Buffers that older releases lack and newer ones carry; neither absence nor presence is an
error (they do not change the output in eval mode)."""
CONTAINER_KEYS: tuple[str, ...] = ("state_dict", "model", "net")
"""Keys under which some releases nest the state dict."""
STRIPPED_PREFIXES: tuple[str, ...] = ("module.",)
"""Prefixes left by `nn.DataParallel` / DDP wrappers."""


def is_torchscript(path: str | Path) -> bool:
    """True for a `torch.jit.save` archive (it carries code; a `torch.save` state dict does not)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("/code/" in n or n.endswith("constants.pkl") for n in zf.namelist())


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint (`.safetensors`, or a `torch.save` state dict).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is neither safetensors nor a `torch.save` dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any read error becomes one clear message
            raise ValueError(f"{path} is not a readable safetensors file ({what}): {err}") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"{path} is not a state dict of {what} that loads with weights_only=True: {err}. "
            "Pass the released state dict (or the same tensors saved as .safetensors)"
        ) from None
    for key in CONTAINER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{path} holds {type(obj).__name__}, not a state dict of {what}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is {type(value).__name__}, not a tensor")
        for prefix in STRIPPED_PREFIXES:
            key = key.removeprefix(prefix)
        state[str(key)] = value
    return state


def _few(keys: list[str], n: int = 10) -> str:
    shown = ", ".join(keys[:n])
    return f"[{shown}{f', ... ({len(keys) - n} more)' if len(keys) > n else ''}]"


def _optional(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in OPTIONAL_SUFFIXES


def load_released(
    model: nn.Module,
    released: dict[str, torch.Tensor],
    released_key: Callable[[str], str],
    what: str,
) -> nn.Module:
    """Load `released` (released key names) into `model`, strictly.

    Args:
        released_key: the model's key -> its released name (the inverse is built from the
            model's own keys, so an unknown released name is reported as unexpected).

    Returns:
        `model` in eval mode, every tensor cast to the model's own dtype.

    Raises:
        ValueError: naming every missing, unexpected and mis-shaped tensor (released names).
    """
    own = model.state_dict()
    names = {released_key(k): k for k in own}
    mapped = {names[k]: t for k, t in released.items() if k in names}
    unexpected = [k for k in released if k not in names]
    missing = [r for r, k in names.items() if k not in mapped and not _optional(k)]
    shapes = [
        f"{released_key(k)} {tuple(t.shape)} (expected {tuple(own[k].shape)})"
        for k, t in mapped.items()
        if t.shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"the checkpoint does not match the {what} architecture: "
            f"{len(missing)} missing {_few(missing)}, {len(unexpected)} unexpected "
            f"{_few(unexpected)}, {len(shapes)} mis-shaped {_few(shapes)}"
        )
    model.load_state_dict({k: t.to(own[k].dtype) for k, t in mapped.items()}, strict=False)
    return model.eval()


def released_state(model: nn.Module, released_key: Callable[[str], str]) -> dict[str, torch.Tensor]:
    """The model's state dict under its released key names (test files, conversions)."""
    return {released_key(k): v.detach().clone() for k, v in model.state_dict().items()}
