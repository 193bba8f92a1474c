"""3D rotary position embedding (time, height, width), Wan2.1 layout.

Legend: N tokens, H heads, D head_dim. Positions are integer triples (t, h, w); the head dim is
split into ``D - 4*(D//6)`` time channels and ``2*(D//6)`` channels each for height and width,
and consecutive channel pairs (0,1), (2,3), ... rotate together.

Angles are computed from positions directly (not looked up in a table), so negative temporal
positions, which tell reference images apart, are as valid as positive ones.
"""

from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels given to (time, height, width) for a head of ``head_dim`` channels."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _inv_freq(dim: int, theta: float) -> torch.Tensor:
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)


def rope_cos_sin(
    positions_n3: torch.Tensor, head_dim: int, theta: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (N, D) fp32, for integer positions (N, 3)."""
    angles = []
    for axis, dim in enumerate(rope_split(head_dim)):
        inv = _inv_freq(dim, theta).to(positions_n3.device)
        angles.append(positions_n3[:, axis].to(torch.float64)[:, None] * inv[None, :])
    angle_nd2 = torch.cat(angles, dim=1)
    angle_nd = angle_nd2.repeat_interleave(2, dim=1)
    return angle_nd.cos().float(), angle_nd.sin().float()


def apply_rope(x_bnhd: torch.Tensor, cos_nd: torch.Tensor, sin_nd: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x (B, N, H, D) by the angles whose cos/sin are (N, D)."""
    x32 = x_bnhd.float()
    x1, x2 = x32[..., 0::2], x32[..., 1::2]
    cos = cos_nd[None, :, None, 0::2]
    sin = sin_nd[None, :, None, 0::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
    return out.to(x_bnhd.dtype)


def grid_positions(t_positions: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F*height*width, 3) positions for frames at temporal positions (F,), row-major tokens."""
    frames = t_positions.numel()
    t = t_positions.long().view(frames, 1, 1).expand(frames, height, width)
    h = torch.arange(height, device=t.device).view(1, height, 1).expand(frames, height, width)
    w = torch.arange(width, device=t.device).view(1, 1, width).expand(frames, height, width)
    return torch.stack((t, h, w), dim=-1).reshape(-1, 3)
