"""Normalisation layers computed in fp32 whatever the activation dtype (as Wan2.1 does).

Shapes: x (..., D) -> (..., D).
"""

from __future__ import annotations

import torch
from torch import nn


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm evaluated in fp32 and cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        out = nn.functional.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dimension with a learned scale, evaluated in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out * self.weight.float()).to(x.dtype)
