r"""Image data for the estimator: layouts, scaling to the model space, dequantisation.

Images reach :class:`~hrflow.HRFEstimator` either as arrays of shape
``(n, C, H, W)`` or as flat rows ``(n, C * H * W)`` with an ``image_shape``;
internally the estimator keeps flat rows ``(n, d)`` with ``d = C * H * W`` and
reshapes to ``(n, C, H, W)`` where an image field needs it. Channel ``c`` of a
flat row is the block ``[c * H * W, (c + 1) * H * W)`` (C order, as
``X.reshape(n, -1)``).

Quantised data (``n_bins`` levels per value: 256 for 8-bit images, 17 for
:func:`sklearn.datasets.load_digits`) ``x in {0, ..., n_bins - 1}`` is
dequantised as ``y = x + u`` with ``u ~ U[0, 1)^d`` (user units, bins of width
1) and mapped to the model space ``[-1, 1)`` by

    z = 2 (x + u) / n_bins - 1 = (y - n_bins / 2) / (n_bins / 2),

an affine map with shift = scale = ``n_bins / 2`` per value (spec sections 2 and
4). Then ``log p_y(y) = log p_z(z) - d log(n_bins / 2)``; because a bin has
volume 1 in user units, ``E_u[log p_y(x + u)] <= log P(x)`` (Jensen), and
``-E_u[log p_y(x + u)] / (d ln 2)`` is the usual bits/dim bound
(:func:`hrflow.metrics.bits_per_dim` from ``log p_z``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from ._random import rand
from ._validation import nonconstant_scale, standardization
from .sources import Source

__all__ = [
    "split_image_layout",
    "check_image_shape",
    "channel_standardization",
    "quantized_scaling",
    "check_quantized",
    "dequantize",
    "ReshapedSource",
]


def split_image_layout(X):
    """Flatten a 4-D image array to rows; leave any other input unchanged.

    Parameters
    ----------
    X : array-like of shape (n, C, H, W), or anything else

    Returns
    -------
    rows : ndarray of shape (n, C * H * W), or ``X`` itself if it is not 4-D
    image_shape : tuple (C, H, W) or None
        None when ``X`` is not 4-D.

    Examples
    --------
    >>> import numpy as np
    >>> rows, shape = split_image_layout(np.zeros((5, 1, 2, 3)))
    >>> rows.shape, shape
    ((5, 6), (1, 2, 3))
    >>> split_image_layout([[1.0, 2.0]])[1] is None
    True
    """
    if np.ndim(X) != 4:
        return X, None
    arr = np.asarray(X)
    return arr.reshape(arr.shape[0], -1), tuple(int(s) for s in arr.shape[1:])


def check_image_shape(image_shape, n_features: int | None = None, name: str = "image_shape"):
    """Validate an image shape ``(C, H, W)``, optionally against a row length.

    Parameters
    ----------
    image_shape : sequence of 3 positive ints
    n_features : int, optional
        If given, ``C * H * W`` must equal it.
    name : str, default="image_shape"
        Parameter name used in error messages.

    Returns
    -------
    tuple of 3 ints

    Raises
    ------
    TypeError, ValueError
        Naming ``name``.

    Examples
    --------
    >>> check_image_shape([1, 8, 8], 64)
    (1, 8, 8)
    """
    if isinstance(image_shape, (str, bytes)) or not isinstance(image_shape, Sequence):
        raise TypeError(
            f"The '{name}' parameter must be a tuple (C, H, W) of ints. Got {image_shape!r} instead."
        )
    if len(image_shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in image_shape
    ):
        raise ValueError(
            f"The '{name}' parameter must be a tuple (C, H, W) of 3 positive ints. "
            f"Got {image_shape!r} instead."
        )
    shape = tuple(int(s) for s in image_shape)
    if n_features is not None and math.prod(shape) != n_features:
        raise ValueError(
            f"The '{name}' parameter {shape} holds {math.prod(shape)} values per image, but X has "
            f"{n_features} features."
        )
    return shape


def channel_standardization(X, image_shape, *, allreduce=None):
    """Per-channel mean and standard deviation of flat image rows, repeated per pixel.

    The statistics of channel ``c`` are those of all its ``n * H * W`` values:
    the per-feature statistics (:func:`hrflow._validation.standardization`,
    overflow-safe) of X as rows ``(n * H * W, C)``.

    Parameters
    ----------
    X : ndarray of shape (n, C * H * W)
    image_shape : tuple (C, H, W)
    allreduce : callable or None, default=None
        ``allreduce(array, op)`` combining the statistics of several processes,
        as for :func:`hrflow._validation.standardization` (e.g.
        :func:`hrflow.distributed.allreduce_numpy`): then the statistics are
        those of the images of all of them.

    Returns
    -------
    mean, scale : ndarray of shape (C * H * W,)
        Constant within each channel; a channel of constant value gets scale 1.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 2.0, 10.0, 10.0]])  # 2 channels of 1x2 pixels
    >>> mean, scale = channel_standardization(X, (2, 1, 2))
    >>> mean.tolist(), scale.tolist()
    ([1.0, 1.0, 10.0, 10.0], [1.0, 1.0, 1.0, 1.0])
    """
    X = np.asarray(X, dtype=np.float64)
    c = image_shape[0]
    # rows (n * H * W, C), every channel's values contiguous (pairwise sums along axis 0)
    values = X.reshape(X.shape[0], c, -1).transpose(1, 0, 2).reshape(c, -1).T
    mean, std, n_values = standardization(values, allreduce=allreduce, return_count=True)
    std = nonconstant_scale(mean, std, n_values)  # the pooled count: one decision on every rank
    reps = X.shape[1] // c
    return np.repeat(mean, reps), np.repeat(std, reps)


def quantized_scaling(n_features: int, n_bins: int):
    """Shift and scale of the map ``y -> z = (y - n_bins / 2) / (n_bins / 2)`` to ``[-1, 1)``.

    Parameters
    ----------
    n_features : int
    n_bins : int

    Returns
    -------
    mean, scale : ndarray of shape (n_features,)
        Both equal to ``n_bins / 2``.

    Examples
    --------
    >>> mean, scale = quantized_scaling(2, 256)
    >>> ((np.array([0.0, 256.0]) - mean) / scale).tolist()
    [-1.0, 1.0]
    """
    half = np.full(n_features, n_bins / 2.0)
    return half, half.copy()


def check_quantized(X, n_bins: int, name: str = "X"):
    """Check that ``X`` holds integers in ``[0, n_bins - 1]``.

    Parameters
    ----------
    X : ndarray
    n_bins : int
    name : str, default="X"

    Raises
    ------
    ValueError
        If a value is not an integer in range; the message names ``n_bins``.

    Examples
    --------
    >>> check_quantized(np.array([[0.0, 16.0]]), 17)
    >>> check_quantized(np.array([[0.5]]), 17)
    Traceback (most recent call last):
    ...
    ValueError: With n_bins=17, X must hold integers in [0, 16]; got values in [0.5, 0.5] (not all integers).
    """
    X = np.asarray(X)
    lo, hi = float(X.min()), float(X.max())
    integral = bool(np.all(X == np.round(X)))
    if lo < 0 or hi > n_bins - 1 or not integral:
        extra = "" if integral else " (not all integers)"
        raise ValueError(
            f"With n_bins={n_bins}, {name} must hold integers in [0, {n_bins - 1}]; got values in "
            f"[{lo:g}, {hi:g}]{extra}."
        )


def dequantize(x: torch.Tensor, width, generator: torch.Generator) -> torch.Tensor:
    """Add uniform dequantisation noise ``width * u``, ``u ~ U[0, 1)``, to every value.

    Parameters
    ----------
    x : torch.Tensor of any shape
        Bin corners (e.g. ``2 x / n_bins - 1`` in the model space, where a bin
        has width ``2 / n_bins``).
    width : float
        Bin width.
    generator : torch.Generator
        On ``x``'s device.

    Returns
    -------
    torch.Tensor of the shape, dtype and device of ``x``

    Examples
    --------
    >>> import torch
    >>> x = torch.zeros(1000)
    >>> y = dequantize(x, 0.5, torch.Generator().manual_seed(0))
    >>> bool((y >= 0).all() and (y < 0.5).all())
    True
    """
    u = rand(x.shape, generator, device=x.device, dtype=x.dtype)
    return x + width * u


class ReshapedSource(Source):
    """A source drawn in one event shape and returned in another of the same size.

    Lets a source given on flat rows (an array of rows, a callable returning
    ``(n, C * H * W)``, the estimator's standardising
    :class:`~hrflow.sources.AffineSource`) feed an image field of event shape
    ``(C, H, W)``. ``log_prob`` is unchanged (a reshape has unit Jacobian).

    Parameters
    ----------
    base : Source
    event_shape : tuple of int
        New shape, with ``prod(event_shape) == prod(base.event_shape)``.

    Examples
    --------
    >>> import torch
    >>> from hrflow.sources import StandardNormal
    >>> src = ReshapedSource(StandardNormal((12,)), (3, 2, 2))
    >>> src.sample(5, torch.Generator().manual_seed(0)).shape
    torch.Size([5, 3, 2, 2])
    """

    def __init__(self, base: Source, event_shape: Sequence[int]):
        super().__init__(event_shape)
        if math.prod(self.event_shape) != math.prod(base.event_shape):
            raise ValueError(
                f"event_shape {self.event_shape} does not have the size of the base source's "
                f"{tuple(base.event_shape)}"
            )
        self.base = base
        self.has_log_prob = base.has_log_prob

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        return self.base.sample(n, generator, device=device, dtype=dtype).reshape(n, *self.event_shape)

    def log_prob(self, x):
        return self.base.log_prob(x.reshape(x.shape[0], *self.base.event_shape))
