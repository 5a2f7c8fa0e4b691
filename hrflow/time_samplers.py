"""Distributions of the training times ``t_k`` on [0, 1] (spec sections 2 and 7).

Each sampler draws with an explicit generator (on the generator's device; the
times are returned on the requested one) and has a closed-form density and CDF
(used by the tests).
"""

from __future__ import annotations

import math

import torch

from ._random import rand, randn

__all__ = ["TIME_SAMPLERS", "sample_times", "time_cdf", "time_pdf"]

_A = 4.0  # U-shape sharpness (Lee et al. 2024 use a = 4)

#: names accepted by the estimator's ``time_sampler`` parameter
TIME_SAMPLERS = ("uniform", "u_shaped", "logit_normal")


def sample_times(kind: str, n: int, generator: torch.Generator, *, device=None, dtype=torch.float32):
    """Draw ``n`` times in [0, 1].

    Parameters
    ----------
    kind : {"uniform", "u_shaped", "logit_normal"}
        ``"uniform"``: U(0, 1). ``"u_shaped"``: density proportional to
        ``cosh(a (t - 1/2))`` with ``a = 4``, more weight near both ends
        (Lee et al. 2024, "Improving the training of rectified flows").
        ``"logit_normal"``: ``sigmoid(N(0, 1))`` (Esser et al. 2024).
    n : int
    generator : torch.Generator
        Drives the draws, made on its own device.
    device : torch.device or str, optional
        Device of the result; None: the generator's.
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    t : torch.Tensor of shape (n,)

    Examples
    --------
    >>> import torch
    >>> t = sample_times("u_shaped", 5, torch.Generator().manual_seed(0))
    >>> bool(((t >= 0) & (t <= 1)).all())
    True
    """
    if kind == "uniform":
        return rand((n,), generator, device=device, dtype=dtype)
    if kind == "u_shaped":
        u = rand((n,), generator, device=device, dtype=torch.float64)
        t = 0.5 + torch.asinh((2 * u - 1) * math.sinh(_A / 2)) / _A
        return t.to(dtype)
    if kind == "logit_normal":
        return torch.sigmoid(randn((n,), generator, device=device, dtype=dtype))
    raise ValueError(f"time sampler must be one of {TIME_SAMPLERS}, got {kind!r}")


def time_pdf(kind: str, t):
    """Density of :func:`sample_times` at ``t``.

    Parameters
    ----------
    kind : {"uniform", "u_shaped", "logit_normal"}
    t : array-like
        Times in (0, 1).

    Returns
    -------
    density : torch.Tensor of float64, of the shape of ``t``

    Examples
    --------
    The U-shaped density puts more weight near both ends than in the middle.

    >>> [round(p, 3) for p in time_pdf("u_shaped", [0.05, 0.5, 0.95]).tolist()]
    [1.714, 0.551, 1.714]
    >>> time_pdf("uniform", [0.25, 0.75]).tolist()
    [1.0, 1.0]
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    if kind == "uniform":
        return torch.ones_like(t)
    if kind == "u_shaped":
        return _A * torch.cosh(_A * (t - 0.5)) / (2 * math.sinh(_A / 2))
    if kind == "logit_normal":
        logit = torch.log(t) - torch.log1p(-t)
        return torch.exp(-0.5 * logit**2) / math.sqrt(2 * math.pi) / (t * (1 - t))
    raise ValueError(f"time sampler must be one of {TIME_SAMPLERS}, got {kind!r}")


def time_cdf(kind: str, t):
    """CDF of :func:`sample_times` at ``t``.

    Parameters
    ----------
    kind : {"uniform", "u_shaped", "logit_normal"}
    t : array-like
        Times in [0, 1].

    Returns
    -------
    cdf : torch.Tensor of float64, of the shape of ``t``

    Examples
    --------
    All three distributions are symmetric about 1/2.

    >>> [round(time_cdf(kind, 0.5).item(), 6) for kind in ("uniform", "u_shaped", "logit_normal")]
    [0.5, 0.5, 0.5]
    >>> time_cdf("u_shaped", [0.0, 1.0]).tolist()
    [0.0, 1.0]
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    if kind == "uniform":
        return t.clamp(0, 1)
    if kind == "u_shaped":
        return (torch.sinh(_A * (t - 0.5)) + math.sinh(_A / 2)) / (2 * math.sinh(_A / 2))
    if kind == "logit_normal":
        logit = torch.log(t) - torch.log1p(-t)
        return 0.5 * (1 + torch.erf(logit / math.sqrt(2)))
    raise ValueError(f"time sampler must be one of {TIME_SAMPLERS}, got {kind!r}")
