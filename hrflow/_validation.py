"""Input checks of the estimator's public methods that scikit-learn does not do.

``validate_data`` already refuses NaN, infinity, sparse matrices, complex and
non-numeric data, wrong shapes and wrong feature counts. What is left is
numerical range (values that are finite in float64 but overflow in the
model's precision or in the standardisation) and the per-call arguments of
``sample``/``log_density``, whose messages must name the argument.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import re
import sys
from collections.abc import Callable, Iterator

import numpy as np
import sklearn
import torch
from sklearn.utils import check_random_state

__all__ = ["standardization", "model_space_limit", "check_model_space", "check_user_units",
           "check_random_state_arg", "check_algorithm", "naming_argument"]


@contextlib.contextmanager
def naming_argument(name: str) -> Iterator[None]:
    """Make every ValueError/TypeError raised inside name the argument ``name``.

    Messages that already name it (scikit-learn's "Input X contains NaN") are
    kept; others ("Found array with dim 3 ...") get the prefix
    ``"Invalid 'X': "``. Subclasses (e.g. scikit-learn's parameter errors)
    pass through unchanged.

    Examples
    --------
    >>> with naming_argument("X"):
    ...     raise ValueError("Found array with dim 3")
    Traceback (most recent call last):
    ...
    ValueError: Invalid 'X': Found array with dim 3
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        if type(exc) not in (ValueError, TypeError) or re.search(rf"\b{re.escape(name)}\b", str(exc)):
            raise
        raise type(exc)(f"Invalid '{name}': {exc}") from exc


def standardization(
    X: np.ndarray,
    *,
    allreduce: Callable[[np.ndarray, str], np.ndarray] | None = None,
    return_count: bool = False,
) -> tuple[np.ndarray, ...]:
    """Per-feature mean and standard deviation, safe up to the float64 limit.

    The data are divided by a power of two near their largest magnitude before
    the sums are taken, so values such as ``1e300`` do not overflow; as the
    scaling is exact, the result equals ``X.mean(0)``, ``X.std(0)`` bit for bit
    whenever those do not overflow (and no value underflows).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float
        Finite data.
    allreduce : callable or None, default=None
        ``allreduce(array, op)`` with ``op`` in ``{"sum", "max"}`` combines the
        statistics of several processes (see :mod:`hrflow.distributed`); the
        result is then the mean and standard deviation of all their rows.
    return_count : bool, default=False
        Also return the number of rows the statistics come from (with
        ``allreduce``: of all processes), the ``n_values`` of
        :func:`nonconstant_scale`.

    Returns
    -------
    mean, std : ndarray of shape (n_features,), float64
    n_rows : int
        Only with ``return_count``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1e300, 1.0], [-1e300, 3.0]])
    >>> mean, std = standardization(X)
    >>> mean.tolist(), std.tolist()
    ([0.0, 2.0], [1e+300, 1.0])
    """
    X = np.asarray(X, dtype=np.float64)
    amax = np.abs(X).max(axis=0) if X.shape[0] else np.zeros(X.shape[1])
    if allreduce is not None:
        amax = allreduce(amax, "max")
    _, exponent = np.frexp(amax)
    scale = np.where(amax > 0, np.ldexp(1.0, exponent - 1), 1.0)  # |X / scale| < 2
    Y = X / scale
    if allreduce is None:
        n, mean, std = X.shape[0], Y.mean(axis=0) * scale, Y.std(axis=0) * scale
    else:
        n = allreduce(np.array([float(X.shape[0])]), "sum")[0]
        mean_y = allreduce(Y.sum(axis=0), "sum") / n
        var_y = allreduce(((Y - mean_y) ** 2).sum(axis=0), "sum") / n
        mean, std = mean_y * scale, np.sqrt(var_y) * scale
    return (mean, std, int(n)) if return_count else (mean, std)


def nonconstant_scale(mean: np.ndarray, std: np.ndarray, n_values: int) -> np.ndarray:
    """``std`` where a feature varies, 1.0 where it is constant up to rounding.

    A constant feature's computed standard deviation is zero or rounding noise,
    at most about ``n_values * eps * |mean|`` (the bound scikit-learn's
    ``StandardScaler`` uses); only those get scale 1. A feature that truly
    varies keeps its scale however small it is.

    Parameters
    ----------
    mean, std : ndarray of shape (n_features,)
        Per-feature mean and standard deviation.
    n_values : int
        Number of values each statistic was computed from (over all processes
        when the statistics are pooled: every process must take the same
        decision).

    Returns
    -------
    scale : ndarray of shape (n_features,)

    Examples
    --------
    >>> import numpy as np
    >>> nonconstant_scale(np.array([0.0, 0.1, 0.0]), np.array([0.0, 1e-18, 1e-14]), 100).tolist()
    [1.0, 1.0, 1e-14]
    """
    constant = std <= n_values * np.finfo(np.float64).eps * np.abs(mean)
    return np.where(constant, 1.0, std)


def model_space_limit(dtype: torch.dtype) -> float:
    """Largest magnitude a standardised value may have in precision ``dtype``.

    ``sqrt(finfo.max) / 1000``: squares (losses, Gaussian log-densities) and
    sums of a few hundred of them stay finite.

    Examples
    --------
    >>> import torch
    >>> f"{model_space_limit(torch.float32):.2g}"
    '1.8e+16'
    """
    return float(torch.finfo(dtype).max) ** 0.5 / 1000.0


def check_model_space(Z: np.ndarray, dtype: torch.dtype, *, name: str = "X", hint: str = "") -> None:
    """Raise ValueError if ``Z`` (standardised data) is too large for ``dtype``.

    Parameters
    ----------
    Z : ndarray
        Data in the model's (standardised) space.
    dtype : torch.dtype
        Precision of the model.
    name : str, default="X"
        Argument named in the message.
    hint : str, default=""
        Appended to the message.

    Examples
    --------
    >>> import numpy as np, torch
    >>> check_model_space(np.ones((2, 2)), torch.float32)
    >>> check_model_space(np.full((1, 1), 1e20), torch.float32)
    Traceback (most recent call last):
    ...
    ValueError: X has values too far from the training data for the model's float32 precision ...
    """
    limit = model_space_limit(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        worst = max(np.max(Z), -np.min(Z)) if Z.size else 0.0  # no |Z| temporary
    if not np.isfinite(worst) or worst > limit:
        precision = str(dtype).removeprefix("torch.")
        raise ValueError(
            f"{name} has values too far from the training data for the model's {precision} "
            f"precision (|value - mean_| / scale_ up to {worst:.3g}, at most {limit:.3g} is "
            f"supported).{hint}"
        )


def check_user_units(mean: np.ndarray, scale: np.ndarray, *, name: str = "X") -> None:
    """Raise ValueError if samples ``z * scale + mean`` could overflow float64.

    A model fitted on values near the float64 limit would return infinite
    samples; such data must be rescaled first (|z| up to 1000 is allowed for).

    Examples
    --------
    >>> import numpy as np
    >>> check_user_units(np.zeros(1), np.full(1, 1e300))
    >>> check_user_units(np.zeros(1), np.full(1, 1e307))
    Traceback (most recent call last):
    ...
    ValueError: X has values too large for float64 arithmetic ...
    """
    with np.errstate(over="ignore"):
        reach = np.abs(mean) + 1000.0 * np.abs(scale)
    if not np.all(np.isfinite(reach)):
        raise ValueError(
            f"{name} has values too large for float64 arithmetic (scale up to {np.max(scale):.3g}): "
            "samples in these units would overflow. Rescale X (e.g. divide it by a constant)."
        )


def check_random_state_arg(value, name: str = "random_state") -> np.random.RandomState:
    """:func:`sklearn.utils.check_random_state` with a message naming the argument.

    Examples
    --------
    >>> check_random_state_arg(0).randint(10)
    5
    >>> check_random_state_arg("seed")
    Traceback (most recent call last):
    ...
    ValueError: The 'random_state' argument must be None, an int in [0, 2**32 - 1] or a numpy ...
    """
    if isinstance(value, bool):
        raise ValueError(
            f"The '{name}' argument must be None, an int in [0, 2**32 - 1] or a numpy RandomState. "
            f"Got {value!r} instead."
        )
    try:
        return check_random_state(value)
    except ValueError as exc:
        raise ValueError(
            f"The '{name}' argument must be None, an int in [0, 2**32 - 1] or a numpy RandomState. "
            f"Got {value!r} instead."
        ) from exc


def check_algorithm(value) -> int:
    """The density algorithm as an int, 3 or 4 (the strings ``"3"``/``"4"`` are accepted).

    Examples
    --------
    >>> check_algorithm("4")
    4
    """
    if isinstance(value, str) and value in ("3", "4"):
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value in (3, 4):
        return int(value)
    raise ValueError(f"The 'algorithm' argument must be 3 or 4. Got {value!r} instead.")


# warnings raised inside these packages are attributed to the first frame outside them
_INTERNAL_DIRS = tuple(
    os.path.join(os.path.dirname(os.path.abspath(path)), "") for path in (__file__, sklearn.__file__)
)


def user_stacklevel() -> int:
    """``stacklevel`` for a ``warnings.warn`` made by the caller of this function.

    It points to the first frame outside hrflow and scikit-learn: the user's call
    of ``fit`` (wrapped by scikit-learn's ``_fit_context``, or called by a
    ``Pipeline``), ``reflow``, ``score_samples``, ... whatever the depth in between.
    """
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame, level = frame.f_back, level + 1
    return level
