"""Typed KV cache for chunk-by-chunk streaming with an attention sink and a sliding window.

Legend: B batch, L tokens, H heads, D head_dim. Keys are stored **before RoPE**: every step
re-applies positions to the chunks that are still kept, laid out contiguously ("slots"), so a
never-ending stream never sees a position beyond ``(sink + window + 1)`` chunks.

Kept chunks are the first ``sink_chunks`` chunks ever written plus the ``window_chunks`` most
recent ones. Reference tokens (first frame, identity references) are kept for ever at their own
fixed positions.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import torch

from lpm.models.common.rope import grid_positions, rope_cos_sin

HistoryKind = Literal["clean", "noisy"]


@dataclass
class ChunkEntry:
    """One cached chunk: pre-RoPE keys and values of every layer."""

    index: int
    """Absolute chunk index in the stream (0 for the first chunk)."""
    frames: int
    """Temporal positions (latent frames after temporal patching) this chunk occupies."""
    keys: list[torch.Tensor] = field(default_factory=list)
    """Per layer, (B, L, H, D) keys before RoPE."""
    values: list[torch.Tensor] = field(default_factory=list)
    """Per layer, (B, L, H, D) values."""


def kept_chunk_indices(current: int, sink_chunks: int, window_chunks: int | None) -> list[int]:
    """Chunks visible to chunk ``current``: the sink plus the most recent window, in order."""
    if window_chunks is None:
        return list(range(current))
    sink = list(range(min(sink_chunks, current)))
    recent = range(max(len(sink), current - window_chunks), current)
    return sink + list(recent)


class StreamingKVCache:
    """Per-layer KV cache of reference tokens plus sink and window chunks.

    ``history`` records how the cached chunks were made: ``"noisy"`` for a backbone whose history
    is re-noised to ``history_sigma`` before it is written, ``"clean"`` for a refiner.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        sink_chunks: int,
        window_chunks: int | None,
        history: HistoryKind = "clean",
        history_sigma: float = 0.0,
    ) -> None:
        if sink_chunks < 0 or (window_chunks is not None and window_chunks < 1):
            raise ValueError("sink_chunks must be >= 0 and window_chunks >= 1 (or None)")
        if history not in ("clean", "noisy"):
            raise ValueError(f"history={history!r} must be 'clean' or 'noisy'")
        if not 0.0 <= history_sigma <= 1.0:
            raise ValueError(f"history_sigma={history_sigma} must be in [0, 1]")
        self.num_layers = num_layers
        self.sink_chunks = sink_chunks
        self.window_chunks = window_chunks
        self.history = history
        self.history_sigma = history_sigma if history == "noisy" else 0.0
        self.grid_hw: tuple[int, int] | None = None
        self.ref_keys: list[torch.Tensor] = []
        self.ref_values: list[torch.Tensor] = []
        self.ref_positions: torch.Tensor | None = None
        self.sink: list[ChunkEntry] = []
        self.window: deque[ChunkEntry] = deque()
        self.chunks_written = 0
        self._pending: ChunkEntry | None = None
        self._pending_refs = False

    # ---- reading -----------------------------------------------------------------------------
    @property
    def kept(self) -> list[ChunkEntry]:
        return [*self.sink, *self.window]

    @property
    def has_references(self) -> bool:
        return bool(self.ref_keys)

    def next_frame_offset(self) -> int:
        """Slot (temporal position) at which the next chunk starts."""
        return sum(entry.frames for entry in self.kept)

    def context(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Pre-RoPE keys and values (B, L, H, D) of refs + kept chunks for ``layer``, or None."""
        if self._pending_refs:
            return None
        keys = ([self.ref_keys[layer]] if self.ref_keys else []) + [
            e.keys[layer] for e in self.kept
        ]
        if not keys:
            return None
        values = ([self.ref_values[layer]] if self.ref_values else []) + [
            e.values[layer] for e in self.kept
        ]
        return torch.cat(keys, dim=1), torch.cat(values, dim=1)

    def context_rope(
        self, head_dim: int, theta: float, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos/sin (L, D) for the context tokens: refs at fixed positions, chunks at slots."""
        parts = []
        if self.ref_positions is not None and not self._pending_refs:
            parts.append(self.ref_positions.to(device))
        offset = 0
        for entry in self.kept:
            assert self.grid_hw is not None
            t = torch.arange(offset, offset + entry.frames, device=device)
            parts.append(grid_positions(t, *self.grid_hw))
            offset += entry.frames
        if not parts:
            return None
        return rope_cos_sin(torch.cat(parts), head_dim, theta)

    def num_tokens(self) -> int:
        refs = self.ref_keys[0].shape[1] if self.ref_keys else 0
        return refs + sum(e.keys[0].shape[1] for e in self.kept if e.keys)

    def nbytes(self) -> int:
        tensors = [*self.ref_keys, *self.ref_values]
        for entry in self.kept:
            tensors += [*entry.keys, *entry.values]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ---- writing -----------------------------------------------------------------------------
    def begin_references(self, positions_n3: torch.Tensor, grid_hw: tuple[int, int]) -> None:
        """Start writing reference tokens; the model then calls ``stage`` once per layer."""
        if self.has_references:
            raise ValueError("references are already cached; build a new cache to change them")
        if self.chunks_written:
            raise ValueError("references must be cached before the first chunk")
        self._check_grid(grid_hw)
        self.ref_positions = positions_n3.detach().cpu()
        self._pending_refs = True

    def begin_chunk(self, frames: int, grid_hw: tuple[int, int]) -> None:
        """Start writing the next chunk (``frames`` temporal positions)."""
        self._check_grid(grid_hw)
        self._pending = ChunkEntry(index=self.chunks_written, frames=frames)

    def stage(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Record layer ``layer``'s pre-RoPE keys and values for what is being written."""
        if self._pending_refs:
            assert len(self.ref_keys) == layer, "layers must be staged in order"
            self.ref_keys.append(keys.detach())
            self.ref_values.append(values.detach())
            return
        assert self._pending is not None, "stage() called outside begin_chunk()/commit()"
        assert len(self._pending.keys) == layer, "layers must be staged in order"
        self._pending.keys.append(keys.detach())
        self._pending.values.append(values.detach())

    def commit(self) -> None:
        """Finish the write started by ``begin_references`` or ``begin_chunk``; evict if full."""
        if self._pending_refs:
            if len(self.ref_keys) != self.num_layers:
                raise RuntimeError("reference write ended before every layer was staged")
            self._pending_refs = False
            return
        entry = self._pending
        if entry is None or len(entry.keys) != self.num_layers:
            raise RuntimeError("chunk write ended before every layer was staged")
        self._pending = None
        self.chunks_written += 1
        if len(self.sink) < self.sink_chunks:
            self.sink.append(entry)
            return
        self.window.append(entry)
        if self.window_chunks is not None and len(self.window) > self.window_chunks:
            self.window.popleft()

    def abort(self) -> None:
        """Drop a write in progress (e.g. after an exception inside the forward)."""
        if self._pending_refs:
            self.ref_keys.clear()
            self.ref_values.clear()
            self.ref_positions = None
        self._pending_refs = False
        self._pending = None

    def _check_grid(self, grid_hw: tuple[int, int]) -> None:
        if self.grid_hw is None:
            self.grid_hw = grid_hw
        elif self.grid_hw != grid_hw:
            raise ValueError(
                f"chunk token grid {grid_hw} differs from the cache's {self.grid_hw}: "
                "one stream keeps one resolution"
            )
