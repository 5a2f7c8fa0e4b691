r"""Log-densities of a hierarchical field (spec section 4, paper Algorithms 3 and 4).

Shapes use ``n`` for the number of points scored, ``*e`` for the event shape of
one point (``(d,)`` for tabular data, ``d = prod(e)``), ``D`` for the depth of
the field and ``M`` for a number of Monte Carlo draws.

The innermost level as a CNF
----------------------------
Freeze the outer levels at states/times ``(z_k, t_k)``, ``k < D-1``. The
innermost level is the ODE ``dz/dtau = f(z_0..z_{D-2}, z; t_0..t_{D-2}, tau)``
started at ``z(0) ~ base`` (the standard normal for ``D >= 2``, the source
``rho0`` for ``D = 1``). By the instantaneous change of variables,

    log p(z(1) | context) = log base(z(0)) - int_0^1 div_z f dtau.

:func:`cnf_log_density` integrates the augmented state ``(z, l)`` backward from
``tau = 1`` (``z = endpoint``, ``l = 0``) to ``tau = 0`` with ``dl/dtau = div_z f``
and returns ``log base(z(0)) + l(0)``.

Algorithm 3 (t = 0, the primary estimator)
------------------------------------------
With every outer level at time 0 and state equal to its own source draw
``x0^(k)``, the innermost endpoint is the residual ``x1 - sum_{k<D-1} x0^(k)``
and ``log p1(x1) = log p(residual | x0^(0..D-2), 0)`` for *every* draw; several
draws are combined by log-mean-exp (consistent; biased low by Jensen) or by the
mean of the logs (a lower bound). For a perfect field every draw gives the same
value.

Algorithm 4 (t in (0, 1)): the derivation implemented here
-----------------------------------------------------------
Independent coupling: ``x0 ~ rho0`` and ``x1 ~ p1`` are independent, and the map
``(x0, x1) -> (x_t, v) = ((1 - t) x0 + t x1, x1 - x0)`` has unit Jacobian
(its inverse is ``x0 = x_t - t v``, ``x1 = x_t + (1 - t) v``). Hence the joint
density of ``(x_t, v)`` is ``rho0(x_t - t v) p1(x_t + (1 - t) v)``, which gives
Theorem 1, and evaluated at ``x_t = (1 - t) x0 + t x1``, ``v = x1 - x0``:

    log p1(x1) = log p(v | x_t, t) + log p_t(x_t) - log rho0(x0)        (paper Eq. 22)

for every ``x0`` (with ``rho0(x0) > 0``). The first term is the innermost CNF
conditioned on ``(x_t, t)`` (plus inner draws at time 0 for ``D >= 3``, whose
endpoint is ``v - sum_{1<=k<D-1} x0^(k)``, exactly as in Algorithm 3 one level
down). The marginal comes from a second change of variables, at time 0 this
time: for ``x0' ~ rho0`` and ``v' ~ p(. | x0', 0)`` (the law of ``x1 - x0'``),
``x_t = x0' + t v'``, and ``v' -> x0' + t v'`` has Jacobian ``t^d``, so

    p_t(x_t) = E_{x0' ~ rho0}[ p(v' = (x_t - x0') / t | x0', 0) ] / t^d,

estimated by log-mean-exp over ``M`` draws ``x0'`` with the Algorithm 3 machinery
(:func:`log_marginal_density`). Substituting ``p(v' | x0', 0) = p1(x0' + v')``
gives ``p_t(x) = E[p1((x - (1 - t) x0') / t)] / t^d``, the density of
``(1 - t) x0' + t x1``, as it must. The estimate of ``p_t`` is unbiased, its log
biased low by ``~ Var / (2 M)``; the test suite checks the formula and each of its
pieces against the closed forms of :class:`hrflow.analytic.MixtureOracle`.

The draws ``x0'`` come from ``rho0`` itself, not from a proposal adapted to
``x_t``: the relative variance of the ``p_t`` estimate grows as ``t`` shrinks
(the integrand concentrates on ``x0' ~ x_t``) and explodes far from the data,
where the log-mean-exp is dominated by the single most favourable draw and is
biased low (finite, very low, but not accurate). Algorithm 3 has neither
problem and is the primary estimator.

Randomness and batching
-----------------------
Every random quantity is drawn once per call from ``generator``, in this
order: location-source draws, inner draws ``x0^(k)``, ``1 <= k < D-1``,
Hutchinson probes; then, for Algorithm 4, the same three groups for the
marginal. How many depends on ``draws``:

``draws="shared"`` (the default; common random numbers)
    one value per draw index, shared by all rows: each group is
    ``(n_draws, *e)`` (``(n_draws_marginal, *e)`` for the marginal). A row's
    value then does not depend on which other rows are scored with it, nor on
    their order, nor on ``batch_size``. Differences between rows (ranking
    points, comparing two models on the same rows) keep little of the Monte
    Carlo noise.
``draws="per_row"``
    independent draws for every row: each group is ``(n * n_draws, *e)``, row
    ``i`` using entries ``i * n_draws ... i * n_draws + n_draws - 1`` (the
    marginal: ``(n * n_draws_marginal, *e)``, shared by the row's velocity
    draws). A row's value depends on its position in ``X`` and on the number
    of rows ``n`` of the call (the groups are drawn one after the other), not
    on ``batch_size``; the errors of different rows are independent, so the
    mean over a data set (its log-likelihood or bits/dim) averages them out.
    All draws are made before the integration, so their memory is not bounded
    by ``batch_size``: up to ``D`` groups of ``n * n_draws * d`` numbers, and for
    Algorithm 4 up to ``D`` more of ``n * n_draws_marginal * d``.

The work is one flat batch of (row, draw) pairs, integrated ``batch_size`` pairs
at a time. With a fixed-grid solver the invariance to ``batch_size`` is exact
(up to floating-point rounding of batched linear algebra); adaptive solvers
(``"dopri5"``, ...) choose one step sequence per batch, from the worst row of
the batch (a max-over-rows error norm, so every row meets its own tolerance),
so results then agree only up to the tolerances.

The price of sharing: the Hutchinson (and source-draw) errors of different rows
are correlated, so the mean over many rows (a data set's log-likelihood or
bits/dim) keeps them, and a standard error over rows does not show them.
Measured on 64-feature digits (``benchmarks/bench_probe_noise.py``, depth 1, one
draw): with shared draws, row errors correlate at about 0.7 and the 60-row
mean's spread is 3.0 nats; with ``draws="per_row"`` the correlation is 0 and the
spread 0.38 nats. Use ``draws="per_row"`` for a data set's figure (or raise
``n_draws``, or use the exact divergence).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torchdiffeq import odeint

from ._device import first_floating_tensor
from ._random import randn
from .divergence import PROBE_KINDS, divergence_exact, divergence_hutchinson, make_probe
from .fields.base import HierarchicalField
from .sources import Source

__all__ = [
    "cnf_log_density",
    "log_density",
    "log_marginal_density",
    "standard_normal_log_prob",
    "DENSITY_SOLVERS",
    "DRAWS",
    "FIXED_GRID_SOLVERS",
    "ADAPTIVE_SOLVERS",
]

#: fixed-grid torchdiffeq methods: ``n_steps`` uniform steps
FIXED_GRID_SOLVERS = ("euler", "midpoint", "heun3", "rk4")
#: adaptive torchdiffeq methods: tolerances ``atol``/``rtol``
ADAPTIVE_SOLVERS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
#: every solver name accepted by :func:`cnf_log_density`
DENSITY_SOLVERS = FIXED_GRID_SOLVERS + ADAPTIVE_SOLVERS

_DIVERGENCES = ("exact", "hutchinson")
_COMBINES = ("logmeanexp", "mean")
#: how the Monte Carlo draws are spread over the rows (module docstring)
DRAWS = ("shared", "per_row")
_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Log-density of ``N(0, I)`` per row, computed in float64.

    Parameters
    ----------
    x : torch.Tensor of shape (n, *e)

    Returns
    -------
    log_p : torch.Tensor of shape (n,), float64

    Examples
    --------
    >>> import torch
    >>> round(standard_normal_log_prob(torch.zeros(1, 2)).item(), 6)
    -1.837877
    """
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    return -0.5 * (flat**2).sum(dim=1) - 0.5 * flat.shape[1] * _LOG_2PI


