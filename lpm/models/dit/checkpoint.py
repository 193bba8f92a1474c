"""The LPM checkpoint format, and the safetensors plumbing shared with the Wan2.1 converter.

An LPM checkpoint is a directory::

    <dir>/config.json                   ModelConfig.to_dict()
    <dir>/model.safetensors             every tensor of LPMTransformer.state_dict()
  or, when sharded,
    <dir>/model-0000i-of-0000n.safetensors + <dir>/model.safetensors.index.json

The index follows the usual ``{"metadata": {"total_size": bytes}, "weight_map": {key: file}}``
layout. Only safetensors are ever read: nothing here unpickles a file.

Directories are written atomically: tensors go to a hidden temporary directory beside the
destination, which is renamed into place only once everything is on disk, so a failed write
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from lpm.config import ModelConfig
from lpm.models.dit.model import LPMTransformer

CONFIG_NAME = "config.json"
WEIGHTS_STEM = "model"
#: Default largest shard written, in bytes.
DEFAULT_MAX_SHARD_BYTES = 5 * 1024**3
#: Pickle-based weight files that are refused rather than loaded.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl")

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}  # fmt: skip

ProgressFn = Callable[[int, int, str], None]
"""Called as ``progress(done, total, name)`` after each source shard is read."""


class SafetensorsSource:
    """Lazy read access to a single or sharded safetensors checkpoint.

    Only headers are read on opening, so key names, shapes and dtypes are known before any tensor
    is loaded; tensors are read one at a time with `get`.
    """

    def __init__(self, files: list[Path], key_to_file: dict[str, Path], where: str) -> None:
        self.files = files
        """The shard files, in order."""
        self.key_to_file = key_to_file
        """Every tensor name -> the shard holding it."""
        self.where = where
        """Human-readable description of the checkpoint, used in error messages."""
        self._handles: dict[Path, Any] = {}

    # ---- opening ------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, stems: tuple[str, ...] = (WEIGHTS_STEM,)) -> SafetensorsSource:
        """Open a ``.safetensors`` file, or a directory holding one or a sharded set.

        In a directory, an ``<stem>.safetensors.index.json`` is preferred, then
        ``<stem>.safetensors``, for the first stem of ``stems`` that has either; failing that a
        directory holding exactly one ``*.safetensors`` file is accepted.

        Raises:
            FileNotFoundError: the path, a weights file, or a shard named by the index is missing.
            ValueError: pickle-only weights, an unreadable file, or a key held by two shards.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint path {path} does not exist")
        if path.is_file():
            if path.suffix != ".safetensors":
                raise ValueError(_refuse_message(path))
            return cls._from_files([path], None, str(path))
        for stem in stems:
            index = path / f"{stem}.safetensors.index.json"
            if index.is_file():
                return cls._from_index(index)
            single = path / f"{stem}.safetensors"
            if single.is_file():
                return cls._from_files([single], None, str(single))
        found = sorted(path.glob("*.safetensors"))
        if len(found) == 1:
            return cls._from_files(found, None, str(found[0]))
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        expected = " or ".join(f"{s}.safetensors[.index.json]" for s in stems)
        if found:
            raise ValueError(
                f"{path} holds {len(found)} safetensors files but no index "
                f"({[p.name for p in found]}); expected {expected}"
            )
        if pickles:
            raise ValueError(
                f"{path} holds only pickle weights {pickles}. " + _refuse_message(None)
            )
        raise FileNotFoundError(f"no weights in {path}: expected {expected}")

    @classmethod
    def _from_index(cls, index: Path) -> SafetensorsSource:
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(
                f"{index} is not a safetensors index (no 'weight_map'): {err}"
            ) from None
        names = sorted(set(weight_map.values()))
        files = [index.parent / name for name in names]
        for file in files:
            if not file.is_file():
                keys = [k for k, v in weight_map.items() if v == file.name]
                raise FileNotFoundError(
                    f"shard {file.name} named by {index} is missing (it should hold {len(keys)} "
                    f"tensors, e.g. {keys[0]!r}); download the complete checkpoint"
                )
        source = cls._from_files(files, index, str(index))
        for key, name in weight_map.items():
            holder = source.key_to_file.get(key)
            if holder is None or holder.name != name:
                raise ValueError(
                    f"{index} places {key!r} in {name}, but "
                    + (f"it is in {holder.name}" if holder else "no shard holds it")
                )
        return source

    @classmethod
    def _from_files(cls, files: list[Path], index: Path | None, where: str) -> SafetensorsSource:
        key_to_file: dict[str, Path] = {}
        source = cls(files, key_to_file, where)
        for file in files:
            for key in source._handle(file).keys():  # noqa: SIM118 (safe_open is no dict)
                if key in key_to_file:
                    raise ValueError(
                        f"tensor {key!r} appears in both {key_to_file[key].name} and {file.name}"
                    )
                key_to_file[key] = file
        return source

    def _handle(self, file: Path) -> Any:
        if file not in self._handles:
            try:
                self._handles[file] = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError) as err:
                raise ValueError(f"{file} is not a readable safetensors file: {err}") from None
        return self._handles[file]

    # ---- access -------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.key_to_file)

    def __contains__(self, key: str) -> bool:
        return key in self.key_to_file

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of ``key`` from the file header (no tensor read)."""
        return tuple(self._handle(self.key_to_file[key]).get_slice(key).get_shape())

    def dtype(self, key: str) -> torch.dtype:
        """dtype of ``key`` from the file header (no tensor read)."""
        code = self._handle(self.key_to_file[key]).get_slice(key).get_dtype()
        if code not in _DTYPES:
            raise ValueError(f"tensor {key!r} in {self.where} has unsupported dtype {code}")
        return _DTYPES[code]

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor onto the CPU."""
        return self._handle(self.key_to_file[key]).get_tensor(key)

    def close(self) -> None:
        self._handles.clear()

    def __enter__(self) -> SafetensorsSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse_message(path: Path | None) -> str:
    what = f"{path} is not a .safetensors file. " if path is not None else ""
    return (
        what + "Pickled weights (.pt/.pth/.bin/.ckpt) are never loaded, since unpickling can run "
        "arbitrary code; convert them to safetensors first (e.g. safetensors.torch.save_file)."
    )


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, None if absent; ValueError naming the file if malformed."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


