"""Process-group set-up and the few collectives training needs.

Works in three settings with the same code:
  * a plain single process (``python -m lpm.cli.main train``): no process group is created;
  * ``torchrun --nproc_per_node=N``: one process per rank, ``gloo`` on CPU, ``nccl`` on CUDA;
  * ``torchrun --nproc_per_node=1``: a process group of one (harmless, used for parity tests).

Model code never imports this module; trainers and the CLI do.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lpm.device import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    """Global rank, 0 for the coordinating process."""
    local_rank: int = 0
    """Rank on this machine (selects the CUDA device)."""
    world_size: int = 1
    """Number of processes."""
    device: torch.device = torch.device("cpu")
    """Device this rank computes on."""

    @property
    def is_main(self) -> bool:
        """True on rank 0, which writes logs, plots and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is initialised."""
        return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    """True when the environment carries torchrun's rank variables."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"))


def init_distributed(device: str | None = None, timeout_s: float = 600.0) -> DistInfo:
    """Initialise the process group if launched by torchrun, and pick this rank's device.

    Args:
        device: ``"cpu"``, ``"cuda"``, or ``"auto"`` / None (CUDA when available, else CPU).
        timeout_s: collective timeout in seconds.

    Returns:
        The rank, world size and device of this process.
    """
    if device is not None and device not in ("auto", "cpu", "cuda"):
        raise ValueError(
            f"device {device!r} must be auto, cpu or cuda (one GPU per rank under torchrun)"
        )
    dev = resolve_device(device)
    kind = dev.type
    if not launched_by_torchrun():
        return DistInfo(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if kind == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if kind == "cuda" else None,
        )
        log.info("process group: backend=%s rank=%d/%d", backend, rank, world)
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def teardown_distributed() -> None:
    """Destroy the process group if one exists (safe to call in any setting)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; a no-op without a process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (a copy); ``value`` itself without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank; ``obj`` itself without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order; ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor behind a (possibly sharded) DTensor; plain tensors pass through."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t
