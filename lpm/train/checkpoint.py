"""Training checkpoints: model, EMA, optimiser, LR schedule, data position, step and RNG states.

Layout of ``<run>/checkpoints/step-XXXXXXXX/``::

    config.json, model.safetensors      the model, an ordinary LPM checkpoint (load_lpm_checkpoint)
    ema/config.json, ema/model.safetensors   the EMA weights, also an LPM checkpoint (if EMA is on)
    optimizer.safetensors               AdamW state tensors, named ``state/<param>/<key>``
    optimizer.json                      param groups (parameters by name) and non-tensor state
    trainer.json                        step, sampler position, LR-scheduler state, EMA count
    rng/rank-XXXXX.safetensors + .json  every rank's torch CPU/CUDA, numpy and python RNG state

Nothing is pickled. With FSDP2 the model and optimiser are gathered as *full* state dicts on
rank 0 (`torch.distributed.checkpoint.state_dict.get_state_dict` with ``full_state_dict`` and
``cpu_offload``), which rank 0 writes; on load every rank reads the same files and
`set_state_dict` keeps its own shard. This keeps checkpoints independent of the world size (a
run may resume on a different number of ranks) at the cost of holding one full copy in rank 0's
CPU memory, which suits lpm-nano and lpm-1.3b; for lpm-17b use a node with enough host memory or
swap in DCP's sharded save. Files are read by every rank, so multi-node runs need a shared file
system.

A checkpoint is written into ``.step-XXXXXXXX.partial`` and renamed into place when complete;
`latest_checkpoint` only ever sees complete ones.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lpm.config import ModelConfig
from lpm.models.dit.checkpoint import CONFIG_NAME, SafetensorsSource, write_safetensors_shards
from lpm.parallel.distributed import DistInfo, barrier
from lpm.train.determinism import rng_state, set_rng_state
from lpm.train.ema import EMA

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"^step-(\d{8})$")


@dataclass(kw_only=True)
class TrainerState:
    """The non-tensor progress of a run."""

    step: int
    """Optimiser steps completed."""
    sampler: dict[str, int]
    """`StageSampler.state_dict()`."""
    scheduler: dict[str, Any]
    """`LambdaLR.state_dict()` (JSON-safe)."""
    ema_updates: int
    """EMA updates made."""
    world_size: int
    """Ranks that wrote the checkpoint."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / "trainer.json").is_file()
    ]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def _gather(model: nn.Module, optimizer: torch.optim.Optimizer, dist_info: DistInfo):
    """Full model and flattened optimiser state dicts (on rank 0; empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    offload = dist_info.distributed and dist_info.world_size > 1
    model_sd, optim_sd = get_state_dict(
        model, optimizer, options=_state_dict_options(cpu_offload=offload)
    )
    return model_sd, optim_sd


def _write_lpm_dir(directory: Path, cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(cfg.to_json())
    write_safetensors_shards(((k, v.detach().cpu()) for k, v in tensors.items()), directory)


def save_checkpoint(
    run_dir: Path, *, step: int, cfg: ModelConfig, model: nn.Module,
    optimizer: torch.optim.Optimizer, ema: EMA | None, state: TrainerState,
    dist_info: DistInfo, keep: int = 0,
) -> Path:  # fmt: skip
    """Write a checkpoint of ``step`` atomically (collective: every rank must call it).

    Returns the checkpoint directory. ``keep`` > 0 removes all but the newest ``keep``.
    """
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".{final.name}.partial"
    if dist_info.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    barrier()
    tensors, meta = rng_state()
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(tmp / "rng" / f"rank-{dist_info.rank:05d}.safetensors"),
    )
    (tmp / "rng" / f"rank-{dist_info.rank:05d}.json").write_text(json.dumps(meta))
    model_sd, optim_sd = _gather(model, optimizer, dist_info)
    ema_sd = ema.full_state_dict() if ema is not None else None
    if ema_sd is not None:  # frozen parameters have no average: the EMA model keeps them as is
        ema_sd = {name: ema_sd.get(name, value) for name, value in model_sd.items()}
    if dist_info.is_main:
        _write_lpm_dir(tmp, cfg, model_sd)
        if ema_sd is not None:
            _write_lpm_dir(tmp / "ema", cfg, ema_sd)
        opt_tensors, opt_other = _split_optimizer_state(optim_sd)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_other, indent=1, sort_keys=True))
        (tmp / "trainer.json").write_text(json.dumps(state.__dict__, indent=2, sort_keys=True))
    barrier()
    if dist_info.is_main:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if keep > 0:
            for old in list_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s", final)
    barrier()
    return final


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a single-file or sharded ``model*.safetensors`` in ``directory``."""
    with SafetensorsSource.open(directory) as source:
        return {k: source.get(k) for k in source.keys()}  # noqa: SIM118 (not iterable)


