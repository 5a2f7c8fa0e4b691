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


def _draw(sampler, *args, generator, device, **kwargs) -> torch.Tensor:
    """``sampler(*args, generator=generator, device=<generator's>, **kwargs)`` moved to ``device``."""
    at = device if generator is None else generator.device
    out = sampler(*args, generator=generator, device=at, **kwargs)
    return out if device is None else out.to(device)


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
    return _draw(torch.randn, shape, generator=generator, device=device, dtype=dtype)


def rand(shape, generator: torch.Generator | None, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Uniform draws on ``[0, 1)``; parameters and result as in :func:`randn`."""
    return _draw(torch.rand, shape, generator=generator, device=device, dtype=dtype)


def randint(low: int, high: int, shape, generator: torch.Generator | None, *, device=None) -> torch.Tensor:
    """Integers uniform on ``[low, high)`` (int64); the rest as in :func:`randn`."""
    return _draw(torch.randint, low, high, shape, generator=generator, device=device)
