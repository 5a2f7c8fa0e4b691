"""The training machinery of :class:`hrflow.HRFEstimator`, as pure functions.

One iteration of training draws a batch (:func:`training_batch`: data rows
drawn with replacement, fresh source draws, optional dequantisation and OT
couplings, times per level), turns it into the hierarchy's regression pair
(:func:`hrflow.hierarchy.training_pair`) and takes an optimizer step at the
rate ``learning_rate * lr_factor(it, ...)`` (:func:`lr_factor`: linear
warm-up, then constant or cosine decay). States have shape
``(n, *event_shape)``, sources ``(depth, n, *event_shape)`` and times
``(depth, n)``, levels outermost (location) first.
"""

from __future__ import annotations

import math

import torch

from .coupling import couple_inner_in_groups, couple_sources, coupled_levels
from .images import dequantize
from .time_samplers import sample_times

__all__ = ["batch_coupling", "lr_factor", "training_batch"]


def lr_factor(it: int, n_iter: int, *, warmup_iter: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the learning rate at iteration ``it`` of a training call of ``n_iter``.

    A linear warm-up ``(it + 1) / warmup_iter`` over the first ``warmup_iter``
    iterations, then ``1`` (``schedule="constant"``) or a cosine decay from
    ``1`` at ``it = warmup_iter`` to ``0`` at ``it = n_iter`` (``"cosine"``).

    Parameters
    ----------
    it : int
        Iteration of this training call, from 0.
    n_iter : int
        Iterations of this training call (the cosine's span ends there).
    warmup_iter : int, default=0
        Iterations of linear warm-up.
    schedule : {"cosine", "constant"}, default="cosine"
        Schedule after the warm-up.

    Returns
    -------
    factor : float
        In ``[0, 1]``.

    Examples
    --------
    >>> lr_factor(0, 100, warmup_iter=10), lr_factor(9, 100, warmup_iter=10)
    (0.1, 1.0)
    >>> lr_factor(10, 100, warmup_iter=10), lr_factor(100, 100, warmup_iter=10)
    (1.0, 0.0)
    >>> lr_factor(55, 100, warmup_iter=10, schedule="constant")
    1.0
    """
    if it < warmup_iter:
        return (it + 1) / warmup_iter
    if schedule == "constant":
        return 1.0
    span = max(n_iter - warmup_iter, 1)
    return 0.5 * (1 + math.cos(math.pi * min(it - warmup_iter, span) / span))


def batch_coupling(coupling: str, depth: int, *, paired: bool = False) -> tuple[tuple[int, ...], bool]:
    """The couplings applied to every training batch.

    Parameters
    ----------
    coupling : {"independent", "ot_location", "ot_velocity"}
    depth : int
        Number of levels ``D >= 1``.
    paired : bool, default=False
        Whether the location sources are fixed pairs of the data (reflow):
        then the location level is not re-paired and the inner levels are not
        coupled in groups (which rests on independent location draws).

    Returns
    -------
    levels : tuple of int
        Levels paired across the whole batch (:func:`hrflow.coupling.couple_sources`).
    grouped : bool
        Whether the inner levels are paired within groups sharing their outer
        states (:func:`hrflow.coupling.couple_inner_in_groups`).

    Examples
    --------
    >>> batch_coupling("ot_location", 2), batch_coupling("ot_location", 2, paired=True)
    (((0,), False), ((), False))
    >>> batch_coupling("ot_velocity", 3), batch_coupling("ot_velocity", 1)
    (((), True), ((), False))
    """
    levels = coupled_levels(coupling, depth)
    if paired:
        levels = tuple(k for k in levels if k > 0)
    return levels, coupling == "ot_velocity" and depth > 1 and not paired


def training_batch(
    data: torch.Tensor,
    source,
    depth: int,
    batch_size: int,
    generator: torch.Generator,
    *,
    samplers,
    coupling: str = "independent",
    coupling_method: str = "exact",
    coupling_reg: float = 0.05,
    coupling_group_size: int = 32,
    n_bins: int | None = None,
    paired_sources: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one training batch: data rows, source draws of every level and times.

    The draws from ``generator`` come in a fixed order: the row indices, the
    dequantisation noise (``n_bins``), the location sources, the inner
    ``N(0, I)`` sources, the coupling of the location level, the times level
    by level, then the grouped coupling of the inner levels.

    Parameters
    ----------
    data : torch.Tensor of shape (n, *event_shape)
        Training data in the model space; rows are drawn with replacement,
        so ``batch_size`` may exceed ``n``.
    source : Source or None
        The location source (:mod:`hrflow.sources`), sampled as
        ``source.sample(batch_size, generator, device=..., dtype=...)``; its
        ``log_prob`` weights ``coupling="ot_velocity"``. Unused (may be None)
        with ``paired_sources``.
    depth : int
        Number of levels ``D >= 1``.
    batch_size : int
    generator : torch.Generator
        On ``data``'s device.
    samplers : sequence of str of length depth
        Time sampler of every level (:func:`hrflow.time_samplers.sample_times`).
    coupling : {"independent", "ot_location", "ot_velocity"}, default="independent"
        Mini-batch OT of the location draws (``"ot_location"``) or of the inner
        draws within groups of ``coupling_group_size`` (``"ot_velocity"``,
        ``depth >= 2``); see :func:`batch_coupling`.
    coupling_method : {"exact", "sinkhorn"}, default="exact"
    coupling_reg : float, default=0.05
        Entropic regularisation of ``"sinkhorn"``.
    coupling_group_size : int, default=32
    n_bins : int or None, default=None
        Quantised data: fresh uniform noise of one bin (``2 / n_bins``) is
        added to every drawn row (not with ``paired_sources``).
    paired_sources : torch.Tensor of shape (n, *event_shape) or None
        Fixed location sources paired row by row with ``data`` (reflow).

    Returns
    -------
    x1 : torch.Tensor of shape (batch_size, *event_shape)
        The data points.
    x0 : torch.Tensor of shape (depth, batch_size, *event_shape)
        The source draws of every level, outermost first, coupled as asked.
    t : torch.Tensor of shape (depth, batch_size)
        The times of every level.

    Examples
    --------
    >>> import torch
    >>> from hrflow.sources import StandardNormal
    >>> data = torch.randn(50, 2)
    >>> gen = torch.Generator().manual_seed(0)
    >>> x1, x0, t = training_batch(data, StandardNormal((2,)), 3, 8, gen,
    ...                            samplers=("uniform",) * 3, coupling="ot_location")
    >>> tuple(x1.shape), tuple(x0.shape), tuple(t.shape)
    ((8, 2), (3, 8, 2), (3, 8))
    """
    n = data.shape[0]
    levels, grouped = batch_coupling(coupling, depth, paired=paired_sources is not None)
    idx = torch.randint(n, (batch_size,), generator=generator, device=data.device)
    x1 = data[idx]
    if n_bins is not None and paired_sources is None:  # fresh dequantisation noise (bin 2 / n_bins)
        x1 = dequantize(x1, 2.0 / n_bins, generator)
    x0 = torch.empty((depth, *x1.shape), device=data.device, dtype=data.dtype)
    if paired_sources is None:
        x0[0] = source.sample(batch_size, generator, device=data.device, dtype=data.dtype)
    else:
        x0[0] = paired_sources[idx]
    if depth > 1:
        x0[1:] = torch.randn(
            (depth - 1, *x1.shape), generator=generator, device=data.device, dtype=data.dtype
        )
    if levels:  # mini-batch OT: re-pair the source draws before the hierarchy math
        x0 = couple_sources(
            x1, x0, levels, method=coupling_method, reg=coupling_reg, generator=generator
        )
    t = torch.stack(
        [sample_times(s, batch_size, generator, device=data.device, dtype=data.dtype)
         for s in samplers]
    )
    if grouped:  # inner levels: OT within groups sharing their outer states
        x1, x0, t = couple_inner_in_groups(
            x1, x0, t, coupling_group_size, source.log_prob,
            method=coupling_method, reg=coupling_reg, generator=generator,
        )
    return x1, x0, t
