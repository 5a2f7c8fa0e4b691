"""Nested Euler sampling of a hierarchical field (spec section 3, paper Alg. 2).

All samples move together as one batch; the only Python loops are over levels
and integration steps. Outer levels are encoded once per outer step and the
encoding is reused for every inner step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .fields.base import HierarchicalField
from .sources import Source

__all__ = ["check_steps", "default_steps", "nested_euler", "INNER_SOLVERS"]

#: innermost-level solvers: "euler" (the paper's fixed-step nested Euler) or any
#: torchdiffeq method name listed here
INNER_SOLVERS = ("euler", "midpoint", "rk4", "dopri5", "bosh3", "adaptive_heun")


def default_steps(depth: int) -> tuple[int, ...]:
    """Default steps per level, outermost first.

    Depth 1 takes 100 steps; deeper models put 20 steps on the location level
    and 5 on each inner level (``(20, 5)`` for HRF2, 100 NFE), following the
    paper's finding that few outer steps suffice once the velocity
    distribution is sampled well (its Table 2).

    Examples
    --------
    >>> default_steps(1), default_steps(2), default_steps(3)
    ((100,), (20, 5), (10, 5, 2))
    """
    if depth == 1:
        return (100,)
    if depth == 2:
        return (20, 5)
    return (10, 5) + (2,) * (depth - 2)


def check_steps(steps, depth: int) -> tuple[int, ...]:
    """Validate ``steps``: one positive int per level, outermost first.

    Parameters
    ----------
    steps : int, sequence of int or None
        ``None`` gives :func:`default_steps`; an int is accepted for depth 1.
    depth : int

    Returns
    -------
    steps : tuple of int of length depth
    """
    if steps is None:
        return default_steps(depth)
    if isinstance(steps, (int,)) and not isinstance(steps, bool):
        steps = (steps,)
    try:
        steps = tuple(steps)
    except TypeError:
        raise TypeError(
            f"steps must be a tuple of {depth} positive ints (outermost level first), "
            f"got {steps!r}"
        ) from None
    if len(steps) != depth:
        raise ValueError(
            f"steps must have one entry per level (depth={depth}), outermost first; "
            f"got {steps!r} of length {len(steps)}"
        )
    out = []
    for s in steps:
        if isinstance(s, bool) or not isinstance(s, (int,)) and not hasattr(s, "__index__"):
            raise TypeError(f"steps must contain ints, got {s!r} in {steps!r}")
        s = int(s)
        if s < 1:
            raise ValueError(f"steps must contain positive ints, got {steps!r}")
        out.append(s)
    return tuple(out)


def nested_euler(
    field: HierarchicalField,
    n_samples: int,
    steps: Sequence[int],
    source: Source,
    generator: torch.Generator,
    *,
    device=None,
    dtype=torch.float32,
    inner_solver: str = "euler",
    atol: float = 1e-5,
    rtol: float = 1e-5,
    return_path: bool = False,
):
    """Draw samples by nested integration of every level (spec section 3).

    Parameters
    ----------
    field : HierarchicalField
        The field, of depth ``D``.
    n_samples : int
        Number of samples ``n``, moved as one batch.
    steps : sequence of int of length D
        Euler steps per level, outermost (location) first. NFE = prod(steps)
        with the Euler inner solver.
    source : Source
        Location-level source ``rho0``; inner levels start from ``N(0, I)``.
    generator : torch.Generator
        Drives every random draw (fresh inner sources at every level entry).
    device, dtype
        Where and in which precision the states live.
    inner_solver : str, default="euler"
        Solver for the innermost level: ``"euler"`` with ``steps[-1]`` steps, a
        fixed-grid torchdiffeq method (``"midpoint"``, ``"rk4"``) with
        ``steps[-1]`` steps, or an adaptive torchdiffeq method (``"dopri5"``,
        ...) with tolerances ``atol``/``rtol`` (``steps[-1]`` is then ignored).
    atol, rtol : float
        Tolerances of an adaptive inner solver.
    return_path : bool, default=False
        Also return the location states after every outer step.

    Returns
    -------
    x : torch.Tensor of shape (n, *event_shape)
        Samples.
    path : torch.Tensor of shape (steps[0] + 1, n, *event_shape)
        Only if ``return_path``: location states, ``path[0]`` the source draw.
    """
    depth = field.depth
    steps = check_steps(steps, depth)
    if inner_solver not in INNER_SOLVERS:
        raise ValueError(f"inner_solver must be one of {INNER_SOLVERS}, got {inner_solver!r}")
    shape = (n_samples, *field.event_shape)
    path = []

    def level(k: int, encodings: list) -> torch.Tensor:
        if k == 0:
            z = source.sample(n_samples, generator, device=device, dtype=dtype)
        else:
            z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        if k == depth - 1 and inner_solver != "euler":
            if k == 0 and return_path:  # depth 1: the ODE solution on the step grid
                traj = _odeint_inner(field, encodings, z, steps[k], inner_solver, atol, rtol,
                                     full=True)
                path.extend(traj)
                return traj[-1]
            return _odeint_inner(field, encodings, z, steps[k], inner_solver, atol, rtol)
        n_k = steps[k]
        if k == 0 and return_path:
            path.append(z)
        for j in range(n_k):
            s = torch.full((n_samples,), j / n_k, device=z.device, dtype=dtype)
            enc = encodings + [field.encode(k, z, s)]
            dz = field.head(enc) if k == depth - 1 else level(k + 1, enc)
            z = z + dz / n_k
            if k == 0 and return_path:
                path.append(z)
        return z

    x = level(0, [])
    if return_path:
        return x, torch.stack(path)
    return x


def _odeint_inner(field, encodings, z0, n_steps, method, atol, rtol, full=False):
    """Solve the innermost level; ``full`` returns the states at ``j / n_steps``."""
    from torchdiffeq import odeint

    k = field.depth - 1
    n = z0.shape[0]

    def rhs(tau, z):
        s = tau.expand(n).to(z.dtype)
        return field.head(encodings + [field.encode(k, z, s)])

    fixed = method in ("midpoint", "rk4")
    if full or fixed:  # fixed-grid methods step exactly on the grid j / n_steps
        grid = torch.linspace(0.0, 1.0, n_steps + 1, device=z0.device, dtype=z0.dtype)
    else:
        grid = torch.tensor([0.0, 1.0], device=z0.device, dtype=z0.dtype)
    kw = {} if fixed else {"atol": atol, "rtol": rtol}
    out = odeint(rhs, z0, grid, method=method, **kw)
    return out if full else out[-1]


def nfe(steps: Sequence[int]) -> int:
    """Number of field evaluations of nested Euler with ``steps``.

    Examples
    --------
    >>> nfe((20, 5))
    100
    """
    return math.prod(steps)