def _split_optimizer_state(
    optim_sd: dict[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors ``state/<param>/<key>`` for safetensors, and the JSON-safe rest (param groups,
    non-tensor per-parameter entries)."""
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, Any] = {"param_groups": optim_sd["param_groups"], "state": {}}
    for fqn, entries in optim_sd["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{fqn}/{key}"] = value.detach().cpu().contiguous()
            else:
                other["state"].setdefault(fqn, {})[key] = value
    return tensors, other


def _join_optimizer_state(
    tensors: dict[str, torch.Tensor], other: dict[str, Any]
) -> dict[str, Any]:
    """Inverse of `_split_optimizer_state`."""
    state: dict[str, dict[str, Any]] = {fqn: dict(v) for fqn, v in other["state"].items()}
    for name, value in tensors.items():
        _, fqn, key = name.split("/")
        state.setdefault(fqn, {})[key] = value
    groups = [
        {k: tuple(v) if k == "betas" else v for k, v in group.items()}
        for group in other["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def load_checkpoint(
    path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None,
    dist_info: DistInfo,
) -> TrainerState:  # fmt: skip
    """Load a checkpoint written by `save_checkpoint` into (possibly sharded) objects.

    Every rank reads the files. RNG states are restored for ranks that wrote one; a run resumed
    on a different world size keeps its fresh RNG state on the new ranks (training draws depend
    only on seeds, so this does not change the data or noise).
    """
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    path = Path(path)
    state = TrainerState(**json.loads((path / "trainer.json").read_text()))
    model_sd = _read_weights(path)
    optim_sd = _join_optimizer_state(
        load_file(str(path / "optimizer.safetensors")),
        json.loads((path / "optimizer.json").read_text()),
    )
    set_model_state_dict(model, model_sd, options=_state_dict_options())
    # Parameters that have not had a gradient yet (the listen path during the speak stage) have
    # no AdamW state; that is expected, so the optimiser is loaded non-strictly.
    set_optimizer_state_dict(model, optimizer, optim_sd, options=_state_dict_options(strict=False))
    # Loading materialises state for every parameter (a zero-gradient step); drop it again for
    # those that had none, or their Adam step counts would run one ahead of an unbroken run.
    for fqn, param in model.named_parameters():
        if fqn not in optim_sd["state"]:
            optimizer.state.pop(param, None)
    if ema is not None:
        if (path / "ema" / CONFIG_NAME).is_file():
            ema.load_full_state_dict(_read_weights(path / "ema"), state.ema_updates)
        else:
            log.warning("%s has no EMA weights; the EMA restarts from the current model", path)
    rng_file = path / "rng" / f"rank-{dist_info.rank:05d}.safetensors"
    if rng_file.is_file():
        set_rng_state(
            load_file(str(rng_file)), json.loads(rng_file.with_suffix(".json").read_text())
        )
    else:
        log.warning(
            "%s has no RNG state for rank %d; keeping the current one", path, dist_info.rank
        )
    return state
