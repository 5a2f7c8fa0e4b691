"""Exponential moving average (EMA) of a network's weights.

Image models are sampled and scored with an EMA of the trained weights (spec
section 2: decay 0.9999 in the paper's image runs). The EMA copy is a second
module with the same architecture, updated after each optimizer step by
:func:`ema_update`.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["ema_decay_at", "ema_update"]


def ema_decay_at(decay: float, n_updates: int) -> float:
    """Effective decay of update number ``n_updates`` (0-based): ``min(decay, (1 + n) / (10 + n))``.

    The warm-up (as in TensorFlow's ``ExponentialMovingAverage`` with
    ``num_updates``) keeps a short run from returning weights that are still
    mostly the initialisation: the first updates average quickly, later ones
    with the full ``decay``.

    Parameters
    ----------
    decay : float
        Target decay in ``(0, 1)``.
    n_updates : int
        Number of updates applied before this one.

    Returns
    -------
    float

    Examples
    --------
    >>> ema_decay_at(0.999, 0)
    0.1
    >>> ema_decay_at(0.999, 10**6)
    0.999
    """
    if isinstance(decay, bool) or not isinstance(decay, numbers.Real) or not 0 < decay < 1:
        raise ValueError(f"decay must be a float in (0, 1), got {decay!r}")
    if isinstance(n_updates, bool) or not isinstance(n_updates, numbers.Integral) or n_updates < 0:
        raise ValueError(f"n_updates must be an int >= 0, got {n_updates!r}")
    return min(float(decay), (1 + n_updates) / (10 + n_updates))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """In place: ``ema_param <- decay * ema_param + (1 - decay) * param``; buffers are copied.

    The parameters are updated by torch's own EMA step
    (:func:`torch.optim.swa_utils.get_ema_multi_avg_fn`: one fused ``lerp``
    over all tensors, the same numbers as a ``lerp_`` per tensor).

    Parameters
    ----------
    ema : torch.nn.Module
        The average, same architecture as ``model`` (e.g. a deep copy of it).
    model : torch.nn.Module
        The trained module.
    decay : float
        In ``[0, 1]``; 0 copies ``model``, 1 leaves ``ema`` unchanged.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> a, b = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    >>> _ = a.weight.data.fill_(0.0), b.weight.data.fill_(1.0)
    >>> ema_update(a, b, 0.75)
    >>> a.weight.item()
    0.25
    """
    if not 0 <= decay <= 1:
        raise ValueError(f"decay must be in [0, 1], got {decay!r}")
    ema_params = list(ema.parameters())
    params = list(model.parameters())
    if len(ema_params) != len(params):
        raise ValueError("ema and model must have the same parameters")
    if ema_params:  # one fused lerp over every parameter (torch's own EMA of AveragedModel)
        get_ema_multi_avg_fn(decay)(ema_params, params, None)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)
