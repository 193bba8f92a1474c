"""Building the teacher, the students and the critic of a distillation run.

The teacher is Base LPM (bidirectional). Students (backbone, refiner) and the fake-score critic
are the same `LPMTransformer` class initialised from the teacher's weights; students run with
``chunk_causal`` attention (config ``<name>-online``), the critic stays bidirectional.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lpm.config import ModelConfig
from lpm.models.dit.checkpoint import load_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.train.checkpoint import latest_checkpoint


def resolve_checkpoint(path: str | Path) -> Path:
    """An LPM checkpoint directory from a checkpoint, a bundle (its transformer, where
    ``bundle.json`` points) or a run directory (its latest checkpoint's EMA weights when
    present, else its model)."""
    p = Path(path).expanduser()
    if (p / "bundle.json").is_file():  # `lpm model link` bundles point elsewhere
        from lpm.inference.bundle import BundleSpec

        return p / BundleSpec.from_file(p / "bundle.json").paths.get("transformer", "transformer")
    if (p / "config.json").is_file():
        return p
    latest = latest_checkpoint(p)
    if latest is not None:
        return latest / "ema" if (latest / "ema" / "config.json").is_file() else latest
    raise FileNotFoundError(
        f"{p} is neither an LPM checkpoint (config.json + model.safetensors), a bundle "
        "(bundle.json) nor a run directory with checkpoints/"
    )


def teacher_config(recipe) -> ModelConfig:
    """The teacher's config, read without loading its weights (the recipe's with no teacher)."""
    from lpm.models.dit.checkpoint import load_lpm_config

    if recipe.teacher:
        return load_lpm_config(resolve_checkpoint(recipe.teacher))
    return recipe.model_config()


def load_teacher(path: str, cfg: ModelConfig, *, seed: int, device: torch.device) -> LPMTransformer:
    """The frozen Base LPM teacher in eval mode; an empty ``path`` builds a seeded random one."""
    if path:
        model = load_lpm_checkpoint(resolve_checkpoint(path), device=device, dtype=torch.float32)
        if model.cfg.attention != "bidirectional":
            raise ValueError(
                f"teacher {path} has attention={model.cfg.attention!r}; the teacher must be a "
                "bidirectional Base LPM checkpoint"
            )
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LPMTransformer(cfg.replace(attention="bidirectional")).to(device)
    return freeze(model)


def freeze(model: LPMTransformer) -> LPMTransformer:
    """Eval mode, no gradients for any parameter."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def init_from(
    cfg: ModelConfig, teacher: LPMTransformer, init: str, device: torch.device
) -> LPMTransformer:
    """A trainable model of config ``cfg`` with the weights of ``init`` (a checkpoint or run
    directory) or, when empty, of the teacher (Base LPM init: same class, same parameters)."""
    model = LPMTransformer(cfg).to(device)
    if init:
        source = load_lpm_checkpoint(resolve_checkpoint(init), dtype=torch.float32)
        state = source.state_dict()
    else:
        state = teacher.state_dict()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        source = init or "the teacher"
        raise ValueError(f"weights from {source} do not fit {cfg.name!r}: {err}") from None
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model
