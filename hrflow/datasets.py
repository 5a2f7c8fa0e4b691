"""The low-dimensional data sets of the paper (spec section 6).

Every generator takes ``n_samples`` and ``random_state`` and returns a float64
array of shape ``(n_samples, n_features)``. ``random_state`` may be None (fresh
entropy), an int seed, a :class:`numpy.random.Generator` (used, and advanced,
as is) or a legacy :class:`numpy.random.RandomState` (one seed is drawn from it);
everything is drawn from one :func:`numpy.random.default_rng` stream, never from
numpy's global generator.

The Gaussian-mixture data sets come with their exact distribution
(:func:`mixture_oracle`) in the units of the generated data, so samples, metrics
and densities can be compared with the truth.

Standardisation. The paper's code standardises ``1to5`` and ``2D 1to6`` by the
empirical scalar mean and standard deviation of each generated set. Here the
*population* values of the mixture are used instead (mean 0, scalar variance
``0.5 + 50 = 50.5`` for both), the deterministic limit of the paper's map: train
and test sets drawn separately share one map, and the oracle is exact.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "DATASETS",
    "make_1to2",
    "make_1to5",
    "make_six_gaussians",
    "make_eight_gaussians",
    "make_moons_target",
    "eight_gaussians_source",
    "mixture_oracle",
    "load_dataset",
]

#: names accepted by :func:`load_dataset`
DATASETS = ("1to2", "1to5", "six_gaussians", "eight_gaussians", "moons")

#: names with a Gaussian-mixture oracle (:func:`mixture_oracle`)
_MIXTURES = ("1to2", "1to5", "six_gaussians", "eight_gaussians")


def _as_generator(random_state) -> np.random.Generator:
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    None gives a freshly seeded generator, an int a seeded one, a Generator is
    returned as is (so successive calls continue its stream), and a legacy
    RandomState provides one seed (and is advanced by that draw).
    """
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(int(random_state.randint(np.iinfo(np.int64).max, dtype=np.int64)))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"'random_state' must be a non-negative int, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "'random_state' must be None, an int, a numpy.random.Generator or a numpy.random.RandomState, "
        f"got {type(random_state).__name__}"
    )


def _check_n_samples(n_samples) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
        raise TypeError(f"'n_samples' must be an int, got {type(n_samples).__name__}")
    if n_samples < 1:
        raise ValueError(f"'n_samples' must be an int >= 1, got {n_samples}")
    return int(n_samples)


# --------------------------------------------------------------------------
# mixture definitions (raw units of the paper, before standardisation)
# --------------------------------------------------------------------------

_SQRT3 = math.sqrt(3.0)
_SQRT_HALF = math.sqrt(0.5)


def _raw_mixture(name):
    """``(weights (M,), means (M, d), variance, scale)`` of a mixture data set.

    Every component has covariance ``variance * I``; the data set is the mixture
    divided by ``scale`` (1 when the paper does not standardise it).
    """
    if name == "1to2":
        means = np.array([[-1.0], [1.0]])
        var, scale = 0.02, 1.0
    elif name == "1to5":
        means = np.array([[-10.0], [-5.0], [0.0], [5.0], [10.0]])
        var = 0.5
        scale = math.sqrt(var + np.mean(means**2))  # population scalar std, sqrt(50.5)
    elif name == "six_gaussians":
        means = np.array(
            [[5 * _SQRT3, 5.0], [-5 * _SQRT3, 5.0], [5 * _SQRT3, -5.0], [-5 * _SQRT3, -5.0],
             [0.0, 10.0], [0.0, -10.0]]
        )
        var = 0.5
        # scalar variance over both coordinates: var + mean over components and coordinates of mu^2
        scale = math.sqrt(var + np.mean(means**2))  # sqrt(50.5)
    elif name == "eight_gaussians":
        s = _SQRT_HALF
        unit = np.array(
            [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [s, s], [s, -s], [-s, s], [-s, -s]]
        )
        means = 5.0 * unit
        var, scale = 0.1, 1.0
    else:  # pragma: no cover - callers validate the name
        raise ValueError(f"no mixture named {name!r}")
    weights = np.full(means.shape[0], 1.0 / means.shape[0])
    return weights, means, var, scale


