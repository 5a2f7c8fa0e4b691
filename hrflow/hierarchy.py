"""Hierarchy math of HRF training (spec section 2), as pure functions.

Shapes use ``D`` for the depth, ``n`` for the batch and ``*e`` for the event
shape of one data point (``(d,)`` for tabular data).
"""

from __future__ import annotations

import torch

__all__ = ["residuals", "interpolate_states", "regression_target", "training_pair"]


def residuals(x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Residual targets ``y_0 = x1`` and ``y_{k+1} = y_k - x0^(k)``.

    Parameters
    ----------
    x1 : torch.Tensor of shape (n, *e)
        Data.
    x0 : torch.Tensor of shape (D, n, *e)
        Source draws of every level, ``x0[0]`` the location source.

    Returns
    -------
    y : torch.Tensor of shape (D + 1, n, *e)
        ``y[k]`` is the endpoint of level ``k``; ``y[D]`` is the regression target.

    Examples
    --------
    >>> import torch
    >>> x1 = torch.tensor([[3.0]]); x0 = torch.tensor([[[1.0]], [[0.5]]])
    >>> residuals(x1, x0)[:, 0, 0].tolist()
    [3.0, 2.0, 1.5]
    """
    if x0.shape[1:] != x1.shape:
        raise ValueError(f"x0 must have shape (D, *{tuple(x1.shape)}), got {tuple(x0.shape)}")
    return torch.cat([x1.unsqueeze(0), x1.unsqueeze(0) - torch.cumsum(x0, dim=0)], dim=0)


def interpolate_states(x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """States ``z_k = (1 - t_k) x0^(k) + t_k y_k`` of every level.

    Parameters
    ----------
    x0 : torch.Tensor of shape (D, n, *e)
        Source draws.
    y : torch.Tensor of shape (D, n, *e) or (D + 1, n, *e)
        Residual endpoints from :func:`residuals` (a trailing target is ignored).
    t : torch.Tensor of shape (D, n)
        Time of every level and example.

    Returns
    -------
    z : torch.Tensor of shape (D, n, *e)

    Examples
    --------
    Two levels, one example: each level moves from its source draw towards its
    residual endpoint.

    >>> import torch
    >>> x1 = torch.tensor([[3.0]]); x0 = torch.tensor([[[1.0]], [[0.5]]])
    >>> y = residuals(x1, x0)  # endpoints 3.0 and 2.0, target 1.5
    >>> z = interpolate_states(x0, y, torch.tensor([[0.5], [0.0]]))
    >>> z.shape, z[:, 0, 0].tolist()
    (torch.Size([2, 1, 1]), [2.0, 0.5])
    """
    if x0.dim() < 2:
        raise ValueError(f"x0 must have shape (D, n, *e), got {tuple(x0.shape)}")
    depth = x0.shape[0]
    if y.shape[1:] != x0.shape[1:] or y.shape[0] not in (depth, depth + 1):
        raise ValueError(
            f"y must have shape (D, *{tuple(x0.shape[1:])}) or (D + 1, ...) with D={depth}, "
            f"got {tuple(y.shape)}"
        )
    if t.shape != x0.shape[:2]:
        raise ValueError(f"t must have shape (D, n) = {tuple(x0.shape[:2])}, got {tuple(t.shape)}")
    tt = t.reshape(t.shape + (1,) * (x0.dim() - 2)).to(x0.dtype)
    return (1 - tt) * x0 + tt * y[:depth]


def regression_target(x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Innermost target ``y_D = x1 - sum_k x0^(k)``.

    Parameters
    ----------
    x1 : torch.Tensor of shape (n, *e)
    x0 : torch.Tensor of shape (D, n, *e)

    Returns
    -------
    target : torch.Tensor of shape (n, *e)

    Examples
    --------
    >>> import torch
    >>> x1 = torch.tensor([[3.0, 0.0]]); x0 = torch.tensor([[[1.0, 1.0]], [[0.5, -2.0]]])
    >>> regression_target(x1, x0).tolist()
    [[1.5, 1.0]]
    >>> torch.equal(regression_target(x1, x0), residuals(x1, x0)[-1])
    True
    """
    if x0.shape[1:] != x1.shape:
        raise ValueError(f"x0 must have shape (D, *{tuple(x1.shape)}), got {tuple(x0.shape)}")
    return x1 - x0.sum(dim=0)


def training_pair(
    x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """States and regression target of one training batch (spec section 2).

    Parameters
    ----------
    x1 : torch.Tensor of shape (n, *e)
        Data batch.
    x0 : torch.Tensor of shape (D, n, *e)
        Source draws of every level.
    t : torch.Tensor of shape (D, n)
        Times.

    Returns
    -------
    z : torch.Tensor of shape (D, n, *e)
        Field input states.
    target : torch.Tensor of shape (n, *e)
        Regression target ``y_D``.

    Examples
    --------
    Depth 1 is rectified flow: ``z = (1-t) x0 + t x1`` and target ``x1 - x0``.

    >>> import torch
    >>> z, target = training_pair(torch.tensor([[2.0]]), torch.tensor([[[1.0]]]),
    ...                           torch.tensor([[0.25]]))
    >>> z.item(), target.item()
    (1.25, 1.0)
    """
    y = residuals(x1, x0)
    return interpolate_states(x0, y, t), y[-1]
