"""Saving small modules as a config JSON + safetensors pair, and loading them back strictly.

Layout of a module directory: ``config.json`` (the module's config dataclass) and
``model.safetensors`` (its state dict). Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn


def write_config(directory: Path, config: Any) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2))


def read_config(config_cls, directory: Path):
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    data = json.loads(path.read_text())
    for f in dataclasses.fields(config_cls):
        if isinstance(data.get(f.name), list):
            data[f.name] = tuple(data[f.name])
    return config_cls(**data)


def save_module(module: nn.Module, config: Any, directory: Path, half: bool) -> None:
    write_config(directory, config)
    state = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous()
        for k, v in module.state_dict().items()
    }
    save_file(state, str(directory / "model.safetensors"))


def load_module(module_cls, config_cls, directory: Path) -> nn.Module:
    module = module_cls(read_config(config_cls, directory))
    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(weights).items()}
    module.load_state_dict(state, strict=True)
    return module
