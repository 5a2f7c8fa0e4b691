"""Device and dtype resolution for the estimator."""

from __future__ import annotations

import itertools

import torch

__all__ = ["first_floating_tensor", "module_device", "resolve_device", "resolve_dtype"]

_DEVICE_FORMS = "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' (or the torch.device of one)"


def resolve_device(device) -> torch.device:
    """Turn the ``device`` parameter into a :class:`torch.device`.

    ``"auto"`` picks CUDA when available and the CPU otherwise. Only the CPU,
    CUDA and MPS are supported.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    device : torch.device

    Raises
    ------
    ValueError
        If ``device`` is not one of these forms (other device types such as
        ``"xpu"`` or ``"meta"`` included), or names a CUDA or MPS device that is
        not available.
    TypeError
        If ``device`` is neither a str nor a torch.device.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("xpu")
    Traceback (most recent call last):
    ...
    ValueError: The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps' ...
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        if device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"The 'device' parameter must be {_DEVICE_FORMS}. Got {device!r} instead."
            ) from exc
    else:
        raise TypeError(
            f"The 'device' parameter must be a str or torch.device. Got {device!r} instead."
        )
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"The 'device' parameter must be {_DEVICE_FORMS}; device type {dev.type!r} "
            "is not supported."
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but no CUDA GPU is available "
                "(torch.cuda.is_available() is False); use device='auto' or 'cpu', or "
                "install a CUDA build of torch (see the README)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) present."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"device={device!r} was requested but MPS is not available; use device='auto' or 'cpu'."
        )
    return dev


def resolve_dtype(dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtypes) to a torch dtype."""
    table = {"float32": torch.float32, "float64": torch.float64}
    if isinstance(dtype, torch.dtype) and dtype in table.values():
        return dtype
    if isinstance(dtype, str) and dtype in table:
        return table[dtype]
    raise ValueError(f"The 'dtype' parameter must be 'float32' or 'float64'. Got {dtype!r} instead.")


def first_floating_tensor(module: torch.nn.Module):
    """A module's first floating-point parameter or buffer (parameters first); None if none.

    Its dtype and device are those the module computes in.

    Examples
    --------
    >>> first_floating_tensor(torch.nn.Linear(1, 1).double()).dtype
    torch.float64
    >>> first_floating_tensor(torch.nn.Identity()) is None
    True
    """
    tensors = itertools.chain(module.parameters(), module.buffers())
    return next((t for t in tensors if t.is_floating_point()), None)


def module_device(module: torch.nn.Module, default=None):
    """Device of a module's first floating-point parameter or buffer; ``default`` for one with neither.

    Examples
    --------
    >>> module_device(torch.nn.Linear(1, 1))
    device(type='cpu')
    >>> module_device(torch.nn.Identity(), "meta")
    'meta'
    """
    tensor = first_floating_tensor(module)
    return default if tensor is None else tensor.device
