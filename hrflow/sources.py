"""Source distributions ``rho0`` of the location level.

Every source draws with an explicit :class:`torch.Generator` (never the global
one) and creates its tensors on the requested device. Sources with a known
density also implement :meth:`Source.log_prob`, which the density algorithms
need for depth 1 and for Algorithm 4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.utils import check_array

from ._random import randint, randn
from ._validation import naming_argument

__all__ = [
    "Source",
    "StandardNormal",
    "EmpiricalSource",
    "CallableSource",
    "GaussianMixtureSource",
    "AffineSource",
]


class Source:
    """Base class: a distribution on ``R^event_shape`` that can be sampled.

    Parameters
    ----------
    event_shape : tuple of int
        Shape of one draw.

    Examples
    --------
    A subclass implements :meth:`sample` with the generator it is given (and
    :meth:`log_prob` where the density is known):

    >>> import torch
    >>> class UnitCube(Source):
    ...     def sample(self, n, generator, *, device=None, dtype=torch.float32):
    ...         return torch.rand((n, *self.event_shape), generator=generator,
    ...                           dtype=dtype).to(device)
    >>> src = UnitCube([3])
    >>> src.event_shape
    (3,)
    >>> x = src.sample(4, torch.Generator().manual_seed(0))
    >>> x.shape, bool(((x >= 0) & (x < 1)).all())
    (torch.Size([4, 3]), True)
    >>> src.has_log_prob
    False
    >>> src.log_prob(x)
    Traceback (most recent call last):
    ...
    ValueError: UnitCube has no known density; use source='normal' or a source with ...
    """

    #: whether :meth:`log_prob` is available
    has_log_prob: bool = False

    def __init__(self, event_shape: Sequence[int]):
        self.event_shape = tuple(int(s) for s in event_shape)

    def sample(
        self, n: int, generator: torch.Generator, *, device=None, dtype=torch.float32
    ) -> torch.Tensor:
        """Draw ``n`` points; returns a tensor of shape ``(n, *event_shape)``."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of ``x`` of shape ``(n, *event_shape)``; returns shape ``(n,)``."""
        raise ValueError(
            f"{type(self).__name__} has no known density; use source='normal' or a "
            "source with a log_prob (e.g. hrflow.sources.GaussianMixtureSource)"
        )

    def _on(self, name: str, device) -> torch.Tensor:
        """The tensor attribute ``name`` on ``device``: copied there once, then cached.

        A source's tensors live on the CPU while a model trains on a GPU; copying
        them at every draw would be a blocking transfer per training step. The
        cache is not pickled (nor deep-copied), and an attribute that is replaced
        is copied anew.
        """
        tensor = getattr(self, name)
        device = torch.device(device)
        if tensor.device == device:
            return tensor
        cache = self.__dict__.setdefault("_device_cache", {})
        hit = cache.get((name, device))
        if hit is None or hit[0] is not tensor:
            hit = cache[(name, device)] = (tensor, tensor.to(device))
        return hit[1]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_device_cache", None)
        return state


def _float64_tensor(values) -> torch.Tensor:
    """A float64 tensor holding its own copy of ``values``.

    Copied so that a source neither aliases the caller's array (changing it later
    does not change the source) nor trips torch's warning on read-only arrays.
    """
    return torch.from_numpy(np.array(values, dtype=np.float64, copy=True))


def _checked_tensor(values, name: str) -> torch.Tensor:
    """``values`` as a float64 tensor of its own, refused unless real, finite and non-empty.

    Raises ValueError or TypeError naming the parameter ``name``.
    """
    with naming_argument(name):
        arr = check_array(values, dtype=np.float64, ensure_2d=False, allow_nd=True,
                          input_name=name)
    return _float64_tensor(arr)


class StandardNormal(Source):
    """The standard normal ``N(0, I)``.

    Examples
    --------
    >>> import torch
    >>> src = StandardNormal((2,))
    >>> src.sample(3, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    >>> round(src.log_prob(torch.zeros(1, 2)).item(), 4)
    -1.8379
    """

    has_log_prob = True

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        return randn((n, *self.event_shape), generator, device=device, dtype=dtype)

    def log_prob(self, x):
        d = math.prod(self.event_shape)
        flat = x.reshape(x.shape[0], -1)
        return -0.5 * (flat**2).sum(dim=1) - 0.5 * d * math.log(2 * math.pi)


