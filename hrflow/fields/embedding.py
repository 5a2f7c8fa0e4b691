"""Sinusoidal time embedding shared by the fields."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

__all__ = ["SinusoidalEmbedding"]


class SinusoidalEmbedding(nn.Module):
    """Map times ``t`` of shape ``(n,)`` to features of shape ``(n, dim)``.

    Uses ``[sin(w_i * s t), cos(w_i * s t)]`` with geometric frequencies
    ``w_i = max_period^(-i / half)`` and ``s = 1000`` (times live in [0, 1]).

    Parameters
    ----------
    dim : int
        Output size (even).
    max_period : float, default=10000

    Examples
    --------
    >>> import torch
    >>> embed = SinusoidalEmbedding(8)
    >>> embed(torch.tensor([0.0, 0.5, 1.0])).shape
    torch.Size([3, 8])
    >>> embed(torch.zeros(1)).tolist()  # sines first, then cosines
    [[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"embedding dim must be an even int >= 2, got {dim!r}")
        if dim < 2 or dim % 2:
            raise ValueError(f"embedding dim must be an even int >= 2, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = 1000.0 * t.reshape(-1, 1) * self.freqs.to(t.dtype)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)