def _rowwise_max_rms(tensor: torch.Tensor) -> torch.Tensor:
    """Error norm of adaptive solvers: RMS within each row, max over rows."""
    if tensor.dim() < 2 or tensor.shape[0] == 0:
        return tensor.abs().pow(2).mean().sqrt()
    return tensor.abs().pow(2).reshape(tensor.shape[0], -1).mean(dim=1).sqrt().max()


def _check_int(value, name, low=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive float, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite float, got {value!r}")
    return float(value)


def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_field(field):
    if not isinstance(field, HierarchicalField):
        raise TypeError(f"field must be a HierarchicalField, got {type(field).__name__}")
    return field


def _check_solver_options(solver, n_steps, atol, rtol):
    _check_choice(solver, "solver", DENSITY_SOLVERS)
    _check_int(n_steps, "n_steps")
    _check_positive_float(atol, "atol")
    _check_positive_float(rtol, "rtol")


# ---------------------------------------------------------------------------
# the innermost level as a CNF
# ---------------------------------------------------------------------------


def cnf_log_density(
    field: HierarchicalField,
    endpoint: torch.Tensor,
    context: Sequence[tuple[torch.Tensor, torch.Tensor | float]],
    *,
    base_log_prob: Callable[[torch.Tensor], torch.Tensor],
    divergence: str = "exact",
    probe: torch.Tensor | None = None,
    solver: str = "rk4",
    n_steps: int = 20,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> torch.Tensor:
    """Log-density of the innermost level's endpoint given frozen outer levels.

    The innermost level ``D - 1`` of ``field`` is a CNF in its own state,
    conditioned on the outer states and times in ``context``: the augmented
    state ``(z, l)`` is integrated backward from ``tau = 1`` (``z = endpoint``,
    ``l = 0``) to ``tau = 0`` with ``dz/dtau = f`` and ``dl/dtau = div_z f``,
    and the result is ``base_log_prob(z(0)) + l(0)``.

    Parameters
    ----------
    field : HierarchicalField
        Field of depth ``D``.
    endpoint : torch.Tensor of shape (n, *e)
        Innermost state at ``tau = 1`` whose density is wanted. Its dtype and
        device are those of the integration (they must suit the field).
    context : sequence of D - 1 pairs (z_k, t_k)
        Outer states ``z_k`` of shape (n, *e) and times ``t_k`` of shape (n,)
        (or a float), outermost first. They are encoded once and reused at every
        solver step.
    base_log_prob : callable
        Log-density of the innermost level's initial state, mapping ``(n, *e)``
        to ``(n,)``: :func:`standard_normal_log_prob` for ``D >= 2``, the
        source's ``log_prob`` for ``D = 1``. It receives float64 input.
    divergence : {"exact", "hutchinson"}, default="exact"
        How ``div_z f`` is computed (:mod:`hrflow.divergence`).
    probe : torch.Tensor of shape (n, *e), optional
        Fixed Hutchinson probe per row; required for ``divergence="hutchinson"``.
    solver : str, default="rk4"
        A fixed-grid torchdiffeq method (:data:`FIXED_GRID_SOLVERS`, with
        ``n_steps`` uniform steps) or an adaptive one (:data:`ADAPTIVE_SOLVERS`,
        with ``atol``/``rtol`` applied per row).
    n_steps : int, default=20
        Steps of a fixed-grid solver.
    atol, rtol : float, default=1e-5
        Tolerances of an adaptive solver.

    Returns
    -------
    log_p : torch.Tensor of shape (n,)
        ``log p(endpoint | context)``, float64, detached.

    Examples
    --------
    Depth 1 with the field ``f(z, tau) = 1`` (a shift by one): the density of
    the endpoint is the base density one unit to the left.

    >>> import torch
    >>> from hrflow.fields.base import HierarchicalField
    >>> class Shift(HierarchicalField):
    ...     def head(self, enc):
    ...         return torch.ones_like(enc[-1][0])
    >>> x = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    >>> lp = cnf_log_density(Shift(1, (1,)), x, [], base_log_prob=standard_normal_log_prob)
    >>> torch.allclose(lp, standard_normal_log_prob(x - 1))
    True
    """
    _check_field(field)
    depth = field.depth
    if not isinstance(endpoint, torch.Tensor):
        raise TypeError(f"endpoint must be a torch.Tensor, got {type(endpoint).__name__}")
    if not endpoint.is_floating_point():
        raise TypeError(f"endpoint must be a floating-point tensor, got dtype {endpoint.dtype}")
    if endpoint.dim() < 1 or tuple(endpoint.shape[1:]) != tuple(field.event_shape):
        raise ValueError(
            f"endpoint must have shape (n, *{tuple(field.event_shape)}), got {tuple(endpoint.shape)}"
        )
    if len(context) != depth - 1:
        raise ValueError(
            f"context must hold depth - 1 = {depth - 1} (z, t) pairs for a field of depth {depth}, "
            f"got {len(context)}"
        )
    if not callable(base_log_prob):
        raise TypeError(f"base_log_prob must be callable, got {type(base_log_prob).__name__}")
    _check_choice(divergence, "divergence", _DIVERGENCES)
    _check_solver_options(solver, n_steps, atol, rtol)
    n = endpoint.shape[0]
    dtype, device = endpoint.dtype, endpoint.device
    if divergence == "hutchinson":
        if not isinstance(probe, torch.Tensor):
            raise ValueError("divergence='hutchinson' needs a probe tensor of shape (n, *event_shape)")
        if tuple(probe.shape) != tuple(endpoint.shape):
            raise ValueError(f"probe must have shape {tuple(endpoint.shape)}, got {tuple(probe.shape)}")
        probe = probe.to(dtype=dtype, device=device)

    with torch.no_grad():
        encodings = []
        for k, pair in enumerate(context):
            z_k, t_k = pair
            if not isinstance(z_k, torch.Tensor) or tuple(z_k.shape) != tuple(endpoint.shape):
                raise ValueError(
                    f"context[{k}] state must be a tensor of shape {tuple(endpoint.shape)}, got "
                    f"{tuple(z_k.shape) if isinstance(z_k, torch.Tensor) else type(z_k).__name__}"
                )
            t_k = torch.as_tensor(t_k, dtype=dtype, device=device)
            if t_k.dim() == 0:
                t_k = t_k.expand(n)
            if tuple(t_k.shape) != (n,):
                raise ValueError(
                    f"context[{k}] time must be a float or of shape ({n},), got {tuple(t_k.shape)}"
                )
            encodings.append(field.encode(k, z_k.to(dtype=dtype, device=device), t_k))

        if n == 0:
            return torch.zeros(0, dtype=torch.float64, device=device)
        event = endpoint.shape[1:]
        d = endpoint[0].numel()
        inner = depth - 1

        def rhs(s, state):
            # reversed time s = 1 - tau: integrate s from 0 to 1
            z = state[:, :d].reshape(n, *event)
            tau = (1 - s).to(dtype).expand(n)

            def fn(v):
                return field.head(encodings + [field.encode(inner, v, tau)])

            if divergence == "exact":
                out, div = divergence_exact(fn, z)
            else:
                out, div = divergence_hutchinson(fn, z, probe)
            return -torch.cat([out.reshape(n, d), div.reshape(n, 1).to(dtype)], dim=1)

        zeros = torch.zeros(n, 1, dtype=dtype, device=device)
        state0 = torch.cat([endpoint.detach().reshape(n, d), zeros], dim=1)
        if solver in FIXED_GRID_SOLVERS:
            grid = torch.linspace(0.0, 1.0, n_steps + 1, dtype=dtype, device=device)
            state1 = odeint(rhs, state0, grid, method=solver)[-1]
        else:
            grid = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
            state1 = odeint(rhs, state0, grid, method=solver, atol=atol, rtol=rtol,
                            options={"norm": _rowwise_max_rms})[-1]
        z0 = state1[:, :d].reshape(n, *event)
        base = base_log_prob(z0.to(torch.float64))
        if not isinstance(base, torch.Tensor) or tuple(base.shape) != (n,):
            raise ValueError(f"base_log_prob must return a tensor of shape ({n},)")
        return (base.to(torch.float64) + state1[:, d].to(torch.float64)).detach()


# ---------------------------------------------------------------------------
# Algorithms 3 and 4
# ---------------------------------------------------------------------------


def _compute_dtype_device(field, X):
    if (tensor := first_floating_tensor(field)) is not None:
        return tensor.dtype, tensor.device
    if isinstance(X, torch.Tensor):
        return (X.dtype if X.is_floating_point() else torch.float64), X.device
    return torch.float64, torch.device("cpu")


def _prepare_X(field, X):
    dtype, device = _compute_dtype_device(field, X)
    if isinstance(X, torch.Tensor):
        X = X.detach()
    else:
        X = torch.as_tensor(np.asarray(X, dtype=np.float64))
    X = X.to(dtype=dtype, device=device)
    if X.dim() < 1 or tuple(X.shape[1:]) != tuple(field.event_shape):
        raise ValueError(f"X must have shape (n, *{tuple(field.event_shape)}), got {tuple(X.shape)}")
    if not torch.isfinite(X).all():
        raise ValueError("X must be finite (no NaN or infinity)")
    return X


def _check_source(source, field, need_log_prob, why):
    if not isinstance(source, Source):
        raise TypeError(f"source must be a hrflow.sources.Source, got {type(source).__name__}")
    if tuple(source.event_shape) != tuple(field.event_shape):
        raise ValueError(
            f"source event shape {tuple(source.event_shape)} does not match the field's "
            f"{tuple(field.event_shape)}"
        )
    if need_log_prob and not getattr(source, "has_log_prob", False):
        raise ValueError(f"{why} needs a source with a known density (source.has_log_prob); "
                         f"{type(source).__name__} has none")


def _check_t(t):
    if isinstance(t, bool) or not isinstance(t, numbers.Real):
        raise TypeError(f"t must be a float in (0, 1), got {t!r}")
    if not (0.0 < float(t) < 1.0):
        raise ValueError(f"t must lie in the open interval (0, 1), got {t!r}")
    return float(t)


def _check_common(generator, batch_size, combine, divergence, probe_kind, solver, n_steps, atol, rtol,
                  draws):
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if batch_size is not None:
        _check_int(batch_size, "batch_size")
    _check_choice(combine, "combine", _COMBINES)
    _check_choice(divergence, "divergence", _DIVERGENCES)
    _check_choice(probe_kind, "probe_kind", PROBE_KINDS)
    _check_choice(draws, "draws", DRAWS)
    _check_solver_options(solver, n_steps, atol, rtol)


def _draws(field, source, n_draws, generator, dtype, device, divergence, probe_kind, with_source=True):
    """Random numbers of one estimator: source draws, inner draws, probes (each (n_draws, *e)).

    ``n_draws`` is the number of draws shared by all rows, or rows times draws
    per row (``draws="per_row"``).
    """
    shape = (n_draws, *field.event_shape)
    x0 = source.sample(n_draws, generator, device=device, dtype=dtype) if with_source else None
    inner = [
        randn(shape, generator, device=device, dtype=dtype)
        for _ in range(max(field.depth - 2, 0))
    ]
    probes = None
    if divergence == "hutchinson":
        probes = make_probe(shape, probe_kind, generator, device=device, dtype=dtype)
    return x0, inner, probes


def _draw_index(pair, per_draw, per_row):
    """Index into the draws of flat (row, draw) indices ``pair = row * per_draw + draw``.

    Shared draws hold ``per_draw`` entries (the draw's own index); per-row draws hold
    ``rows * per_draw`` entries, one block per row (the flat index itself).
    """
    return pair if per_row else pair % per_draw


def _chunked(total, batch_size, device, fn):
    """Evaluate ``fn(idx) -> (len(idx),)`` over ``range(total)`` in chunks; float64 (total,)."""
    out = torch.empty(total, dtype=torch.float64, device=device)
    step = total if batch_size is None else batch_size
    for start in range(0, total, max(step, 1)):
        idx = torch.arange(start, min(start + step, total), device=device)
        out[start : start + idx.numel()] = fn(idx)
    return out


def _combine(values, combine):
    """(n, M) per-draw logs -> (n,)."""
    if combine == "mean":
        return values.mean(dim=1)
    return torch.logsumexp(values, dim=1) - math.log(values.shape[1])


def _marginal_terms(field, xt, x0p, inner_p, probe_p, t, cnf_kw):
    """``log p(v' = (x_t - x0') / t | x0', 0) - d log t`` for aligned rows (all (m, *e))."""
    vp = (xt - x0p) / t
    context = [(x0p, 0.0)] + [(w, 0.0) for w in inner_p]
    endpoint = vp - sum(inner_p) if inner_p else vp
    d = xt[0].numel()
    lp = cnf_log_density(field, endpoint, context, base_log_prob=standard_normal_log_prob,
                         probe=probe_p, **cnf_kw)
    return lp - d * math.log(t)


def log_marginal_density(
    field: HierarchicalField,
    X,
    t: float,
    source: Source,
    *,
    n_draws: int = 64,
    combine: str = "logmeanexp",
    divergence: str = "exact",
    probe_kind: str = "rademacher",
    solver: str = "rk4",
    n_steps: int = 20,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    generator: torch.Generator,
    batch_size: int | None = None,
    return_draws: bool = False,
    draws: str = "shared",
) -> torch.Tensor:
    """Estimate ``log p_t(x)``, the density of ``x_t = (1 - t) x0 + t x1``.

    "One-step linear flow from time 0 to t" (module docstring):
    ``p_t(x) = E_{x0' ~ rho0}[ p(v' = (x - x0') / t | x0', 0) ] / t^d`` with
    ``p(. | x0', 0)`` the model's velocity density at ``(x0', 0)`` (the
    Algorithm 3 machinery, with inner draws for ``D >= 3``). Needs ``D >= 2``.

    Parameters
    ----------
    field : HierarchicalField
        Field of depth ``D >= 2``.
    X : torch.Tensor or array-like of shape (n, *e)
        Points ``x`` at which to evaluate ``p_t``.
    t : float
        Time in ``(0, 1)``.
    source : Source
        Location source ``rho0`` (only sampled).
    n_draws : int, default=64
        Number ``M`` of draws ``x0'`` per row.
    combine : {"logmeanexp", "mean"}, default="logmeanexp"
        ``"logmeanexp"`` is the log of the unbiased estimate of ``p_t``;
        ``"mean"`` averages the logs (a lower bound in expectation).
    divergence, probe_kind, solver, n_steps, atol, rtol
        As in :func:`log_density`.
    generator : torch.Generator
        Drives every draw (keyword only, required).
    batch_size : int, optional
        Maximum number of (row, draw) pairs integrated together; ``None``: all.
    return_draws : bool, default=False
        Return the per-draw values, shape ``(n, M)``, instead of their combination.
    draws : {"shared", "per_row"}, default="shared"
        One set of ``M`` draws for all rows, or independent draws per row
        (module docstring).

    Returns
    -------
    log_p : torch.Tensor of shape (n,) (or (n, M) with ``return_draws``), float64

    Examples
    --------
    >>> import torch
    >>> from hrflow.analytic import MixtureOracle
    >>> from hrflow.sources import StandardNormal
    >>> oracle = MixtureOracle([1.0], [[1.0]], [[[0.5]]])
    >>> x = torch.tensor([[0.4]], dtype=torch.float64)
    >>> est = log_marginal_density(oracle.field(2), x, 0.5, StandardNormal((1,)), n_draws=400,
    ...                            generator=torch.Generator().manual_seed(0))
    >>> bool(abs(est.item() - oracle.marginal_log_prob(x.numpy(), 0.5)[0]) < 0.1)
    True
    """
    _check_field(field)
    if field.depth < 2:
        raise ValueError(f"log_marginal_density needs a field of depth >= 2, got depth {field.depth}")
    t = _check_t(t)
    n_draws = _check_int(n_draws, "n_draws")
    _check_common(generator, batch_size, combine, divergence, probe_kind, solver, n_steps, atol, rtol,
                  draws)
    _check_source(source, field, False, "log_marginal_density")
    X = _prepare_X(field, X)
    dtype, device = X.dtype, X.device
    n = X.shape[0]
    cnf_kw = dict(divergence=divergence, solver=solver, n_steps=n_steps, atol=atol, rtol=rtol)
    per_row = draws == "per_row"
    rows = n if per_row else 1  # sets of draws
    x0p, inner_p, probes_p = _draws(field, source, rows * n_draws, generator, dtype, device, divergence,
                                    probe_kind)

    def fn(idx):
        i, m = idx // n_draws, _draw_index(idx, n_draws, per_row)
        return _marginal_terms(field, X[i], x0p[m], [w[m] for w in inner_p],
                               None if probes_p is None else probes_p[m], t, cnf_kw)

    values = _chunked(n * n_draws, batch_size, device, fn).reshape(n, n_draws)
    return values if return_draws else _combine(values, combine)


def log_density(
    field: HierarchicalField,
    X,
    source: Source,
    *,
    algorithm: int = 3,
    t: float = 0.5,
    n_draws: int = 1,
    n_draws_marginal: int | None = None,
    combine: str = "logmeanexp",
    divergence: str = "exact",
    probe_kind: str = "rademacher",
    solver: str = "rk4",
    n_steps: int = 20,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    generator: torch.Generator,
    batch_size: int | None = None,
    return_draws: bool = False,
    draws: str = "shared",
) -> torch.Tensor:
    """Estimate ``log p1(X)`` under a hierarchical field (paper Algorithms 3 and 4).

    Parameters
    ----------
    field : HierarchicalField
        Field of depth ``D``. Integration runs in the dtype and on the device of
        its first floating-point parameter (``X``'s own dtype for a
        parameter-free field).
    X : torch.Tensor or array-like of shape (n, *e)
        Finite points to score.
    source : Source
        Location source ``rho0``. Its ``log_prob`` is needed for ``D = 1`` and for
        Algorithm 4.
    algorithm : {3, 4}, default=3
        3: every outer level at time 0 with its own draw; the innermost
        level's CNF at the residual endpoint (module docstring).
        4: the space-time identity of paper Eq. 22 at time ``t`` (``D >= 2``).
    t : float, default=0.5
        Time of Algorithm 4, in ``(0, 1)``; ignored by Algorithm 3.
    n_draws : int, default=1
        Number ``M`` of source draws ``x0`` (and inner draws, and probes)
        per row. At ``D = 1`` with the exact divergence the value is
        deterministic and is computed once.
    n_draws_marginal : int, optional
        Algorithm 4 only: draws ``x0'`` estimating ``p_t`` (default 64).
    combine : {"logmeanexp", "mean"}, default="logmeanexp"
        How the ``n_draws`` per-draw values are combined: log-mean-exp (a
        consistent estimate, biased low by Jensen as ``1/M``) or the mean of the
        logs (a lower bound in expectation).
    divergence : {"exact", "hutchinson"}, default="exact"
        Exact autograd trace, or Hutchinson with one fixed probe per draw (of kind
        ``probe_kind``) along the whole trajectory.
    probe_kind : {"rademacher", "gaussian"}, default="rademacher"
    solver : str, default="rk4"
        Innermost ODE solver, see :func:`cnf_log_density`.
    n_steps : int, default=20
        Steps of a fixed-grid solver.
    atol, rtol : float, default=1e-5
        Tolerances of an adaptive solver.
    generator : torch.Generator
        Drives every draw (keyword only, required).
    batch_size : int, optional
        Maximum number of (row, draw) pairs (for the marginal of Algorithm 4:
        (row, draw, marginal draw) triples) integrated together; bounds the
        memory of the integration (not of the ``draws="per_row"`` draws, see
        the module docstring). ``None``: all at once. Does not change the
        result (fixed-grid solvers).
    return_draws : bool, default=False
        Return the uncombined per-draw values, shape ``(n, n_draws)``.
    draws : {"shared", "per_row"}, default="shared"
        Every Monte Carlo draw (source, inner, probe, and Algorithm 4's
        marginal draws) either shared by all rows (common random numbers; a
        row's value does not depend on the other rows) or independent for
        each row, so that the mean over a data set averages the Monte Carlo
        errors out (module docstring; memory grows with ``n``).

    Returns
    -------
    log_p : torch.Tensor of shape (n,) (or (n, n_draws) with ``return_draws``)
        float64, detached.

    Raises
    ------
    ValueError
        Algorithm 4 at depth 1, ``t`` outside ``(0, 1)``, or a source without a
        density where one is needed; any invalid option.

    See Also
    --------
    cnf_log_density, log_marginal_density

    Examples
    --------
    The exact field of ``N(1, 0.5)`` at depth 2 recovers its log-density.

    >>> import numpy as np, torch
    >>> from hrflow.analytic import MixtureOracle
    >>> from hrflow.sources import StandardNormal
    >>> oracle = MixtureOracle([1.0], [[1.0]], [[[0.5]]])
    >>> X = torch.tensor([[-0.5], [1.0], [2.5]], dtype=torch.float64)
    >>> lp = log_density(oracle.field(2), X, StandardNormal((1,)), n_draws=2,
    ...                  generator=torch.Generator().manual_seed(0))
    >>> bool(np.allclose(lp.numpy(), oracle.log_prob(X.numpy()), atol=1e-4))
    True
    """
    _check_field(field)
    depth = field.depth
    if isinstance(algorithm, bool) or algorithm not in (3, 4):
        raise ValueError(f"algorithm must be 3 or 4, got {algorithm!r}")
    n_draws = _check_int(n_draws, "n_draws")
    _check_common(generator, batch_size, combine, divergence, probe_kind, solver, n_steps, atol, rtol,
                  draws)
    # used by algorithm 4 only, but never accepted as nonsense
    t = _check_t(t)
    n_marg = 64 if n_draws_marginal is None else _check_int(n_draws_marginal, "n_draws_marginal")
    if algorithm == 4:
        if depth < 2:
            raise ValueError("algorithm=4 needs a field of depth >= 2 (at depth 1 use algorithm=3)")
        _check_source(source, field, True, "algorithm=4")
    else:
        _check_source(source, field, depth == 1, "log_density at depth 1")
    X = _prepare_X(field, X)
    dtype, device = X.dtype, X.device
    n = X.shape[0]
    cnf_kw = dict(divergence=divergence, solver=solver, n_steps=n_steps, atol=atol, rtol=rtol)
    per_row = draws == "per_row"
    rows = n if per_row else 1  # sets of draws

    if algorithm == 3:
        m_eff = 1 if (depth == 1 and divergence == "exact") else n_draws
        x0, inner, probes = _draws(field, source, rows * m_eff, generator, dtype, device, divergence,
                                   probe_kind, with_source=depth >= 2)
        outer = ([x0] if depth >= 2 else []) + inner  # x0^(0..D-2), each (rows * m_eff, *e)
        base = source.log_prob if depth == 1 else standard_normal_log_prob

        def fn(idx):
            i, j = idx // m_eff, _draw_index(idx, m_eff, per_row)
            ctx_z = [w[j] for w in outer]
            endpoint = X[i] - sum(ctx_z) if ctx_z else X[i]
            return cnf_log_density(field, endpoint, [(z, 0.0) for z in ctx_z], base_log_prob=base,
                                   probe=None if probes is None else probes[j], **cnf_kw)

        values = _chunked(n * m_eff, batch_size, device, fn).reshape(n, m_eff)
        if m_eff != n_draws:
            values = values.expand(n, n_draws)
    else:
        x0, inner, probes = _draws(field, source, rows * n_draws, generator, dtype, device, divergence,
                                   probe_kind)
        log_rho0 = source.log_prob(x0.to(torch.float64)).to(torch.float64).reshape(rows * n_draws)
        x0p, inner_p, probes_p = _draws(field, source, rows * n_marg, generator, dtype, device, divergence,
                                        probe_kind)

        def fn_velocity(idx):
            i, j = idx // n_draws, _draw_index(idx, n_draws, per_row)
            xt = (1 - t) * x0[j] + t * X[i]
            ws = [w[j] for w in inner]
            endpoint = X[i] - x0[j]
            if ws:
                endpoint = endpoint - sum(ws)
            context = [(xt, t)] + [(w, 0.0) for w in ws]
            lp = cnf_log_density(field, endpoint, context, base_log_prob=standard_normal_log_prob,
                                 probe=None if probes is None else probes[j], **cnf_kw)
            return lp - log_rho0[j]

        def fn_marginal(idx):
            i, m = idx // (n_draws * n_marg), idx % n_marg
            # the velocity draw's index, and the marginal draw's (per row: shared by the row's
            # velocity draws)
            j = _draw_index(idx // n_marg, n_draws, per_row)
            m = _draw_index(i * n_marg + m, n_marg, per_row)
            xt = (1 - t) * x0[j] + t * X[i]
            return _marginal_terms(field, xt, x0p[m], [w[m] for w in inner_p],
                                   None if probes_p is None else probes_p[m], t, cnf_kw)

        velocity = _chunked(n * n_draws, batch_size, device, fn_velocity).reshape(n, n_draws)
        marginal = _chunked(n * n_draws * n_marg, batch_size, device, fn_marginal)
        values = velocity + _combine(marginal.reshape(n * n_draws, n_marg), "logmeanexp").reshape(n, n_draws)

    return values if return_draws else _combine(values, combine)
