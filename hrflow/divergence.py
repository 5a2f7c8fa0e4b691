"""Divergence of a row-wise vector field (spec section 4).

The density algorithms integrate ``div_z f`` along the innermost level's ODE
(instantaneous change of variables). Two estimators are offered:

- :func:`divergence_exact`: the trace of the Jacobian by automatic
  differentiation, exact up to rounding; cost grows with the dimension ``d``.
- :func:`divergence_hutchinson`: the Skilling-Hutchinson estimator
  ``eps^T J eps`` with a caller-supplied probe ``eps`` (see :func:`make_probe`),
  one vector-Jacobian product whatever ``d``; unbiased when ``E[eps eps^T] = I``.

``fn`` must act row-wise: row ``i`` of its output depends only on row ``i`` of
its input. Both functions enable gradients locally, so they work inside
:func:`torch.no_grad` callers, and return detached tensors so that no autograd
graph outlives the call.

Shapes use ``n`` for the number of rows and ``*e`` for the event shape of one
row (``(d,)`` for tabular data); ``d = prod(e)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._random import randint, randn

__all__ = ["divergence_exact", "divergence_hutchinson", "make_probe", "PROBE_KINDS"]

#: probe distributions accepted by :func:`make_probe`
PROBE_KINDS = ("rademacher", "gaussian")

_EXACT_METHODS = ("loop", "batched")


def _check_tensor(v, name="v"):
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(v).__name__}")
    if v.dim() < 2:
        raise ValueError(
            f"{name} must have shape (n, *event_shape) with at least 2 dims, got {tuple(v.shape)}"
        )
    if not v.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {v.dtype}")


def _call(fn, v):
    out = fn(v)
    if not isinstance(out, torch.Tensor) or out.shape != v.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fn must map a tensor of shape {tuple(v.shape)} to the same shape, got {shape}")
    return out


def divergence_exact(
    fn: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, *, method: str = "loop"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact divergence ``tr(d fn(v) / d v)`` of a row-wise field, per row.

    Parameters
    ----------
    fn : callable
        Row-wise map from a tensor of shape ``(n, *e)`` to one of the same shape.
    v : torch.Tensor of shape (n, *e)
        Points at which to evaluate.
    method : {"loop", "batched"}, default="loop"
        ``"loop"``: one vector-Jacobian product per dimension, each batched over
        the rows (``d`` backward passes through one forward graph).
        ``"batched"``: a single :func:`torch.autograd.grad` call with
        ``is_grads_batched=True`` (vmap over the ``d`` basis vectors; needs ops
        with vmap support and ``d`` times the gradient memory). On 2 CPU
        threads, for the paper's MLP and ``d <= 16``, the two run within noise of
        each other (the loop slightly ahead for large ``n``), so the loop,
        which works for every op, is the default.

    Returns
    -------
    out : torch.Tensor of shape (n, *e)
        ``fn(v)``, detached.
    div : torch.Tensor of shape (n,)
        Divergence of each row, detached, in ``v``'s dtype.

    Examples
    --------
    A linear field ``v -> v A^T`` has divergence ``tr(A)`` everywhere.

    >>> import torch
    >>> A = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    >>> out, div = divergence_exact(lambda v: v @ A.T, torch.randn(3, 2))
    >>> div.tolist()
    [-3.0, -3.0, -3.0]
    """
    _check_tensor(v)
    if method not in _EXACT_METHODS:
        raise ValueError(f"method must be one of {_EXACT_METHODS}, got {method!r}")
    n = v.shape[0]
    d = v[0].numel()
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        out = _call(fn, v)
        if not out.requires_grad:  # fn ignores v: zero Jacobian
            return out.detach(), torch.zeros(n, dtype=v.dtype, device=v.device)
        if method == "batched":
            eye = torch.eye(d, dtype=out.dtype, device=out.device)
            grad_out = eye.reshape(d, 1, *v.shape[1:]).expand(d, *v.shape)
            (g,) = torch.autograd.grad(out, v, grad_outputs=grad_out, is_grads_batched=True,
                                       allow_unused=True)
            if g is None:
                div = torch.zeros(n, dtype=v.dtype, device=v.device)
            else:  # g[i, r, j] = d out[r, i] / d v[r, j]
                div = torch.diagonal(g.reshape(d, n, d), dim1=0, dim2=2).sum(dim=-1)
        else:
            flat = out.reshape(n, d)
            div = torch.zeros(n, dtype=v.dtype, device=v.device)
            for i in range(d):
                (g,) = torch.autograd.grad(flat[:, i].sum(), v, retain_graph=i < d - 1,
                                           allow_unused=True)
                if g is not None:
                    div = div + g.reshape(n, d)[:, i]
    return out.detach(), div.detach()


