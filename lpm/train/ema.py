"""Exponential moving average of a model's parameters.

``ema <- decay * ema + (1 - decay) * param`` after every optimiser step, with the effective
decay warmed up as ``min(decay, (1 + n) / (10 + n))`` (n = updates so far) so early averages are
not dominated by the random init. Works on plain tensors and on FSDP2's sharded DTensors (each
rank averages its own shard).
"""

from __future__ import annotations

import torch
from torch import nn

from lpm.parallel.distributed import full_tensor


class EMA:
    """Shadow copies of every trainable parameter, in fp32."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"decay={decay} must be in [0, 1)")
        self.decay = decay
        self.updates = 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        with torch.no_grad():
            self.shadow = [
                p.detach().clone().float() for p in model.parameters() if p.requires_grad
            ]

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = self.updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the averages one step towards ``model``'s parameters."""
        params = [p for p in model.parameters() if p.requires_grad]
        if len(params) != len(self.shadow):
            raise ValueError("the model's parameters changed since the EMA was created")
        d = self.current_decay()
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in params], 1.0 - d)
        self.updates += 1

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """name -> full fp32 tensor (gathered from all ranks when sharded; collective)."""
        return {
            n: full_tensor(t).detach().cpu() for n, t in zip(self.names, self.shadow, strict=True)
        }

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        """Load full tensors (as written by `full_state_dict`) into possibly sharded shadows."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        missing = set(self.names) - set(state)
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:5]}...")
        for name, shadow in zip(self.names, self.shadow, strict=True):
            full = state[name].to(dtype=shadow.dtype)
            if isinstance(shadow, DTensor):
                full = distribute_tensor(
                    full.to(shadow.device), shadow.device_mesh, shadow.placements
                )
                shadow.copy_(full)
            else:
                shadow.copy_(full.to(shadow.device))
        self.updates = updates
