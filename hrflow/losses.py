"""Regression losses between the field output and the HRF target."""

from __future__ import annotations

import math

import torch

__all__ = ["LOSSES", "regression_loss", "pseudo_huber"]

#: names accepted by the estimator's ``loss`` parameter
LOSSES = ("l2", "pseudo_huber")


def pseudo_huber(pred: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """Per-example pseudo-Huber loss ``sqrt(||a - b||^2 + c^2) - c``.

    Parameters
    ----------
    pred, target : torch.Tensor of shape (n, *e)
    c : float
        Positive constant: for ``||a - b|| << c`` the loss is ``||a - b||^2 / (2c)``,
        for ``||a - b|| >> c`` it is ``||a - b|| - c``.

    Returns
    -------
    loss : torch.Tensor of shape (n,)

    Examples
    --------
    >>> import torch
    >>> round(pseudo_huber(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2), 1.0).item(), 4)
    4.099
    """
    sq = (pred - target).pow(2).flatten(1).sum(dim=1)
    # = sqrt(sq + c^2) - c, without its cancellation for ||a - b|| << c
    return sq / (torch.sqrt(sq + c * c) + c)


def regression_loss(pred, target, kind: str = "l2", huber_c: float | None = None):
    """Batch loss: ``"l2"`` is the mean squared error over all elements;
    ``"pseudo_huber"`` the batch mean of :func:`pseudo_huber` with
    ``c = huber_c`` or, if None, ``0.00054 sqrt(d)`` (Song and Dhariwal 2023).

    Parameters
    ----------
    pred, target : torch.Tensor of shape (n, *e)
    kind : {"l2", "pseudo_huber"}, default="l2"
    huber_c : float or None, default=None
        Constant ``c`` of the pseudo-Huber loss.

    Returns
    -------
    loss : torch.Tensor, scalar

    Examples
    --------
    >>> import torch
    >>> pred, target = torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.zeros(2, 2)
    >>> regression_loss(pred, target).item()  # (9 + 16) / 4
    6.25
    >>> round(regression_loss(pred, target, "pseudo_huber", huber_c=1.0).item(), 4)  # (4.099 + 0) / 2
    2.0495
    """
    if kind == "l2":
        return torch.nn.functional.mse_loss(pred, target)
    if kind == "pseudo_huber":
        d = math.prod(pred.shape[1:])
        c = 0.00054 * math.sqrt(d) if huber_c is None else float(huber_c)
        return pseudo_huber(pred, target, c).mean()
    raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