def divergence_hutchinson(
    fn: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, probe: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Skilling-Hutchinson estimate ``probe^T (d fn / d v) probe`` of the divergence, per row.

    Unbiased over the probe when ``E[probe probe^T] = I`` per row (Rademacher or
    standard Gaussian probes from :func:`make_probe`). Uses one vector-Jacobian
    product whatever the dimension.

    Parameters
    ----------
    fn : callable
        Row-wise map from a tensor of shape ``(n, *e)`` to one of the same shape.
    v : torch.Tensor of shape (n, *e)
        Points at which to evaluate.
    probe : torch.Tensor of shape (n, *e)
        One probe per row (a shape that broadcasts to ``(n, *e)`` works too).

    Returns
    -------
    out : torch.Tensor of shape (n, *e)
        ``fn(v)``, detached.
    div : torch.Tensor of shape (n,)
        The estimate ``sum(probe * J^T probe)`` of each row, detached.

    Examples
    --------
    For a linear field the estimate is ``probe^T A probe``.

    >>> import torch
    >>> A = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    >>> probe = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    >>> out, div = divergence_hutchinson(lambda v: v @ A.T, torch.randn(2, 2), probe)
    >>> div.tolist()  # [1+2+3-4, 1-2-3-4]
    [2.0, -8.0]
    """
    _check_tensor(v)
    if not isinstance(probe, torch.Tensor):
        raise TypeError(f"probe must be a torch.Tensor, got {type(probe).__name__}")
    try:
        probe = probe.to(dtype=v.dtype, device=v.device).expand_as(v)
    except RuntimeError:
        raise ValueError(
            f"probe must have shape {tuple(v.shape)} (or broadcast to it), got {tuple(probe.shape)}"
        ) from None
    n = v.shape[0]
    with torch.enable_grad():
        v = v.detach().requires_grad_(True)
        out = _call(fn, v)
        if not out.requires_grad:
            return out.detach(), torch.zeros(n, dtype=v.dtype, device=v.device)
        (g,) = torch.autograd.grad(out, v, grad_outputs=probe, allow_unused=True)
        if g is None:
            div = torch.zeros(n, dtype=v.dtype, device=v.device)
        else:
            div = (g * probe).reshape(n, -1).sum(dim=1)
    return out.detach(), div.detach()


def make_probe(shape, kind: str = "rademacher", generator: torch.Generator | None = None, device=None,
               dtype=torch.float32) -> torch.Tensor:
    """Draw a Hutchinson probe with ``E[eps eps^T] = I``.

    Parameters
    ----------
    shape : tuple of int
        Shape of the probe, e.g. ``(n, *e)``.
    kind : {"rademacher", "gaussian"}, default="rademacher"
        Independent signs ``+-1`` with probability 1/2 each (the lower-variance
        choice), or independent standard normals.
    generator : torch.Generator
        Source of randomness (required: no global seeding).
    device : torch.device, optional
        Device of the returned probe (the draw happens on the generator's device).
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    probe : torch.Tensor of shape ``shape``

    Examples
    --------
    >>> import torch
    >>> p = make_probe((2, 3), "rademacher", torch.Generator().manual_seed(0), dtype=torch.float64)
    >>> p.shape, bool(((p == 1) | (p == -1)).all())
    (torch.Size([2, 3]), True)
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"kind must be one of {PROBE_KINDS}, got {kind!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must contain non-negative ints, got {shape!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    if kind == "rademacher":
        return randint(0, 2, shape, generator, device=device).to(dtype) * 2 - 1
    return randn(shape, generator, device=device, dtype=dtype)
