"""The paper's low-dimensional field: per-level encoders and a shared trunk."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import nn

from .base import HierarchicalField
from .embedding import SinusoidalEmbedding

__all__ = ["HierarchicalMLP"]


class HierarchicalMLP(HierarchicalField):
    """MLP field for tabular data (paper Appendix F).

    Each level ``k`` has its own encoder: a linear map of the state and a
    sinusoidal time embedding followed by a linear map, concatenated and
    activated. The trunk's first layer acts on the concatenation of all level
    encodings; it is split into one block per level, and :meth:`encode` already
    applies level ``k``'s block. A sampler that reuses the encodings of outer
    levels therefore saves their encoders *and* their share of the first trunk
    layer.

    Parameters
    ----------
    depth : int
        Number of levels.
    n_features : int
        Data dimension ``d``.
    hidden_size : int, default=128
        Width of the trunk.
    n_layers : int, default=3
        Number of hidden trunk layers (>= 1).
    embedding_dim : int, default=32
        Size of the sinusoidal time embedding and of each encoder half.

    Examples
    --------
    A small depth-2 field on 2-d data; calling it equals encoding each level
    and applying the head, which is what a nested sampler does.

    >>> import torch
    >>> field = HierarchicalMLP(depth=2, n_features=2, hidden_size=16, n_layers=2,
    ...                         embedding_dim=8)
    >>> g = torch.Generator().manual_seed(0)
    >>> zs, ts = torch.randn(2, 5, 2, generator=g), torch.rand(2, 5, generator=g)
    >>> out = field(zs, ts)
    >>> out.shape
    torch.Size([5, 2])
    >>> encodings = [field.encode(k, zs[k], ts[k]) for k in range(2)]
    >>> encodings[0].shape  # level 0's share of the first trunk layer
    torch.Size([5, 16])
    >>> torch.allclose(field.head(encodings), out)
    True
    """

    def __init__(
        self,
        depth: int,
        n_features: int,
        hidden_size: int = 128,
        n_layers: int = 3,
        embedding_dim: int = 32,
    ):
        if isinstance(n_layers, bool) or not isinstance(n_layers, numbers.Integral):
            raise TypeError(f"n_layers must be an int >= 1, got {n_layers!r}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
        super().__init__(depth, (n_features,))
        self.embed = SinusoidalEmbedding(embedding_dim)
        self.space = nn.ModuleList(nn.Linear(n_features, embedding_dim) for _ in range(depth))
        self.time = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim) for _ in range(depth))
        # first trunk layer, one block per level (bias lives in the head)
        self.first = nn.ModuleList(
            nn.Linear(2 * embedding_dim, hidden_size, bias=False) for _ in range(depth)
        )
        self.first_bias = nn.Parameter(torch.zeros(hidden_size))
        layers: list[nn.Module] = []
        for _ in range(n_layers - 1):
            layers += [nn.SiLU(), nn.Linear(hidden_size, hidden_size)]
        layers += [nn.SiLU(), nn.Linear(hidden_size, n_features)]
        self.trunk = nn.Sequential(*layers)
        self.act = nn.SiLU()

    def encode(self, level: int, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Level ``k``'s contribution to the first trunk layer, shape ``(n, hidden_size)``."""
        hz = self.space[level](z)
        ht = self.time[level](self.embed(t.to(z.dtype)))
        return self.first[level](self.act(torch.cat([hz, ht], dim=1)))

    def head(self, encodings: Sequence[torch.Tensor]) -> torch.Tensor:
        h = encodings[0]
        for e in encodings[1:]:
            h = h + e
        return self.trunk(h + self.first_bias)
