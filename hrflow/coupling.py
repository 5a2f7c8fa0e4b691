"""Mini-batch couplings of source and data draws (spec section 7), as pure functions.

Independent coupling (the default) pairs each data point ``x1`` with a fresh
source draw ``x0``. A mini-batch optimal-transport coupling re-pairs the
source draws of a batch with its data points so that the total squared
distance is (nearly) minimal, which straightens the learned paths and helps
few-step sampling (Tong et al. 2023, Pooladian et al. 2023):

- ``"ot_location"``: pair the location source ``x0^(0)`` with ``x1`` (the
  paper's HOTCFM2, its Appendix H.2), across the whole batch;
- ``"ot_velocity"`` (depth >= 2): pair the source ``x0^(k)`` of an inner
  level ``k >= 1`` with that level's endpoint ``y_k = x1 - sum_{j<k} x0^(j)``
  (for ``D = 2``: ``v0`` with ``v1 = x1 - x0``; the velocity coupling of
  "Hierarchical Rectified Flow Matching with Mini-Batch Couplings"), but only
  *within groups of rows that share their outer states*
  (:func:`couple_inner_in_groups`).

Why groups: the sampler draws an inner source from ``N(0, I)``
independently of the outer states the field is conditioned on. Pairing
``x0^(k)`` with ``y_k`` across the whole batch (as for the location level)
makes the inner source depend on the outer states in training (at ``t_0 =
0``: on ``x0^(0)`` itself), so the inner flows are trained from a different
source than they are sampled from. That naive version was measured biased
in ``benchmarks/bench_couplings.py`` (sliced W2 near 1.0 on 8 Gaussians ->
moons at every NFE, where the other models reach 0.2) and is not offered.
Within a group that shares the outer states, the pairing is a coupling of
``N(0, I)`` with the conditional law of ``y_k`` given those states, which is
what the sampler transports. The group's endpoints come from data points of
the batch resampled with their posterior weights given the states
(:func:`group_posterior_log_weights`), which needs the density of the
location source; the location level itself stays independent.

A pairing only permutes the source draws of a batch (or, for ``"sinkhorn"``,
resamples them from the entropic plan), so the marginal of every ``x0^(k)``
is unchanged; the hierarchy math (:func:`hrflow.hierarchy.training_pair`)
then runs on the paired draws as usual.

Effect on densities: Theorem 1 (spec section 4) assumes the independent
coupling. With a coupling of the location level the velocity distribution at
``(x0, t = 0)`` is the coupled conditional ``pi(x1 | x0)``, not ``p1``, so a
single draw of Algorithm 3 no longer gives ``log p1``. Its log-mean-exp over
draws ``x0 ~ rho0`` is still a consistent (importance-sampling) estimate,
because ``E_{x0 ~ rho0}[pi(x1 | x0)] = p1(x1)``, but with a much larger
variance (the coupled conditional is concentrated), hence a large negative
bias for a finite number of draws; the mean of logs stays a lower bound.
Algorithm 4 uses ``rho0(x0)`` in place of ``pi(x0 | x1)`` and is not
consistent. The estimator therefore warns (:class:`CouplingDensityWarning`)
for Algorithm 3 and refuses Algorithm 4 when a model of depth >= 2 was
trained with a coupling that pairs the location level (``"ot_location"``, or
``"ot_velocity"`` at depth >= 3, whose middle levels are outer levels of the
innermost one) or reflowed; ``"ot_velocity"`` at depth 2 leaves the location
level independent, and both algorithms stay exact. Depth 1 is unaffected: its density is
the change of variables of the learned ODE, exact for any coupling.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ._validation import user_stacklevel
from .hierarchy import interpolate_states, residuals

__all__ = [
    "COUPLINGS",
    "OT_METHODS",
    "CouplingDensityWarning",
    "CouplingCollapseWarning",
    "squared_distances",
    "ot_pairing",
    "apply_pairing",
    "pairing_cost",
    "coupled_levels",
    "couple_sources",
]

#: names accepted by the estimator's ``coupling`` parameter
COUPLINGS = ("independent", "ot_location", "ot_velocity")

#: names accepted by ``method`` of :func:`ot_pairing` (``coupling_method`` of the estimator)
OT_METHODS = ("exact", "sinkhorn")

#: default entropic regularisation of ``"sinkhorn"``, relative to the largest cost
#: (``coupling_reg`` of the estimator; ``benchmarks/bench_sinkhorn_reg.py``)
SINKHORN_REG = 0.01


class CouplingDensityWarning(UserWarning):
    """Density of a model trained with a non-independent coupling (not exact, see module)."""


class CouplingCollapseWarning(UserWarning):
    """Most groups of ``coupling="ot_velocity"`` hold copies of about one data point.

    In high dimension (e.g. images) the posterior weights of
    :func:`group_posterior_log_weights` pile onto the anchor's own data point
    (unless the anchor's location time is near 0): the coupling stays
    consistent but pairs nothing in those groups, and the batch keeps about one
    distinct data point per such group.
    """


#: median effective sample size of a group's resampling below which
#: :func:`couple_inner_in_groups` warns (:class:`CouplingCollapseWarning`)
COLLAPSED_ESS = 2.0


def _flat64(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        arr = np.asarray(x, dtype=np.float64)
    if arr.ndim < 1 or arr.shape[0] < 1:
        raise ValueError(f"'{name}' must have shape (n, *event_shape) with n >= 1, got {arr.shape}")
    return arr.reshape(arr.shape[0], -1)


def squared_distances(x0, x1) -> np.ndarray:
    """Squared Euclidean cost matrix ``C[i, j] = ||x0[i] - x1[j]||^2``.

    Parameters
    ----------
    x0 : torch.Tensor or array-like of shape (n, *e)
    x1 : torch.Tensor or array-like of shape (m, *e)
        Events are flattened.

    Returns
    -------
    C : ndarray of shape (n, m), float64

    Examples
    --------
    >>> squared_distances([[0.0], [1.0]], [[3.0]]).tolist()
    [[9.0], [4.0]]
    """
    import ot

    a, b = _flat64(x0, "x0"), _flat64(x1, "x1")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"'x0' and 'x1' must have the same event size, got {a.shape[1]} and {b.shape[1]}")
    return ot.dist(a, b, metric="sqeuclidean")


def pairing_cost(x0, x1, perm) -> float:
    """Mean squared distance ``mean_i ||x0[perm[i]] - x1[i]||^2`` of a pairing.

    Parameters
    ----------
    x0 : torch.Tensor or array-like of shape (n, *e)
    x1 : torch.Tensor or array-like of shape (m, *e)
    perm : array-like of int of shape (m,)
        Index into ``x0`` of the partner of every ``x1[i]``.

    Returns
    -------
    float

    Examples
    --------
    >>> pairing_cost([[0.0], [1.0]], [[1.0], [0.0]], [1, 0])
    0.0
    """
    a, b = _flat64(x0, "x0"), _flat64(x1, "x1")
    p = np.asarray(perm.cpu() if isinstance(perm, torch.Tensor) else perm, dtype=np.int64)
    return float(np.mean(np.sum((a[p] - b) ** 2, axis=1)))


def ot_pairing(
    x0,
    x1,
    method: str = "exact",
    reg: float = SINKHORN_REG,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mini-batch optimal-transport pairing of two equal-size batches.

    ``"exact"`` solves the assignment problem ``min_perm sum_i ||x0[perm[i]] -
    x1[i]||^2`` with :func:`ot.emd` on the squared Euclidean costs
    (:func:`ot.dist`): the optimal plan between two uniform batches of equal
    size is a permutation matrix (Birkhoff), read off as ``perm``. Should the
    solver return a non-vertex plan (degenerate ties), the permutation comes
    from :func:`scipy.optimize.linear_sum_assignment` on the same costs.

    ``"sinkhorn"`` computes the entropic plan (:func:`ot.sinkhorn`; log-domain
    iterations for ``reg < 2e-3``) of the costs divided by their maximum, with regularisation ``reg``, and
    draws for every ``x1[i]`` one partner from its column of the plan with
    ``generator``. The result is an assignment (partners may repeat), which
    tends to the exact permutation's cost as ``reg -> 0``.

    Parameters
    ----------
    x0 : torch.Tensor or array-like of shape (n, *e)
        Source draws.
    x1 : torch.Tensor or array-like of shape (n, *e)
        Points to pair them with (data, or a level's endpoint ``y_k``).
    method : {"exact", "sinkhorn"}, default="exact"
    reg : float, default=0.01
        Entropic regularisation of ``"sinkhorn"``, relative to the largest cost.
    generator : torch.Generator or None
        Drives the sampling of ``"sinkhorn"`` (required there; unused by ``"exact"``).

    Returns
    -------
    perm : torch.Tensor of shape (n,), int64
        ``x0[perm[i]]`` is the partner of ``x1[i]``; on ``generator``'s device
        for ``"sinkhorn"``, on ``x1``'s device (CPU for arrays) for ``"exact"``.

    Examples
    --------
    >>> import torch
    >>> x0 = torch.tensor([[0.0], [10.0], [5.0]])
    >>> x1 = torch.tensor([[9.0], [6.0], [1.0]])
    >>> ot_pairing(x0, x1).tolist()
    [1, 2, 0]
    """
    if method not in OT_METHODS:
        raise ValueError(f"'method' must be one of {OT_METHODS}, got {method!r}")
    cost = squared_distances(x0, x1)
    n = cost.shape[0]
    if cost.shape[1] != n:
        raise ValueError(f"'x0' and 'x1' must have the same batch size, got {n} and {cost.shape[1]}")
    out_device = x1.device if isinstance(x1, torch.Tensor) else torch.device("cpu")
    if n == 1:
        return torch.zeros(1, dtype=torch.long, device=out_device)
    import ot

    w = np.full(n, 1.0 / n)
    if method == "exact":
        plan = ot.emd(w, w, cost, numItermax=max(100_000, 50 * n * n))
        perm = plan.argmax(axis=0)
        ok = np.allclose(plan[perm, np.arange(n)], 1.0 / n) and np.unique(perm).size == n
        if not ok:  # a degenerate (non-vertex) plan: solve the assignment directly
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(cost)
            perm = np.empty(n, dtype=np.int64)
            perm[cols] = rows
        return torch.as_tensor(perm, dtype=torch.long, device=out_device)
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not reg > 0:
        raise ValueError(f"'reg' must be a positive float, got {reg!r}")
    if generator is None:
        raise ValueError("'generator' is required for method='sinkhorn'")
    scale = cost.max()
    cost = cost / scale if scale > 0 else cost
    plan = np.full_like(cost, np.nan)
    # warn=False: POT warns when 1000 iterations miss stopThr=1e-9, which small batches do at
    # reg 0.01 while their marginals are already right to ~1e-6 relative (32 points: 5e-7);
    # each x1 then draws its partner from its own normalised column, so the plan is usable
    if reg >= 2e-3:  # the kernel exp(-cost / reg) is representable: plain (fast) iterations
        with np.errstate(all="ignore"):
            plan = ot.sinkhorn(w, w, cost, float(reg), numItermax=1000, stopThr=1e-9, warn=False)
    if not np.all(np.isfinite(plan)):  # small reg: log-domain iterations (slower, stable)
        plan = ot.sinkhorn(w, w, cost, float(reg), method="sinkhorn_log", numItermax=1000,
                           stopThr=1e-9, warn=False)
    plan = np.where(np.isfinite(plan) & (plan > 0), plan, 0.0)
    cols = plan.T  # row i: weights of the partners of x1[i]
    bad = cols.sum(axis=1) <= 0
    if bad.any():  # an underflowed column: fall back to a uniform partner
        cols[bad] = 1.0
    probs = torch.as_tensor(cols, dtype=torch.float64, device=generator.device)
    perm = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return perm.to(out_device)


def apply_pairing(x0: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Reorder source draws by a pairing: ``x0[perm]``.

    Parameters
    ----------
    x0 : torch.Tensor of shape (n, *e)
    perm : torch.Tensor of shape (m,), int64
        From :func:`ot_pairing`.

    Returns
    -------
    paired : torch.Tensor of shape (m, *e)
        ``paired[i]`` is the partner of ``x1[i]``.

    Examples
    --------
    >>> import torch
    >>> apply_pairing(torch.tensor([[0.0], [1.0]]), torch.tensor([1, 0])).tolist()
    [[1.0], [0.0]]
    """
    return x0[perm.to(x0.device)]


def coupled_levels(coupling: str, depth: int) -> tuple[int, ...]:
    """Levels whose source draws a coupling pairs across the whole batch.

    Only the location level is paired across the batch (``"ot_location"``);
    ``"ot_velocity"`` pairs the inner levels within groups instead
    (:func:`couple_inner_in_groups`), so it returns ``()`` here.

    Parameters
    ----------
    coupling : {"independent", "ot_location", "ot_velocity"}
    depth : int
        Number of levels ``D >= 1``.

    Returns
    -------
    levels : tuple of int
        ``()`` or ``(0,)``.

    Examples
    --------
    >>> coupled_levels("ot_location", 3), coupled_levels("ot_velocity", 3)
    ((0,), ())
    """
    if coupling not in COUPLINGS:
        raise ValueError(f"'coupling' must be one of {COUPLINGS}, got {coupling!r}")
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
        raise ValueError(f"'depth' must be a positive int, got {depth!r}")
    return (0,) if coupling == "ot_location" else ()


def couple_sources(
    x1: torch.Tensor,
    x0: torch.Tensor,
    levels: Sequence[int],
    *,
    method: str = "exact",
    reg: float = SINKHORN_REG,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pair the source draws of the given levels with their endpoints, outermost first.

    For every ``k`` in ``levels`` (in increasing order), the draws ``x0[k]``
    are re-paired by :func:`ot_pairing` with the level's endpoint
    ``y_k = x1 - sum_{j<k} x0[j]``, computed from the already-paired outer
    levels (``y_0 = x1``, spec section 2). Other levels are left as drawn.

    Parameters
    ----------
    x1 : torch.Tensor of shape (n, *e)
        Data batch (kept in place).
    x0 : torch.Tensor of shape (D, n, *e)
        Independent source draws of every level.
    levels : sequence of int
        Levels to pair, e.g. from :func:`coupled_levels`.
    method, reg, generator
        As in :func:`ot_pairing`.

    Returns
    -------
    x0 : torch.Tensor of shape (D, n, *e)
        A new tensor: the paired source draws, ready for
        :func:`hrflow.hierarchy.training_pair`.

    Examples
    --------
    >>> import torch
    >>> x1 = torch.tensor([[9.0], [1.0]])
    >>> x0 = torch.tensor([[[0.0], [10.0]], [[-1.0], [1.0]]])
    >>> couple_sources(x1, x0, (0, 1))[:, :, 0].tolist()  # y_1 = (-1, 1)
    [[10.0, 0.0], [-1.0, 1.0]]
    """
    if x0.dim() < 2 or x0.shape[1:] != x1.shape:
        raise ValueError(f"x0 must have shape (D, *{tuple(x1.shape)}), got {tuple(x0.shape)}")
    depth = x0.shape[0]
    levels = sorted(set(int(k) for k in levels))
    if levels and not (0 <= levels[0] and levels[-1] < depth):
        raise ValueError(f"'levels' must be in [0, {depth}), got {levels}")
    out = x0.clone()
    if not levels:
        return out
    y = x1.clone()
    for k in range(levels[-1] + 1):
        if k in levels:
            perm = ot_pairing(out[k], y, method=method, reg=reg, generator=generator)
            out[k] = apply_pairing(out[k], perm)
        y = y - out[k]
    return out


def _standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Log-density of ``N(0, I)`` summed over every trailing dimension: shape ``x.shape[:2]``."""
    flat = x.reshape(*x.shape[:2], -1)
    return -0.5 * (flat**2).sum(-1) - 0.5 * flat.shape[-1] * math.log(2 * math.pi)


def group_posterior_log_weights(
    candidates: torch.Tensor,
    states: torch.Tensor,
    times: torch.Tensor,
    source_log_prob,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which data points pass through given outer states, under the independent coupling.

    For a group sharing the outer states ``z_0, ..., z_{k-1}`` at times
    ``t_0, ..., t_{k-1}`` and a candidate data point ``x1``, the outer source
    draws that would produce these states are unique (spec section 2):
    ``x0^(j) = (z_j - t_j y_j) / (1 - t_j)`` with ``y_0 = x1`` and ``y_{j+1} =
    y_j - x0^(j)``. Under the independent coupling the posterior of ``x1``
    given the states is proportional to ``p1(x1) rho0(x0^(0)) prod_{1<=j<k}
    N(x0^(j); 0, I)`` (the Jacobian of the affine inversion does not depend on
    ``x1``), so for candidates drawn from ``p1`` the self-normalised
    importance weights are the source terms alone.

    Parameters
    ----------
    candidates : torch.Tensor of shape (c, *e)
        Data points drawn from ``p1`` (e.g. the training batch).
    states : torch.Tensor of shape (k, G, *e)
        Outer states of ``G`` groups, outermost first, ``k >= 1``.
    times : torch.Tensor of shape (k, G)
        Their times, each in ``[0, 1)``.
    source_log_prob : callable
        Log-density of the location source ``rho0``, mapping ``(n, *e)`` to ``(n,)``.

    Returns
    -------
    log_w : torch.Tensor of shape (G, c)
        Unnormalised log-weights of every candidate for every group.
    x0 : torch.Tensor of shape (k, G, c, *e)
        The implied outer source draws.
    y : torch.Tensor of shape (G, c, *e)
        The implied endpoint ``y_k`` of level ``k``.

    Examples
    --------
    A state at ``t_0 = 0`` is the source draw itself, so no candidate is
    favoured: every weight is ``log rho0(z_0)``.

    >>> import torch
    >>> from hrflow.sources import StandardNormal
    >>> log_w, x0, y = group_posterior_log_weights(
    ...     torch.tensor([[1.0], [3.0]]), torch.tensor([[[0.5]]]), torch.tensor([[0.0]]),
    ...     StandardNormal((1,)).log_prob)
    >>> torch.allclose(log_w[0, 0], log_w[0, 1]), y[0, :, 0].tolist()
    (True, [0.5, 2.5])
    """
    k, n_groups = times.shape
    if states.shape[:2] != (k, n_groups) or states.shape[2:] != candidates.shape[1:]:
        raise ValueError(
            f"'states' must have shape ({k}, {n_groups}, *{tuple(candidates.shape[1:])}), "
            f"got {tuple(states.shape)}"
        )
    event = candidates.shape[1:]
    pad = (1,) * len(event)
    c = candidates.shape[0]
    y = candidates.unsqueeze(0).expand(n_groups, c, *event)
    x0 = []
    log_w = None
    for j in range(k):
        tj = times[j].reshape(n_groups, 1, *pad).to(candidates.dtype)
        xj = (states[j].unsqueeze(1) - tj * y) / (1 - tj).clamp_min(1e-6)
        x0.append(xj)
        if j == 0:
            log_w = source_log_prob(xj.reshape(n_groups * c, *event)).reshape(n_groups, c)
        else:
            log_w = log_w + _standard_normal_log_prob(xj)
        y = y - xj
    return log_w, torch.stack(x0), y


def couple_inner_in_groups(
    x1: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    group_size: int,
    source_log_prob,
    *,
    method: str = "exact",
    reg: float = SINKHORN_REG,
    generator: torch.Generator,
    max_elements: int = 2**25,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mini-batch OT of the inner levels within groups that share their outer states.

    The sampler draws the source of an inner level ``k >= 1`` from ``N(0, I)``
    *independently of the outer states* it is conditioned on, and transports
    it to the conditional distribution of the level's endpoint ``y_k`` given
    those states. A consistent coupling of level ``k`` must therefore pair
    ``x0^(k)`` with ``y_k`` only among rows that share the outer states. This
    function builds such rows: the batch is cut into ``G = n // group_size``
    groups; each group takes the outer states and times of its first row (the
    anchor), draws ``group_size`` data points from the batch with the
    posterior weights of :func:`group_posterior_log_weights` (self-normalised
    importance resampling; exact as the batch grows), sets their outer source
    draws to the implied values so that every row of the group passes through
    the anchor's states, and re-pairs the group's own independent draws
    ``x0^(k)`` with the resampled ``y_k`` by :func:`ot_pairing`. With
    ``D >= 3`` the groups are dealt round-robin to the inner levels ``1, ...,
    D-1`` (a mixture of couplings, each consistent, is consistent). Rows past
    ``G * group_size`` and every level other than the group's one keep their
    independent draws.

    Parameters
    ----------
    x1 : torch.Tensor of shape (n, *e)
        Data batch, drawn from ``p1``.
    x0 : torch.Tensor of shape (D, n, *e)
        Independent source draws of every level, ``D >= 2``.
    t : torch.Tensor of shape (D, n)
        Times of every level.
    group_size : int
        Rows per group, ``2 <= group_size <= n``.
    source_log_prob : callable
        Log-density of the location source, ``(m, *e) -> (m,)``.
    method, reg, generator
        As in :func:`ot_pairing`; ``generator`` also drives the resampling.
    max_elements : int, default=2**25
        Memory bound: the candidate pool holds every data point of the batch
        unless ``groups * pool * prod(e)`` would exceed this; it is then cut to
        the anchors' own points plus the first other rows that fit (at least
        ``group_size`` points in all). The rows of a batch are independent
        draws, so any subset is a valid pool, only a smaller one.

    Returns
    -------
    x1 : torch.Tensor of shape (n, *e)
    x0 : torch.Tensor of shape (D, n, *e)
    t : torch.Tensor of shape (D, n)
        New tensors, ready for :func:`hrflow.hierarchy.training_pair`.

    Warns
    -----
    CouplingCollapseWarning
        When the median effective sample size ``1 / sum(w**2)`` of the groups'
        resampling weights at a level is below :data:`COLLAPSED_ESS`: most
        groups then hold copies of about one data point.

    Examples
    --------
    >>> import torch
    >>> from hrflow.sources import StandardNormal
    >>> g = torch.Generator().manual_seed(0)
    >>> x1 = torch.randn(8, 1, generator=g).sign()
    >>> x0, t = torch.randn(2, 8, 1, generator=g), torch.rand(2, 8, generator=g)
    >>> x1c, x0c, tc = couple_inner_in_groups(x1, x0, t, 4, StandardNormal((1,)).log_prob,
    ...                                       generator=g)
    >>> z = (1 - tc[0, :4, None]) * x0c[0, :4] + tc[0, :4, None] * x1c[:4]  # one shared state
    >>> bool(torch.allclose(z, z[:1], atol=1e-5))
    True
    """
    if x0.dim() < 2 or x0.shape[1:] != x1.shape:
        raise ValueError(f"x0 must have shape (D, *{tuple(x1.shape)}), got {tuple(x0.shape)}")
    depth, n = x0.shape[0], x0.shape[1]
    if depth < 2:
        raise ValueError(f"inner-level coupling needs depth >= 2, got x0 of depth {depth}")
    if t.shape != (depth, n):
        raise ValueError(f"t must have shape ({depth}, {n}), got {tuple(t.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) \
            or not 2 <= group_size <= n:
        raise ValueError(f"'group_size' must be an int in [2, n={n}], got {group_size!r}")
    m = int(group_size)
    n_groups = n // m
    x1, x0, t = x1.clone(), x0.clone(), t.clone()
    event = x1.shape[1:]
    anchors = torch.arange(n_groups, device=x1.device) * m
    z_all = interpolate_states(x0, residuals(x1, x0), t)  # every row's states
    # the candidate pool: the batch's data points before any row is rewritten, the
    # anchors' own first (each group's state is then reachable by one of its candidates)
    size = max(m, min(n, max_elements // max(1, n_groups * math.prod(event))))
    others = torch.ones(n, dtype=torch.bool, device=x1.device)
    others[anchors] = False
    candidates = torch.cat([x1[anchors], x1[others]])[:size].clone()
    for k in range(1, depth):
        groups = torch.arange(k - 1, n_groups, depth - 1, device=x1.device)
        if groups.numel() == 0:
            continue
        a = anchors[groups]
        log_w, x0_implied, y_implied = group_posterior_log_weights(
            candidates, z_all[:k, a], t[:k, a], source_log_prob
        )
        probs = torch.softmax(log_w.to(torch.float64), dim=1)
        ess = float(probs.square().sum(dim=1).reciprocal().median())
        if ess < COLLAPSED_ESS:
            warnings.warn(
                # one text per pool size and level: Python shows it once, not every batch
                f"coupling='ot_velocity': in most groups the posterior weights of the "
                f"{probs.shape[1]} candidate data points collapse onto one (median effective "
                f"sample size below {COLLAPSED_ESS:g} at level {k}), as in high dimension or "
                "with a small batch: such a group holds copies of one data point, so the "
                "coupling pairs nothing there and the batch loses most of its distinct data "
                "points. Use coupling='independent' or 'ot_location' for such data (for "
                "low-dimensional data, a larger batch_size helps).",
                CouplingCollapseWarning, stacklevel=user_stacklevel(),
            )
        pick = torch.multinomial(probs.to(generator.device), m, replacement=True,
                                 generator=generator).to(x1.device)  # (g, m)
        rows = (a.unsqueeze(1) + torch.arange(m, device=x1.device)).reshape(-1)
        gi = torch.arange(groups.numel(), device=x1.device).unsqueeze(1).expand(-1, m).reshape(-1)
        ci = pick.reshape(-1)
        x1[rows] = candidates[ci]
        x0[:k, rows] = x0_implied[:, gi, ci]
        t[:k, rows] = t[:k, a].repeat_interleave(m, dim=1)
        # one small assignment problem per group, solved on the CPU (POT): one transfer
        # there and one gather back for all groups
        src = x0[k, rows].reshape(groups.numel(), m, -1).cpu()
        dst = y_implied[gi, ci].reshape(groups.numel(), m, -1).cpu()
        perms = torch.stack([
            ot_pairing(src[g], dst[g], method=method, reg=reg, generator=generator).cpu()
            for g in range(groups.numel())
        ])  # (g, m): group-local partner of every row
        partner = rows.reshape(groups.numel(), m).gather(1, perms.to(rows.device)).reshape(-1)
        x0[k, rows] = x0[k, partner]
    return x1, x0, t
