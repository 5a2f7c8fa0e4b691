"""Checks of the installed versions that hrflow cannot work without."""

from __future__ import annotations

import numpy as np
from torch.torch_version import TorchVersion

__all__ = ["check_torch_numpy"]


def check_torch_numpy(torch_version: str, numpy_version: str) -> None:
    """Refuse a torch built against NumPy 1.x next to NumPy 2 (torch older than 2.3).

    Such a torch imports, but every array exchange fails with "Numpy is not
    available", deep inside ``fit``; hrflow says so at import instead.

    Parameters
    ----------
    torch_version, numpy_version : str
        ``torch.__version__`` and ``numpy.__version__``.

    Raises
    ------
    ImportError
        Naming both versions and the two ways out.

    Examples
    --------
    >>> check_torch_numpy("2.13.0+cpu", "2.4.6")
    >>> check_torch_numpy("2.1.0", "1.24.0")
    >>> check_torch_numpy("2.1.0+cu121", "2.0.2")
    Traceback (most recent call last):
    ...
    ImportError: hrflow: torch 2.1.0+cu121 was built against NumPy 1.x and cannot ...
    """
    if TorchVersion(torch_version) < (2, 3) and np.lib.NumpyVersion(numpy_version) >= "2.0.0":
        raise ImportError(
            f"hrflow: torch {torch_version} was built against NumPy 1.x and cannot exchange "
            f"arrays with NumPy {numpy_version}. Install 'numpy<2', or torch 2.3 or later."
        )
