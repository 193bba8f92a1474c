"""One attention dispatch for every attention in the model.

Legend: B batch, N query tokens, M key tokens, H heads, D head_dim.
Inputs q (B, N, H, D), k and v (B, M, H, D); ``mask`` is boolean, True where a query may attend
a key, broadcastable to (B, H, N, M), or None for full attention. Every backend computes the
same function; tests hold each one to SDPA.
"""

from __future__ import annotations

import importlib.util
import warnings

import torch
from torch.nn import functional as F

BACKENDS = ("sdpa", "flex", "flash")


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` in this installation."""
    names = ["sdpa"]
    try:
        from torch.nn.attention import flex_attention  # noqa: F401

        names.append("flex")
    except ImportError:
        pass
    if torch.device(device).type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        names.append("flash")
    return names


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "sdpa",
) -> torch.Tensor:
    """Scaled dot-product attention; returns (B, N, H, D)."""
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
        )
        return out.transpose(1, 2)
    if backend == "flex":
        return _flex(q, k, v, mask)
    if backend == "flash":
        return _flash(q, k, v, mask)
    raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = None
    if mask is not None:
        n, m = q.shape[1], k.shape[1]
        dense = mask.expand(q.shape[0], q.shape[2], n, m)

        def mask_mod(b, h, q_idx, kv_idx):
            return dense[b, h, q_idx, kv_idx]

        block_mask = create_block_mask(mask_mod, q.shape[0], q.shape[2], n, m, device=str(q.device))
    with warnings.catch_warnings():
        # Eager flex attention warns that it is not compiled; correctness is unaffected.
        warnings.simplefilter("ignore", UserWarning)
        out = flex_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=block_mask
        )
    return out.transpose(1, 2)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None):
    if mask is not None:
        raise ValueError(
            "the flash backend runs unmasked attention only; use sdpa or flex for masked modes"
        )
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v)
