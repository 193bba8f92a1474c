"""Delta checkpoints: a fine-tuned LPM stored as its low-rank difference from a base checkpoint.

A distilled student (Online LPM's backbone and refiner) starts from Base LPM's weights and moves
little, so shipping it as ``base + delta`` with each matrix's delta truncated to rank r costs a
fraction of a full copy. A delta checkpoint directory::

    config.json          the fine-tuned model's ModelConfig, as in any LPM checkpoint
    delta.json           {"format": "lpm-delta", "version": 1, "base": DIR, "rank": r,
                          "base_fingerprint": F}
                         DIR: the base LPM checkpoint, relative to this directory (or absolute)
                         F: `base_fingerprint` of the base's weights when the delta was taken
                           (absent in deltas written before it existed: not checked)
    delta.safetensors    for each changed tensor K (shape legend: out x in for a matrix):
                           K.lora_b (out, r) and K.lora_a (r, in): delta ~= lora_b @ lora_a,
                             for a matrix whose rank-r factors are smaller than the matrix;
                           K.diff (shape of K): the whole difference otherwise.
                         Tensors it does not name equal the base's.

`load_lpm_checkpoint` reads delta checkpoints transparently; the base must have the same tensor
names and shapes (its config may differ in attention mode or name) and, where the delta records
one, the same fingerprint: a base trained further or replaced keeps its names and shapes, and
adding the old delta to it gives a model nobody trained.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from lpm.models.dit.checkpoint import (
    CONFIG_NAME,
    SafetensorsSource,
    atomic_directory,
    expected_shapes,
    load_lpm_config,
)
from lpm.models.dit.model import LPMTransformer

DELTA_NAME = "delta.json"
DELTA_WEIGHTS = "delta.safetensors"
DELTA_FORMAT = "lpm-delta"
DELTA_VERSION = 1
#: `base_fingerprint` reads this many evenly spaced blocks of this many bytes from each file.
_FINGERPRINT_BLOCKS, _FINGERPRINT_BLOCK_BYTES = 32, 4096


@dataclass
class DeltaReport:
    """What `save_delta_checkpoint` kept of the difference."""

    tensors: int
    """Tensors of the model."""
    low_rank: int
    """Matrices stored as rank-r factors."""
    full: int
    """Tensors stored as a whole difference."""
    unchanged: int
    """Tensors equal to the base (not stored)."""
    kept: float
    """1 - ||delta - stored|| / ||delta|| over all tensors (1 = lossless)."""
    bytes: int
    """Size of delta.safetensors."""


def is_delta_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / DELTA_NAME).is_file()


def base_fingerprint(base: str | Path) -> str:
    """A fingerprint of an LPM checkpoint's weights: SHA-256 over each weight file's name, size
    and safetensors header and 32 evenly spaced 4-KiB blocks of its data. Training changes every
    tensor, so it tells a retrained base from the one a delta was taken from; it reads about
    128 KiB per file, so it costs the same for a 17B base as for lpm-nano."""
    digest = hashlib.sha256()
    with SafetensorsSource.open(base) as source:
        files = list(source.files)
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}:".encode())
        with path.open("rb") as f:
            header = int.from_bytes(f.read(8), "little")
            digest.update(f.read(min(header, size)))
            start = 8 + header
            span = max(size - start - _FINGERPRINT_BLOCK_BYTES, 0)
            for i in range(_FINGERPRINT_BLOCKS):
                f.seek(start + span * i // max(_FINGERPRINT_BLOCKS - 1, 1))
                digest.update(f.read(_FINGERPRINT_BLOCK_BYTES))
    return digest.hexdigest()[:32]


def save_delta_checkpoint(
    model: LPMTransformer,
    base: str | Path,
    directory: str | Path,
    *,
    rank: int,
    dtype: torch.dtype = torch.float16,
    base_ref: str | None = None,
    overwrite: bool = False,
) -> DeltaReport:
    """Write ``model`` as a delta from the LPM checkpoint ``base`` (atomically).

    Each changed matrix is stored as its rank-``rank`` truncation (two factors) when that is
    smaller than the matrix; ``rank=0`` stores every difference whole (no SVD, no truncation: the
    real scales, whose students differ from the base in more directions than a low rank holds).

    The difference is taken against the base's stored tensors exactly as a loader reads them, so
    only the rank truncation and ``dtype`` rounding of the delta lose anything. ``base_ref`` is
    the base path recorded in delta.json (default: ``base`` relative to ``directory``).

    Raises:
        ValueError: rank < 0, or the base's tensor names or shapes differ from the model's.
    """
    if rank < 0:
        raise ValueError(f"rank={rank} must be >= 0 (0: the whole difference, no truncation)")
    base, out = Path(base), Path(directory)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    base_state = _read_base(base, {k: tuple(v.shape) for k, v in state.items()})
    stored: dict[str, torch.Tensor] = {}
    low_rank = full = unchanged = 0
    err2 = total2 = 0.0
    for key, weight in state.items():
        delta = weight - base_state[key]
        if not torch.any(delta):
            unchanged += 1
            continue
        if rank and delta.ndim == 2 and rank * sum(delta.shape) < delta.numel():
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            root = s[:rank].sqrt()
            stored[f"{key}.lora_b"] = (u[:, :rank] * root).to(dtype).contiguous()
            stored[f"{key}.lora_a"] = (root[:, None] * vh[:rank]).to(dtype).contiguous()
            approx = stored[f"{key}.lora_b"].float() @ stored[f"{key}.lora_a"].float()
            low_rank += 1
        else:
            stored[f"{key}.diff"] = delta.to(dtype).contiguous()
            approx = stored[f"{key}.diff"].float()
            full += 1
        err2 += float((delta - approx).square().sum())
        total2 += float(delta.square().sum())
    if base_ref is None:
        base_ref = os.path.relpath(base.resolve(), out.resolve())
    spec = {
        "format": DELTA_FORMAT, "version": DELTA_VERSION, "base": base_ref, "rank": rank,
        "base_fingerprint": base_fingerprint(base),
    }  # fmt: skip
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(model.cfg.to_json())
        (tmp / DELTA_NAME).write_text(json.dumps(spec, indent=2) + "\n")
        save_file(stored, str(tmp / DELTA_WEIGHTS))
    return DeltaReport(
        tensors=len(state), low_rank=low_rank, full=full, unchanged=unchanged,
        kept=1.0 - (err2 / total2) ** 0.5 if total2 else 1.0,
        bytes=(out / DELTA_WEIGHTS).stat().st_size,
    )  # fmt: skip


def load_delta_state(directory: str | Path) -> dict[str, torch.Tensor]:
    """The full fp32 state dict of a delta checkpoint: base tensors + stored deltas.

    Raises:
        FileNotFoundError: no delta.json / delta.safetensors, or the base checkpoint is missing.
        ValueError: an unknown format, a base that does not match the config or is not the
            base the delta was taken from, or delta tensors that name unknown keys or have the
            wrong shapes.
    """
    directory = Path(directory)
    spec = json.loads((directory / DELTA_NAME).read_text())
    if spec.get("format") != DELTA_FORMAT or spec.get("version") != DELTA_VERSION:
        raise ValueError(
            f"{directory / DELTA_NAME}: not an {DELTA_FORMAT} v{DELTA_VERSION} file ({spec})"
        )
    base = Path(spec["base"])
    base = base if base.is_absolute() else directory / base
    shapes = expected_shapes(load_lpm_config(directory))
    state = _read_base(base, shapes)
    recorded = spec.get("base_fingerprint")
    if recorded is not None and (found := base_fingerprint(base)) != recorded:
        raise ValueError(
            f"{directory} is a delta from another version of its base {base.resolve()}: the "
            f"base's weights have changed since the delta was taken (fingerprint {found}, "
            f"delta made against {recorded}). Restore that base, or take the delta again from "
            f"this one (for an online bundle: `lpm model pack-online --base BASE_BUNDLE ...`)"
        )
    weights = directory / DELTA_WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"delta checkpoint {directory} has no {DELTA_WEIGHTS}")
    with SafetensorsSource.open(weights) as source:
        names = set(source.keys())
        for name in sorted(names):
            key, _, part = name.rpartition(".")
            if key not in shapes or part not in ("diff", "lora_a", "lora_b"):
                raise ValueError(f"{weights}: tensor {name!r} names no tensor of the model")
            if part == "lora_a":
                continue
            if part == "diff":
                delta = source.get(name).float()
            else:
                if f"{key}.lora_a" not in names:
                    raise ValueError(f"{weights}: {name!r} has no matching {key}.lora_a")
                delta = source.get(name).float() @ source.get(f"{key}.lora_a").float()
            if tuple(delta.shape) != shapes[key]:
                raise ValueError(
                    f"{weights}: the delta of {key!r} has shape {tuple(delta.shape)}; "
                    f"the model expects {shapes[key]}"
                )
            state[key] = state[key] + delta
    return state


def _read_base(base: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    if not base.is_dir():
        raise FileNotFoundError(f"the base checkpoint {base} of a delta checkpoint does not exist")
    with SafetensorsSource.open(base) as source:
        stored = set(source.keys())
        mismatched = sorted(k for k in shapes if k not in stored or source.shape(k) != shapes[k])
        if mismatched or len(stored) != len(shapes):
            raise ValueError(
                f"base checkpoint {base} does not match the model: tensors missing or of another "
                f"shape {mismatched[:8]}; a delta needs a base of the same architecture"
            )
        return {k: source.get(k).float() for k in shapes}