# ---- writing ----------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_directory(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out`` that becomes ``out`` on success.

    On any exception the temporary directory is removed and ``out`` is left as it was.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; remove it or pass overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_safetensors_shards(
    tensors: Iterable[tuple[str, torch.Tensor]],
    directory: Path,
    *,
    stem: str = WEIGHTS_STEM,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``(name, tensor)`` pairs into ``directory`` as ``<stem>.safetensors``, or as
    numbered shards of at most ``max_shard_bytes`` plus ``<stem>.safetensors.index.json``.

    Tensors are consumed one at a time, so at most one shard is held in memory.
    Returns the written weight files.
    """
    if max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes={max_shard_bytes} must be positive")
    meta = {"format": "pt", **(metadata or {})}
    parts: list[tuple[Path, list[str]]] = []
    pending: dict[str, torch.Tensor] = {}
    pending_bytes = total_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        path = directory / f"{stem}-part{len(parts) + 1:05d}.safetensors"
        save_file(pending, str(path), metadata=meta)
        parts.append((path, list(pending)))
        pending, pending_bytes = {}, 0

    seen: set[str] = set()
    for name, tensor in tensors:
        if name in seen:
            raise ValueError(f"tensor {name!r} given twice")
        seen.add(name)
        size = tensor.numel() * tensor.element_size()
        if pending and pending_bytes + size > max_shard_bytes:
            flush()
        pending[name] = tensor.detach().to("cpu").contiguous()
        pending_bytes += size
        total_bytes += size
    if pending or not parts:
        flush()

    if len(parts) == 1:
        final = directory / f"{stem}.safetensors"
        parts[0][0].rename(final)
        return [final]
    n = len(parts)
    weight_map: dict[str, str] = {}
    files = []
    for i, (path, names) in enumerate(parts, start=1):
        final = directory / f"{stem}-{i:05d}-of-{n:05d}.safetensors"
        path.rename(final)
        files.append(final)
        weight_map.update(dict.fromkeys(names, final.name))
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (directory / f"{stem}.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return files


def write_lpm_checkpoint(
    cfg: ModelConfig,
    tensors: Iterable[tuple[str, torch.Tensor]],
    directory: str | Path,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write an LPM checkpoint from a config and a stream of ``(name, tensor)`` pairs, atomically.

    The names must be exactly those of ``LPMTransformer(cfg).state_dict()``; this is not checked
    here (the loader checks it). Returns the checkpoint directory.
    """
    out = Path(directory)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        (tmp / CONFIG_NAME).write_text(cfg.to_json())
        write_safetensors_shards(tensors, tmp, max_shard_bytes=max_shard_bytes, metadata=metadata)
    return out


def save_lpm_checkpoint(
    model: LPMTransformer,
    directory: str | Path,
    *,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> Path:
    """Save ``model`` (its config and every tensor, in their dtypes) as an LPM checkpoint."""
    return write_lpm_checkpoint(
        model.cfg,
        model.state_dict().items(),
        directory,
        overwrite=overwrite,
        max_shard_bytes=max_shard_bytes,
    )


# ---- loading ----------------------------------------------------------------------------------
def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of ``LPMTransformer(cfg)`` and its shape, from a meta-device build."""
    with torch.device("meta"):
        model = LPMTransformer(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def load_lpm_config(directory: str | Path) -> ModelConfig:
    """The `ModelConfig` stored in an LPM checkpoint directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"LPM checkpoint directory {directory} does not exist")
    data = read_json(directory / CONFIG_NAME)
    if data is None:
        raise FileNotFoundError(
            f"{directory} has no {CONFIG_NAME}; an LPM checkpoint holds config.json + "
            "model.safetensors (Wan2.1 weights must first go through `lpm convert wan`)"
        )
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / CONFIG_NAME} is not an LPM ModelConfig: {err}") from None