class EmpiricalSource(Source):
    """Uniform draws (with replacement) from a fixed set of points.

    Draws are gathered on the generator's device: for a model on a GPU the
    whole array of points (float64) is copied there once, on the first draw.

    Parameters
    ----------
    points : array-like of shape (m, *event_shape)
        The points to draw from: at least one, all finite.

    Raises
    ------
    ValueError
        If ``points`` is empty or has NaN or infinite values.
    TypeError
        If ``points`` is not real (e.g. complex) or a scalar.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    >>> src = EmpiricalSource(points)
    >>> src.event_shape
    (2,)
    >>> x = src.sample(5, torch.Generator().manual_seed(0))
    >>> x.shape, x.dtype
    (torch.Size([5, 2]), torch.float32)

    Every draw is one of the points:

    >>> bool((x[:, None, :] == torch.as_tensor(points, dtype=torch.float32)).all(-1).any(-1).all())
    True

    The source keeps its own copy of the points:

    >>> points[0] = 99.0
    >>> src.points[0].tolist()
    [0.0, 0.0]
    """

    def __init__(self, points):
        pts = _checked_tensor(points, "points")
        super().__init__(pts.shape[1:])
        self.points = pts

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        idx = randint(0, self.points.shape[0], (n,), generator)
        # gathered on the generator's device (the points are copied there once)
        rows = self._on("points", idx.device)[idx]
        return rows.to(device=idx.device if device is None else device, dtype=dtype)


