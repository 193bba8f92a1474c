"""Checking a ``--device`` value against the machine before any work starts."""

from __future__ import annotations

import os

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The torch device a ``--device`` value names, checked against this machine.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or ``"auto"`` / None: the device the
            environment variable ``LPM_DEVICE`` names if set, else the first GPU when this
            PyTorch can use one, else the CPU.

    Raises:
        ValueError: the name is not a device, or it names a GPU this process cannot use; the
            message says why (a CPU-only PyTorch build, no visible GPU, an index out of range).
    """
    if device is None or device == "auto":
        chosen = os.environ.get("LPM_DEVICE") or "auto"  # unset or empty: auto
        if chosen != "auto":
            try:
                return resolve_device(chosen)
            except ValueError as err:
                raise ValueError(f"LPM_DEVICE={chosen!r}: {err}") from None
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {device!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise ValueError(f"device {device!r} is not supported: use auto, cpu, cuda or cuda:N")
    if torch.version.cuda is None:
        raise ValueError(
            f"device {device!r} was asked for, but this PyTorch ({torch.__version__}) is built "
            "without CUDA: install a CUDA build of torch, or use the cpu device"
        )
    count = torch.cuda.device_count()
    if count == 0:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ValueError(f"device {device!r} was asked for, but no GPU is visible{hint}")
    index = 0 if dev.index is None else dev.index
    if index >= count:
        raise ValueError(f"device {device!r} was asked for, but this machine has {count} GPU(s)")
    return torch.device("cuda", index)
