"""Random draws made on the generator's device, then moved to where they are used.

torch refuses a generator of another device type than the tensor it fills
(``randn(..., generator=cpu_generator, device="cuda")`` is a RuntimeError), yet
a CPU generator driving a model on a GPU is what a user of the functional API
may well pass. Every draw of the package that takes a generator goes through
these helpers: the draw happens where the generator lives, so the numbers depend
on the generator only (a CPU generator gives the same draws whatever the target
device), and the result is moved to ``device`` (no copy when it is already there).
"""

from __future__ import annotations

import torch

__all__ = ["rand", "randint", "randn"]


def _where(generator: torch.Generator | None, device):
    """(device of the draw, device of the result)."""
    target = None if device is None else torch.device(device)
    if generator is None:
        return target, target
    return generator.device, generator.device if target is None else target


def _moved(x: torch.Tensor, device) -> torch.Tensor:
    return x if device is None else x.to(device)


def randn(shape, generator: torch.Generator | None, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator``, returned on ``device``.

    Parameters
    ----------
    shape : tuple of int
    generator : torch.Generator or None
        None draws from torch's global generator on ``device``.
    device : torch.device or str, optional
        Device of the result; None: the generator's.
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    draws : torch.Tensor of shape ``shape``

    Examples
    --------
    >>> import torch
    >>> a = randn((2, 3), torch.Generator().manual_seed(0))
    >>> b = torch.randn((2, 3), generator=torch.Generator().manual_seed(0))
    >>> bool(torch.equal(a, b))
    True
    """
    at, dev = _where(generator, device)
    return _moved(torch.randn(shape, generator=generator, device=at, dtype=dtype), dev)


def rand(shape, generator: torch.Generator | None, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Uniform draws on ``[0, 1)`` of ``shape`` from ``generator``, returned on ``device``.

    Parameters
    ----------
    shape : tuple of int
    generator : torch.Generator or None
    device : torch.device or str, optional
        Device of the result; None: the generator's.
    dtype : torch.dtype, default=torch.float32

    Returns
    -------
    draws : torch.Tensor of shape ``shape``
    """
    at, dev = _where(generator, device)
    return _moved(torch.rand(shape, generator=generator, device=at, dtype=dtype), dev)


def randint(low: int, high: int, shape, generator: torch.Generator | None, *, device=None) -> torch.Tensor:
    """Integers uniform on ``[low, high)`` of ``shape`` (int64) from ``generator``, on ``device``.

    Parameters
    ----------
    low, high : int
    shape : tuple of int
    generator : torch.Generator or None
    device : torch.device or str, optional
        Device of the result; None: the generator's.

    Returns
    -------
    draws : torch.Tensor of shape ``shape``, int64
    """
    at, dev = _where(generator, device)
    return _moved(torch.randint(low, high, shape, generator=generator, device=at), dev)
