"""Checks of the installed versions that hrflow cannot work without."""

from __future__ import annotations

import re

import numpy as np
import torch

__all__ = ["check_torch_numpy"]


def check_torch_numpy() -> None:
    """Refuse a torch that cannot exchange arrays with the installed NumPy.

    A torch built against NumPy 1.x (releases before 2.3) imports next to
    NumPy 2, but every array exchange then fails with "Numpy is not available",
    deep inside ``fit``. This probes one exchange and says so at import instead.

    Raises
    ------
    ImportError
        Naming both versions and the two ways out.

    Examples
    --------
    >>> check_torch_numpy()  # the installed pair works
    """
    try:
        torch.from_numpy(np.zeros(1))
    except RuntimeError as exc:
        if not re.search(r"numpy is not available", str(exc), re.IGNORECASE):
            raise
        raise ImportError(
            f"hrflow: torch {torch.__version__} cannot exchange arrays with NumPy "
            f"{np.__version__} ({exc}); torch before 2.3 was built against NumPy 1.x. "
            "Install 'numpy<2', or torch 2.3 or later."
        ) from exc