class CallableSource(Source):
    """A source given as a function ``fn(n, rng) -> array of shape (n, *event_shape)``.

    ``rng`` is a :class:`numpy.random.Generator` seeded from the torch generator,
    so the draws follow the caller's ``random_state``.

    Parameters
    ----------
    fn : callable
        ``fn(n, rng)`` returning an array of shape ``(n, *event_shape)`` of real,
        finite values; :meth:`sample` raises ValueError for another shape or NaN or
        infinite values, and TypeError for complex values.
    event_shape : tuple of int
        Shape of one draw.

    Examples
    --------
    >>> import torch
    >>> src = CallableSource(lambda n, rng: rng.uniform(-1.0, 1.0, size=(n, 2)), (2,))
    >>> x = src.sample(4, torch.Generator().manual_seed(0))
    >>> x.shape, x.dtype, bool((x.abs() <= 1).all())
    (torch.Size([4, 2]), torch.float32, True)

    The same seed gives the same draws:

    >>> torch.equal(x, src.sample(4, torch.Generator().manual_seed(0)))
    True

    The callable's output is checked:

    >>> bad = CallableSource(lambda n, rng: rng.normal(size=(n, 3)), (2,))
    >>> bad.sample(4, torch.Generator().manual_seed(0))
    Traceback (most recent call last):
    ...
    ValueError: source callable must return an array of shape (4, 2), got (4, 3)
    """

    def __init__(self, fn: Callable, event_shape: Sequence[int]):
        super().__init__(event_shape)
        self.fn = fn

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        seed = int(randint(0, 2**62, (1,), generator))
        out = np.asarray(self.fn(n, np.random.default_rng(seed)))
        if np.iscomplexobj(out):
            raise TypeError(
                f"source callable must return real values, got an array of dtype {out.dtype}"
            )
        out = out.astype(np.float64, copy=False)
        if out.shape != (n, *self.event_shape):
            raise ValueError(
                f"source callable must return an array of shape {(n, *self.event_shape)}, "
                f"got {out.shape}"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("source callable returned NaN or infinite values")
        return torch.as_tensor(out, dtype=dtype, device=generator.device if device is None else device)


class GaussianMixtureSource(Source):
    """A Gaussian mixture source with a known density.

    Parameters
    ----------
    weights : array-like of shape (m,)
        Non-negative finite weights of the components, with a positive sum; they
        are normalised to sum to one.
    means : array-like of shape (m, d)
        Finite means of the components.
    covariances : array-like of shape (m, d, d)
        Finite, symmetric, positive definite covariance matrices of the components.

    Raises
    ------
    ValueError
        If an argument has NaN or infinite values or the wrong shape, a weight
        is negative, the weights sum to zero, or a covariance matrix is not
        symmetric positive definite.
    TypeError
        If an argument is not real (e.g. complex) or a scalar.

    Examples
    --------
    Two unit-variance components at ``(-2, 0)`` and ``(2, 0)``; the weights are
    normalised:

    >>> import torch
    >>> src = GaussianMixtureSource([1, 3], [[-2.0, 0.0], [2.0, 0.0]], [torch.eye(2).numpy()] * 2)
    >>> src.weights.tolist()
    [0.25, 0.75]
    >>> src.sample(5, torch.Generator().manual_seed(0)).shape
    torch.Size([5, 2])

    Both components have the density ``exp(-2) / (2 pi)`` at the origin, and so
    has the mixture:

    >>> round(src.log_prob(torch.zeros(1, 2, dtype=torch.float64)).item(), 4)
    -3.8379
    """

    has_log_prob = True

    def __init__(self, weights, means, covariances):
        w = _checked_tensor(weights, "weights")
        means = _checked_tensor(means, "means")
        covariances = _checked_tensor(covariances, "covariances")
        if w.ndim != 1:
            raise ValueError(f"The 'weights' parameter must be 1-D, got shape {tuple(w.shape)}.")
        if (w < 0).any() or not 0 < w.sum() < math.inf:
            raise ValueError(
                "The 'weights' parameter must hold non-negative weights with a positive finite "
                f"sum, got {w.tolist()}."
            )
        m = w.shape[0]
        if means.ndim != 2 or means.shape[0] != m:
            raise ValueError(
                f"The 'means' parameter must have shape (m, d) with m={m} components (one per "
                f"weight), got shape {tuple(means.shape)}."
            )
        d = means.shape[1]
        if covariances.shape != (m, d, d):
            raise ValueError(
                f"The 'covariances' parameter must have shape (m, d, d) = {(m, d, d)} to match "
                f"'weights' and 'means', got shape {tuple(covariances.shape)}."
            )
        # symmetric up to rounding (cholesky reads only the lower triangle)
        asymmetry = (covariances - covariances.mT).abs().amax(dim=(1, 2))
        chol, info = torch.linalg.cholesky_ex(covariances)
        bad = (asymmetry > 1e-8 * covariances.abs().amax(dim=(1, 2))) | (info != 0)
        if bad.any():
            raise ValueError(
                "The 'covariances' parameter must hold symmetric positive definite matrices; "
                f"component(s) {bad.nonzero().flatten().tolist()} are not."
            )
        super().__init__((d,))
        self.weights = w / w.sum()
        self.means = means
        self.covariances = covariances
        self._chol = chol

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        gdev = generator.device
        comp = torch.multinomial(self._on("weights", gdev), n, replacement=True, generator=generator)
        eps = randn((n, self.means.shape[1]), generator, dtype=torch.float64)
        chol = self._on("_chol", gdev)[comp]
        x = self._on("means", gdev)[comp] + (chol @ eps.unsqueeze(-1)).squeeze(-1)
        return x.to(device=device, dtype=dtype)

    def log_prob(self, x):
        if x.dim() != 2 or x.shape[1] != self.means.shape[1]:
            raise ValueError(f"x must have shape (n, {self.means.shape[1]}), got {tuple(x.shape)}")
        dev = x.device
        # validate_args=False: the parameters were checked at construction, and the
        # checks would read values back from a GPU at every call (NaN in x gives NaN)
        dist = torch.distributions.MultivariateNormal(
            self._on("means", dev), scale_tril=self._on("_chol", dev), validate_args=False
        )
        lp = dist.log_prob(x.to(torch.float64).unsqueeze(1))  # (n, m)
        return torch.logsumexp(lp + self._on("weights", dev).log(), dim=1).to(x.dtype)


class AffineSource(Source):
    """The source ``(x - shift) / scale`` for ``x`` drawn from ``base``.

    Used to move a source given in the user's units into the estimator's
    standardised space. ``log_prob`` adds the log-Jacobian ``sum(log |scale|)``,
    summed over every entry of the event (``scale`` broadcasts against
    ``event_shape``: a scalar, one value per feature, or e.g. ``(C, 1, 1)``).

    Parameters
    ----------
    base : Source
        The source in the user's units.
    shift : array-like
        Subtracted from the draws of ``base`` (broadcast against ``event_shape``).
    scale : array-like
        Divides the shifted draws (broadcast against ``event_shape``).

    Examples
    --------
    ``N((1, 2), diag(4, 16))`` standardised with its own mean and standard
    deviation is the standard normal:

    >>> import torch
    >>> base = GaussianMixtureSource([1.0], [[1.0, 2.0]], [[[4.0, 0.0], [0.0, 16.0]]])
    >>> src = AffineSource(base, shift=[1.0, 2.0], scale=[2.0, 4.0])
    >>> src.event_shape, src.has_log_prob
    ((2,), True)
    >>> src.sample(3, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    >>> x = torch.tensor([[0.0, 0.0], [1.0, -0.5], [2.0, 3.0]], dtype=torch.float64)
    >>> torch.allclose(src.log_prob(x), StandardNormal((2,)).log_prob(x))
    True
    >>> round(src.log_prob(x[:1]).item(), 4)
    -1.8379
    """

    def __init__(self, base: Source, shift, scale):
        super().__init__(base.event_shape)
        self.base = base
        self.shift = _float64_tensor(shift)
        self.scale = _float64_tensor(scale)
        self.has_log_prob = base.has_log_prob

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        x = self.base.sample(n, generator, device=device, dtype=torch.float64)
        return ((x - self._on("shift", x.device)) / self._on("scale", x.device)).to(dtype)

    def log_prob(self, x):
        x64 = x.to(torch.float64)
        scale = self._on("scale", x.device)
        user = x64 * scale + self._on("shift", x.device)
        # |det| of x -> x * scale + shift, with scale broadcast over the event shape
        logdet = torch.broadcast_to(torch.log(scale.abs()), self.event_shape).sum()
        return (self.base.log_prob(user) + logdet).to(x.dtype)