def _mixture_params(name):
    """``(weights (M,), means (M, d), covariances (M, d, d))`` in the data set's units."""
    weights, means, var, scale = _raw_mixture(name)
    M, d = means.shape
    covariances = np.broadcast_to((var / scale**2) * np.eye(d), (M, d, d)).copy()
    return weights, means / scale, covariances


def _sample_mixture(name, n_samples, random_state):
    n = _check_n_samples(n_samples)
    rng = _as_generator(random_state)
    weights, means, var, scale = _raw_mixture(name)
    comp = rng.choice(len(weights), size=n, p=weights)
    x = means[comp] + math.sqrt(var) * rng.standard_normal((n, means.shape[1]))
    return x / scale


# --------------------------------------------------------------------------
# public generators
# --------------------------------------------------------------------------


def make_1to2(n_samples=100_000, random_state=None):
    """The paper's ``1to2`` target: ``0.5 N(-1, 0.02) + 0.5 N(1, 0.02)``.

    Variance 0.02 (standard deviation about 0.141), not standardised. Its
    differential entropy, about 0.156 nats (0.225 bits), is the floor under any
    model's negative log-likelihood.

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of points.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 1), float64

    Examples
    --------
    >>> make_1to2(5, random_state=0).shape
    (5, 1)
    """
    return _sample_mixture("1to2", n_samples, random_state)


def make_1to5(n_samples=100_000, random_state=None):
    """The paper's ``1to5`` target: five Gaussians, standardised.

    Equal-weight components at ``{-10, -5, 0, 5, 10}`` with variance 0.5, divided
    by the population scalar standard deviation ``sqrt(0.5 + 50) = sqrt(50.5)``
    (the population mean is 0). The paper divided each generated set by its
    own empirical statistics; this is their deterministic limit, shared by train
    and test sets (see the module docstring).

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of points.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 1), float64
        Mean about 0, standard deviation about 1.

    Examples
    --------
    >>> make_1to5(5, random_state=0).shape
    (5, 1)
    """
    return _sample_mixture("1to5", n_samples, random_state)


def make_six_gaussians(n_samples=100_000, random_state=None):
    """The paper's ``2D 1to6`` target: six Gaussians on a circle, standardised.

    Equal-weight components at radius 10, ``(+-5 sqrt(3), +-5)`` and
    ``(0, +-10)``, covariance ``0.5 I``, divided by the population scalar
    standard deviation over both coordinates, ``sqrt(0.5 + 50) = sqrt(50.5)``
    (mean 0). In these units the components sit at radius ``10 / sqrt(50.5)``
    (about 1.41) with standard deviation ``sqrt(0.5 / 50.5)`` (about 0.0995).

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of points.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64

    Examples
    --------
    >>> make_six_gaussians(5, random_state=0).shape
    (5, 2)
    """
    return _sample_mixture("six_gaussians", n_samples, random_state)


def make_eight_gaussians(n_samples=100_000, random_state=None):
    """Eight Gaussians on a circle: the source of the paper's moons task.

    Equal-weight components at radius 5 at multiples of 45 degrees, covariance
    ``0.1 I``, not standardised.

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of points.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64

    See Also
    --------
    eight_gaussians_source : the same distribution as a :class:`hrflow.sources.Source`.

    Examples
    --------
    >>> make_eight_gaussians(5, random_state=0).shape
    (5, 2)
    """
    return _sample_mixture("eight_gaussians", n_samples, random_state)


_MOONS_NOISE_TYPES = ("uniform_diagonal", "gaussian")


