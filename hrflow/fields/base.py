"""The one call signature every hierarchical field follows.

A field of depth ``D`` maps the states ``z_0 .. z_{D-1}`` and times
``t_0 .. t_{D-1}`` of all levels to the innermost direction (spec section 1).
It is split into a per-level :meth:`HierarchicalField.encode` and a
:meth:`HierarchicalField.head` so that a nested sampler can encode an outer
level once and reuse that encoding across all the inner steps taken while the
outer state is frozen.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["HierarchicalField"]


class HierarchicalField(nn.Module):
    """Base class of the fields ``f(z_0..z_{D-1}, t_0..t_{D-1}) -> R^shape``.

    Subclasses implement :meth:`encode` (optional: the default passes the raw
    ``(z, t)`` pair through) and :meth:`head`.

    Parameters
    ----------
    depth : int
        Number of levels ``D >= 1``.
    event_shape : tuple of int
        Shape of one state, ``(d,)`` for tabular data or ``(C, H, W)`` for images.

    Examples
    --------
    A toy field that sums the states of its levels; with the default
    :meth:`encode` each encoding is the raw ``(z, t)`` pair.

    >>> import torch
    >>> class SumOfStates(HierarchicalField):
    ...     def head(self, encodings):
    ...         return sum(z for z, t in encodings)
    >>> field = SumOfStates(depth=2, event_shape=(3,))
    >>> zs = torch.stack([torch.ones(4, 3), torch.full((4, 3), 2.0)])  # (depth, n, d)
    >>> out = field(zs, torch.zeros(2, 4))
    >>> out.shape, out[0].tolist()
    (torch.Size([4, 3]), [3.0, 3.0, 3.0])
    """

    def __init__(self, depth: int, event_shape: Sequence[int]):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
            raise TypeError(f"depth must be an int >= 1, got {depth!r}")
        if depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        self.depth = int(depth)
        self.event_shape = tuple(int(s) for s in event_shape)

    def encode(self, level: int, z: torch.Tensor, t: torch.Tensor) -> Any:
        """Encode the state of one level.

        Parameters
        ----------
        level : int
            Level index ``k`` in ``[0, depth)``; 0 is location.
        z : torch.Tensor of shape (n, *event_shape)
            State of level ``k``.
        t : torch.Tensor of shape (n,)
            Time of level ``k``.

        Returns
        -------
        encoding : object
            Whatever :meth:`head` consumes for this level.
        """
        return (z, t)

    def head(self, encodings: Sequence[Any]) -> torch.Tensor:
        """Map the encodings of all ``depth`` levels to the innermost direction.

        Parameters
        ----------
        encodings : sequence of length depth
            ``encodings[k]`` is ``self.encode(k, z_k, t_k)``.

        Returns
        -------
        out : torch.Tensor of shape (n, *event_shape)
        """
        raise NotImplementedError

    def forward(self, zs: Sequence[torch.Tensor], ts: Sequence[torch.Tensor]) -> torch.Tensor:
        """Evaluate the field.

        Parameters
        ----------
        zs : sequence of depth tensors of shape (n, *event_shape)
            States, outermost (location) first. A stacked tensor of shape
            ``(depth, n, *event_shape)`` works as well.
        ts : sequence of depth tensors of shape (n,)
            Times, outermost first; or a tensor of shape ``(depth, n)``.

        Returns
        -------
        out : torch.Tensor of shape (n, *event_shape)
        """
        if len(zs) != self.depth or len(ts) != self.depth:
            raise ValueError(
                f"field of depth {self.depth} needs {self.depth} states and times, "
                f"got {len(zs)} and {len(ts)}"
            )
        return self.head([self.encode(k, z, t) for k, (z, t) in enumerate(zip(zs, ts))])
