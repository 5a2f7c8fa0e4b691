"""Allocation of a total NFE budget over the levels of nested Euler sampling.

Nested Euler with ``steps = (k_0, ..., k_{D-1})`` costs ``prod(steps)`` field
evaluations (spec section 3). The paper chose the split by a hand grid search
(its Table 2); :func:`step_allocations` enumerates every split of a budget and
:func:`allocation_score` scores one split's samples against held-out data, so
that :meth:`hrflow.HRFEstimator.tune_steps` can pick the best in one call.

A level run for a single step is a shallower sampler in disguise. With the
exact field (:mod:`hrflow.analytic`), one step at the innermost level
integrates the mean of the next level, i.e. the depth ``D - 1`` field; one
step at any other level starts at time 0, where that level's state is its
own source draw ``z0``, independent of the outer states, and the states of
the levels below it, each shifted by its own time times ``z0``, follow the
depth ``D - 1`` hierarchy of the same data (``tests/test_sampling_oracle.py``
checks the innermost and outermost levels draw by draw, a middle one in
distribution). So ``1 x K`` and ``K x 1`` of depth 2 are ``K`` steps of rectified
flow, and only splits with every level above one step can beat the
shallower model: none for a prime budget (5, 7, ...) at any depth, none
beyond depth 2 for a budget of two prime factors (10 = 2 x 5). Trained
fields differ from the exact ones, so their single-step splits do differ
from the shallower model; :func:`step_allocations` keeps them as candidates.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np

from .metrics import sliced_wasserstein, wasserstein_1d

__all__ = ["CRITERIA", "step_allocations", "allocation_score"]

#: names accepted by ``criterion`` (lower is better)
CRITERIA = ("sliced_wasserstein", "wasserstein")


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def step_allocations(nfe: int, depth: int) -> list[tuple[int, ...]]:
    """Every ``steps`` tuple of length ``depth`` with ``prod(steps) == nfe``.

    These are the ordered factorisations of ``nfe`` into ``depth`` positive
    factors (factors of 1 allowed, so the list is never empty: ``(nfe, 1, ...,
    1)`` is always in it), outermost level first, in lexicographic order.

    Parameters
    ----------
    nfe : int
        Total number of field evaluations, >= 1.
    depth : int
        Number of levels ``D >= 1``.

    Returns
    -------
    allocations : list of tuple of int
        Each of length ``depth``; ``d(nfe)`` of them for ``D = 2`` (the
        number of divisors).

    Examples
    --------
    >>> step_allocations(12, 2)
    [(1, 12), (2, 6), (3, 4), (4, 3), (6, 2), (12, 1)]
    >>> step_allocations(4, 3)
    [(1, 1, 4), (1, 2, 2), (1, 4, 1), (2, 1, 2), (2, 2, 1), (4, 1, 1)]
    """
    for name, value in (("nfe", nfe), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"'{name}' must be an int, got {type(value).__name__}")
        if value < 1:
            raise ValueError(f"'{name}' must be an int >= 1, got {value}")
    nfe, depth = int(nfe), int(depth)
    if depth == 1:
        return [(nfe,)]
    return [(k,) + rest for k in _divisors(nfe) for rest in step_allocations(nfe // k, depth - 1)]


def allocation_score(
    X_gen,
    X_val,
    criterion: str | Callable = "sliced_wasserstein",
    random_state=None,
    n_projections: int = 50,
) -> float:
    """Distance between generated samples and validation data (lower is better).

    Parameters
    ----------
    X_gen : array-like of shape (n, d)
        Generated samples (rows; images flattened).
    X_val : array-like of shape (m, d)
        Held-out data.
    criterion : {"sliced_wasserstein", "wasserstein"} or callable, default="sliced_wasserstein"
        ``"sliced_wasserstein"``: :func:`hrflow.metrics.sliced_wasserstein` with
        ``n_projections`` directions seeded by ``random_state``;
        ``"wasserstein"``: the exact :func:`hrflow.metrics.wasserstein_1d`
        (``d = 1`` only); a callable ``criterion(X_gen, X_val) -> float``.
    random_state : None, int or numpy Generator, default=None
        Seed of the sliced-Wasserstein directions.
    n_projections : int, default=50

    Returns
    -------
    score : float
        ``inf`` if ``X_gen`` holds NaN or infinite values (a diverged split).

    Examples
    --------
    >>> allocation_score([[0.0], [1.0]], [[1.0], [2.0]], "wasserstein")
    1.0
    """
    X_gen = np.asarray(X_gen, dtype=np.float64)
    X_gen = X_gen.reshape(X_gen.shape[0], -1)
    X_val = np.asarray(X_val, dtype=np.float64)
    X_val = X_val.reshape(X_val.shape[0], -1)
    if not np.all(np.isfinite(X_gen)):
        return math.inf
    if callable(criterion):
        return float(criterion(X_gen, X_val))
    if criterion == "sliced_wasserstein":
        return sliced_wasserstein(X_gen, X_val, n_projections=n_projections, random_state=random_state)
    if criterion == "wasserstein":
        if X_val.shape[1] != 1:
            raise ValueError(
                f"criterion='wasserstein' needs 1-D data, got {X_val.shape[1]} features; "
                "use criterion='sliced_wasserstein'"
            )
        return wasserstein_1d(X_gen, X_val)
    raise ValueError(f"'criterion' must be one of {CRITERIA} or a callable, got {criterion!r}")