def make_moons_target(n_samples=100_000, random_state=None, noise=0.2, noise_type="uniform_diagonal"):
    """The paper's two-moons target: sklearn's two moons, jittered, times 3 minus 1.

    The noiseless arcs are :func:`sklearn.datasets.make_moons` (``n_samples // 2``
    points evenly spaced on the outer arc, the rest on the inner arc), shuffled.
    The default reproduces the paper's reference code, which adds to each
    point one uniform draw ``u ~ U[0, noise)`` to *both* coordinates (a shift
    along the diagonal ``(1, 1)``), with ``noise=0.2``, before mapping
    ``x -> 3 x - 1``. ``noise_type="gaussian"`` adds sklearn's isotropic noise
    ``N(0, noise^2 I)`` instead (torchcfm's ``sample_moons`` uses
    ``noise=0.2`` with this convention).

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of points.
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seed of the shuffle and the noise.
    noise : float, default=0.2
        Width of the uniform jitter, or standard deviation of the Gaussian noise,
        in the units of sklearn's moons (before the factor 3). Must be >= 0.
    noise_type : {"uniform_diagonal", "gaussian"}, default="uniform_diagonal"
        Kind of noise, see above.

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64

    Examples
    --------
    >>> X = make_moons_target(6, random_state=0)
    >>> X.shape
    (6, 2)
    """
    from sklearn.datasets import make_moons

    n = _check_n_samples(n_samples)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real):
        raise TypeError(f"'noise' must be a float, got {type(noise).__name__}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"'noise' must be a finite float >= 0, got {noise}")
    if noise_type not in _MOONS_NOISE_TYPES:
        raise ValueError(f"'noise_type' must be one of {_MOONS_NOISE_TYPES}, got {noise_type!r}")
    rng = _as_generator(random_state)
    arcs, _ = make_moons(n_samples=n, shuffle=False, noise=None)
    X = arcs[rng.permutation(n)].astype(np.float64)
    if noise_type == "uniform_diagonal":
        X += noise * rng.random((n, 1))
    else:
        X += noise * rng.standard_normal((n, 2))
    return 3.0 * X - 1.0


def eight_gaussians_source():
    """The eight-Gaussian distribution as a source with a known density.

    Same distribution as :func:`make_eight_gaussians`; use it as the ``source``
    of an estimator for the moons task (the density algorithms need the
    source's ``log_prob``).

    Returns
    -------
    hrflow.sources.GaussianMixtureSource
        Event shape ``(2,)``.

    Examples
    --------
    >>> import torch
    >>> src = eight_gaussians_source()
    >>> src.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64).shape
    torch.Size([4, 2])
    """
    from .sources import GaussianMixtureSource

    return GaussianMixtureSource(*_mixture_params("eight_gaussians"))


def mixture_oracle(name):
    """The exact distribution of a Gaussian-mixture data set, in the data's units.

    For the standardised sets (``"1to5"``, ``"six_gaussians"``) the means and
    covariances are those of the standardised data, so ``log_prob`` is the
    density of what the generator returns.

    Parameters
    ----------
    name : {"1to2", "1to5", "six_gaussians", "eight_gaussians"}
        Data set.

    Returns
    -------
    hrflow.analytic.MixtureOracle

    Raises
    ------
    ValueError
        If ``name`` is not one of the mixtures (``"moons"`` has no oracle).

    Examples
    --------
    >>> oracle = mixture_oracle("1to2")
    >>> oracle.sample(3, random_state=0).shape
    (3, 1)
    """
    if not isinstance(name, str) or name not in _MIXTURES:
        raise ValueError(
            f"'name' must be one of {_MIXTURES} (the data sets with a Gaussian-mixture oracle), got {name!r}"
        )
    from .analytic import MixtureOracle

    return MixtureOracle(*_mixture_params(name))


_GENERATORS = {
    "1to2": make_1to2,
    "1to5": make_1to5,
    "six_gaussians": make_six_gaussians,
    "eight_gaussians": make_eight_gaussians,
    "moons": make_moons_target,
}


def load_dataset(name, n_samples=100_000, random_state=None):
    """Draw one of the paper's low-dimensional data sets by name.

    Parameters
    ----------
    name : {"1to2", "1to5", "six_gaussians", "eight_gaussians", "moons"}
        Data set (see :data:`DATASETS` and the ``make_*`` functions).
    n_samples : int, default=100_000
        Number of points (the paper uses 100,000).
    random_state : None, int, numpy.random.Generator or RandomState, default=None
        Seed.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features), float64
        ``n_features`` is 1 for ``"1to2"`` and ``"1to5"``, 2 otherwise.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the valid names) or
        ``n_samples < 1``.

    Examples
    --------
    >>> load_dataset("moons", n_samples=4, random_state=0).shape
    (4, 2)
    """
    if not isinstance(name, str) or name not in _GENERATORS:
        raise ValueError(f"Unknown data set {name!r}; 'name' must be one of {DATASETS}")
    return _GENERATORS[name](n_samples=n_samples, random_state=random_state)
