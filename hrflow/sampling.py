"""Nested Euler sampling of a hierarchical field (spec section 3, paper Alg. 2).

All samples move together as one batch; the only Python loops are over levels
and integration steps. Outer levels are encoded once per outer step and the
encoding is reused for every inner step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from ._device import module_device
from ._random import randn
from .fields.base import HierarchicalField
from .sources import Source, StandardNormal

__all__ = ["check_steps", "default_steps", "nested_euler", "sample_velocity", "INNER_SOLVERS"]

#: innermost-level solvers: "euler" (the paper's fixed-step nested Euler) or any
#: torchdiffeq method name listed here
INNER_SOLVERS = ("euler", "midpoint", "rk4", "dopri5", "bosh3", "adaptive_heun")


def default_steps(depth: int) -> tuple[int, ...]:
    """Default steps per level, outermost first.

    100 NFE at depths 1 to 3: ``(100,)`` for RF, ``(20, 5)`` for HRF2 (the example
    in the paper's reference code), ``(10, 5, 2)`` for depth 3; each level
    beyond the third adds 2 steps, doubling the NFE. The best split depends on
    the data and the fit: :meth:`hrflow.HRFEstimator.tune_steps` picks one on
    validation data.

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

    Examples
    --------
    >>> check_steps(None, 2), check_steps(50, 1), check_steps([10, 4], 2)
    ((20, 5), (50,), (10, 4))
    >>> import numpy as np
    >>> check_steps(np.int64(8), 1), check_steps(np.array([4, 2]), 2)
    ((8,), (4, 2))
    >>> check_steps((10,), 2)
    Traceback (most recent call last):
    ...
    ValueError: steps must have one entry per level (depth=2), outermost first; got (10,) of length 1
    """
    if steps is None:
        return default_steps(depth)
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        steps = (steps,)
    if isinstance(steps, np.ndarray) and steps.ndim == 1:
        steps = steps.tolist()
    if not isinstance(steps, Sequence) or isinstance(steps, (str, bytes)):  # sets are unordered
        raise TypeError(
            f"steps must be a tuple of {depth} positive ints (outermost level first), "
            f"got {steps!r}"
        )
    steps = tuple(steps)
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
        Drives every random draw (fresh inner sources at every level entry),
        made on the generator's device: a CPU generator may drive a GPU field.
    device, dtype
        Where and in which precision the states live; ``device=None``: the
        field's (its first parameter or buffer; the generator's for a field
        without either).
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

    Examples
    --------
    The exact depth-2 field of a mixture of two narrow Gaussians at -1 and 1:
    10 location steps of 5 inner steps each (NFE 50) move every standard
    normal draw close to one of the two modes.

    >>> import torch
    >>> from hrflow.analytic import paper_mixture
    >>> from hrflow.sources import StandardNormal
    >>> field = paper_mixture("1to2").field(2)
    >>> x, path = nested_euler(field, 200, (10, 5), StandardNormal((1,)),
    ...                        torch.Generator().manual_seed(0), dtype=torch.float64,
    ...                        return_path=True)
    >>> x.shape, path.shape
    (torch.Size([200, 1]), torch.Size([11, 200, 1]))
    >>> bool(((x.abs() - 1).abs() < 0.5).all()), bool((x < 0).any() and (x > 0).any())
    (True, True)
    """
    depth = field.depth
    steps = check_steps(steps, depth)
    if inner_solver not in INNER_SOLVERS:
        raise ValueError(f"inner_solver must be one of {INNER_SOLVERS}, got {inner_solver!r}")
    shape = (n_samples, *field.event_shape)
    if device is None:
        device = module_device(field, generator.device)
    path = []

    def level(k: int, encodings: list) -> torch.Tensor:
        if k == 0:
            z = source.sample(n_samples, generator, device=device, dtype=dtype)
        else:
            z = randn(shape, generator, device=device, dtype=dtype)
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


class _FrozenLocation(HierarchicalField):
    """Levels ``1 .. D-1`` of a depth-``D`` field, level 0 frozen at a given encoding."""

    def __init__(self, field: HierarchicalField, location_encoding):
        super().__init__(field.depth - 1, field.event_shape)
        self.inner = field
        self.location_encoding = location_encoding

    def encode(self, level, z, t):
        return self.inner.encode(level + 1, z, t)

    def head(self, encodings):
        return self.inner.head([self.location_encoding, *encodings])


def sample_velocity(
    field: HierarchicalField,
    x: torch.Tensor,
    t,
    steps: Sequence[int] | None,
    generator: torch.Generator,
    *,
    inner_solver: str = "euler",
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> torch.Tensor:
    """Draw velocities ``v ~ p(v | x, t)`` from the inner levels of a field.

    The location level is frozen at the state ``x`` and time ``t`` (one pair
    per row) and levels ``1 .. D-1`` are integrated by nested Euler exactly as
    in :func:`nested_euler`, each level starting from a fresh ``N(0, I)``
    draw. The endpoint of level 1 is a draw of the velocity ``v = x1 - x0``
    given ``x_t = x``: for a well-trained (or exact) field of depth ``D >= 2``
    it follows the velocity distribution of Theorem 1 (spec section 4). At
    depth 1 the field itself is the velocity, a single deterministic value
    (the mean of that distribution), and ``steps`` must be empty or None.

    Parameters
    ----------
    field : HierarchicalField
        The field, of depth ``D``. States live in its (model) space: for a
        fitted :class:`~hrflow.HRFEstimator` that is the standardised space
        ``(X - mean_) / scale_`` (the identity with ``standardize=False``).
    x : torch.Tensor of shape (n, *event_shape)
        Location states, one per draw; repeat a row to draw many velocities at
        one point. The result has its dtype and device.
    t : float or torch.Tensor of shape (n,)
        Location times in ``[0, 1]``.
    steps : sequence of int of length D - 1, or None
        Steps of levels ``1 .. D-1``, outermost first (None: the inner part of
        :func:`default_steps`). NFE = ``prod(steps)`` with the Euler solver.
    generator : torch.Generator
        Drives the inner sources.
    inner_solver : str, default="euler"
        Solver of the innermost level, as in :func:`nested_euler`.
    atol, rtol : float, default=1e-5
        Tolerances of an adaptive inner solver.

    Returns
    -------
    v : torch.Tensor of shape (n, *event_shape)
        One velocity per row of ``x``.

    Raises
    ------
    TypeError
        If ``x`` is not a tensor or ``generator`` not a :class:`torch.Generator`.
    ValueError
        If ``x`` or ``t`` has the wrong shape, ``t`` leaves ``[0, 1]``, or
        ``steps`` does not have ``D - 1`` positive entries.

    See Also
    --------
    hrflow.analytic.MixtureOracle.sample_velocity : the exact distribution.

    Examples
    --------
    The exact field of a two-component mixture: at ``x = 0.5``, ``t = 0.5``
    the velocity distribution has two modes.

    >>> import torch
    >>> from hrflow.analytic import paper_mixture
    >>> field = paper_mixture("1to2").field(2)
    >>> x = torch.full((1000, 1), 0.5, dtype=torch.float64)
    >>> v = sample_velocity(field, x, 0.5, (50,), torch.Generator().manual_seed(0))
    >>> v.shape
    torch.Size([1000, 1])
    >>> bool((v < 0).any() and (v > 0.5).any())
    True
    """
    if not isinstance(field, HierarchicalField):
        raise TypeError(f"field must be a HierarchicalField, got {type(field).__name__}")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (n, *event_shape), got {type(x).__name__}")
    if x.ndim < 1 or tuple(x.shape[1:]) != field.event_shape or x.shape[0] < 1:
        raise ValueError(
            f"x must have shape (n, *event_shape) = (n, {', '.join(map(str, field.event_shape))}) "
            f"with n >= 1, got {tuple(x.shape)}"
        )
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n = x.shape[0]
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"t must be a float or a tensor of shape ({n},), got shape {tuple(t.shape)}")
    if not bool(torch.all((t >= 0) & (t <= 1))):
        raise ValueError("t must lie in [0, 1]")
    depth = field.depth
    if depth == 1:
        if steps is not None and len(tuple(steps)) != 0:
            raise ValueError(f"steps must be None or () for a field of depth 1, got {steps!r}")
        return field.head([field.encode(0, x, t)])
    if steps is not None and hasattr(steps, "__len__") and len(steps) != depth - 1:
        raise ValueError(
            f"steps must have one entry per inner level (depth - 1 = {depth - 1}), outermost "
            f"first; got {steps!r}"
        )
    steps = default_steps(depth)[1:] if steps is None else check_steps(steps, depth - 1)
    frozen = _FrozenLocation(field, field.encode(0, x, t))
    source = StandardNormal(field.event_shape)
    return nested_euler(
        frozen, n, steps, source, generator, device=x.device, dtype=x.dtype,
        inner_solver=inner_solver, atol=atol, rtol=rtol,
    )