def load_lpm_checkpoint(
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> LPMTransformer:
    """Build the `LPMTransformer` of an LPM checkpoint and load its weights, strictly.

    The model is built on the meta device and the stored tensors are assigned in place, so no
    memory is spent on a random initialisation. ``dtype`` casts every floating tensor; None keeps
    the stored dtypes.

    Raises:
        FileNotFoundError: no directory, no config.json, no weights, or a missing shard.
        ValueError: a missing or unexpected tensor, or a tensor of the wrong shape (named).
    """
    directory = Path(directory)
    cfg = load_lpm_config(directory)
    expected = expected_shapes(cfg)
    if (directory / "delta.json").is_file():  # a low-rank delta from a base checkpoint
        from lpm.models.dit.delta import load_delta_state

        state = {k: _cast(v, dtype, device) for k, v in load_delta_state(directory).items()}
    else:
        state = _read_state(directory, cfg, expected, dtype, device)
    with torch.device("meta"):
        model = LPMTransformer(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None, device) -> torch.Tensor:
    if dtype is not None and tensor.is_floating_point():
        tensor = tensor.to(dtype)
    return tensor.to(device)


def _read_state(directory: Path, cfg: ModelConfig, expected: dict[str, tuple[int, ...]],
                dtype: torch.dtype | None, device) -> dict[str, torch.Tensor]:  # fmt: skip
    """Every tensor of a (sharded) safetensors LPM checkpoint, checked against ``expected``,
    cast one at a time (peak memory: the loaded model)."""
    with SafetensorsSource.open(directory) as source:
        missing = sorted(set(expected) - set(source.keys()))
        unexpected = sorted(set(source.keys()) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source.where} does not match its config {cfg.name!r}: "
                f"{len(missing)} missing tensors {_few(missing)}, "
                f"{len(unexpected)} unexpected tensors {_few(unexpected)}"
            )
        for key, shape in expected.items():
            if source.shape(key) != shape:
                raise ValueError(
                    f"tensor {key!r} in {source.where} has shape {source.shape(key)}; "
                    f"config {cfg.name!r} expects {shape}"
                )
        return {key: _cast(source.get(key), dtype, device) for key in expected}


def _few(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    return f"[{shown}{', ...' if len(keys) > n else ''}]"
