"""Tests of hrflow.datasets against the exact mixture distributions."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from sklearn.datasets import make_moons

from hrflow.analytic import MixtureOracle, paper_mixture
from hrflow.datasets import (
    DATASETS,
    eight_gaussians_source,
    load_dataset,
    make_1to2,
    make_1to5,
    make_eight_gaussians,
    make_moons_target,
    make_six_gaussians,
    mixture_oracle,
)
from hrflow.sources import GaussianMixtureSource

MIXTURES = ("1to2", "1to5", "six_gaussians", "eight_gaussians")
N_FEATURES = {"1to2": 1, "1to5": 1, "six_gaussians": 2, "eight_gaussians": 2, "moons": 2}
MAKERS = {
    "1to2": make_1to2,
    "1to5": make_1to5,
    "six_gaussians": make_six_gaussians,
    "eight_gaussians": make_eight_gaussians,
    "moons": make_moons_target,
}
# the paper's raw components: (means, variance, standardising scale); sqrt(50.5) = sqrt(0.5 + 50)
R3 = 5 * math.sqrt(3)
S2 = 5 * math.sqrt(0.5)
RAW = {
    "1to2": ([[-1.0], [1.0]], 0.02, 1.0),
    "1to5": ([[-10.0], [-5.0], [0.0], [5.0], [10.0]], 0.5, math.sqrt(50.5)),
    "six_gaussians": ([[R3, 5], [R3, -5], [-R3, 5], [-R3, -5], [0, 10], [0, -10]], 0.5, math.sqrt(50.5)),
    "eight_gaussians": (
        [[5, 0], [-5, 0], [0, 5], [0, -5], [S2, S2], [S2, -S2], [-S2, S2], [-S2, -S2]], 0.1, 1.0
    ),
}
N_BIG = 100_000


@pytest.fixture(scope="module")
def big_draws():
    return {name: load_dataset(name, n_samples=N_BIG, random_state=2024) for name in DATASETS}


def test_dataset_names():
    assert DATASETS == ("1to2", "1to5", "six_gaussians", "eight_gaussians", "moons")


@pytest.mark.parametrize("name", DATASETS)
def test_shape_dtype_and_determinism(name):
    X = load_dataset(name, n_samples=501, random_state=0)
    assert X.shape == (501, N_FEATURES[name])
    assert X.dtype == np.float64 and np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, load_dataset(name, n_samples=501, random_state=0))
    np.testing.assert_array_equal(X, MAKERS[name](n_samples=501, random_state=0))
    np.testing.assert_array_equal(X, load_dataset(name, 501, random_state=np.random.default_rng(0)))
    assert not np.array_equal(X, load_dataset(name, n_samples=501, random_state=1))
    # a legacy RandomState seeds reproducibly too
    a = load_dataset(name, 10, random_state=np.random.RandomState(3))
    np.testing.assert_array_equal(a, load_dataset(name, 10, random_state=np.random.RandomState(3)))
    # a shared Generator advances between calls; None draws fresh entropy
    g = np.random.default_rng(5)
    assert not np.array_equal(load_dataset(name, 50, random_state=g), load_dataset(name, 50, random_state=g))
    assert not np.array_equal(load_dataset(name, 50), load_dataset(name, 50))
    assert load_dataset(name, n_samples=1, random_state=0).shape == (1, N_FEATURES[name])


@pytest.mark.parametrize("name", MIXTURES)
def test_oracle_parameters_are_the_papers_in_data_units(name):
    raw_means, var, scale = RAW[name]
    oracle = mixture_oracle(name)
    assert isinstance(oracle, MixtureOracle)
    M, d = np.shape(raw_means)
    np.testing.assert_allclose(oracle.weights, np.full(M, 1.0 / M), rtol=1e-15)
    # same components, in any order
    expected_means = np.asarray(raw_means, dtype=float) / scale
    np.testing.assert_allclose(
        np.unique(oracle.means.round(12), axis=0), np.unique(expected_means.round(12), axis=0), atol=1e-12
    )
    np.testing.assert_allclose(oracle.covariances, np.tile(var / scale**2 * np.eye(d), (M, 1, 1)), rtol=1e-14)
    # the components sit on a circle (or at +-1, +-5/scale, ...) as the spec says
    if name in ("six_gaussians", "eight_gaussians"):
        radius = 10.0 / scale if name == "six_gaussians" else 5.0
        np.testing.assert_allclose(np.linalg.norm(oracle.means, axis=1), radius, rtol=1e-14)


@pytest.mark.parametrize(
    ("name", "other"), [("1to2", "1to2"), ("1to5", "1to5"), ("six_gaussians", "2D 1to6")]
)
def test_oracle_agrees_with_analytic_paper_mixture(name, other):
    # independent construction of the same (standardised) distribution in hrflow.analytic
    X = np.random.default_rng(0).normal(size=(200, N_FEATURES[name]))
    np.testing.assert_allclose(
        mixture_oracle(name).log_prob(X), paper_mixture(other).log_prob(X), rtol=1e-10, atol=1e-10
    )


@pytest.mark.parametrize("name", ["1to5", "six_gaussians"])
def test_standardised_sets_have_population_mean_zero_and_scalar_std_one(name, big_draws):
    mean, cov = mixture_oracle(name).moments()
    np.testing.assert_allclose(mean, 0.0, atol=1e-14)
    assert np.trace(cov) / cov.shape[0] == pytest.approx(1.0, rel=1e-13)
    X = big_draws[name]
    # scalar mean and std over all coordinates; scalar std 1 -> standard error 1 / sqrt(n d)
    assert abs(X.mean()) < 5.0 / math.sqrt(X.size)
    assert X.std() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", MIXTURES)
def test_empirical_moments_match_the_oracle(name, big_draws):
    X = big_draws[name]
    mean, cov = mixture_oracle(name).moments()
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(X.mean(axis=0) - mean), 5 * sd / math.sqrt(N_BIG))
    # these mixtures are platykurtic, so the Gaussian standard error sqrt(2) sd^2 / sqrt(n) bounds
    # that of the (co)variances
    tol = 5 * math.sqrt(2) * sd.max() ** 2 / math.sqrt(N_BIG)
    np.testing.assert_array_less(np.abs(np.cov(X.T).reshape(cov.shape) - cov), tol)


@pytest.mark.parametrize("name", MIXTURES)
def test_components_frequencies_and_spread(name, big_draws):
    # the components are at least 7 standard deviations apart: the nearest mean is the component
    X = big_draws[name]
    oracle = mixture_oracle(name)
    M = oracle.n_components
    comp = np.argmin(((X[:, None, :] - oracle.means[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(comp, minlength=M)
    p = 1.0 / M
    np.testing.assert_array_less(np.abs(counts / N_BIG - p), 5 * math.sqrt(p * (1 - p) / N_BIG))
    resid = X - oracle.means[comp]
    var = oracle.covariances[0, 0, 0]
    np.testing.assert_allclose(resid.mean(axis=0), 0.0, atol=5 * math.sqrt(var / N_BIG))
    # within-component variance, pooled: relative standard error sqrt(2 / (n d))
    assert np.mean(resid**2) == pytest.approx(var, rel=5 * math.sqrt(2 / X.size))


@pytest.mark.parametrize("name", ["1to2", "1to5"])
def test_one_dimensional_sets_follow_the_oracle_cdf(name):
    oracle = mixture_oracle(name)
    sds = np.sqrt(oracle.covariances[:, 0, 0])

    def cdf(x):
        return stats.norm.cdf((np.asarray(x)[..., None] - oracle.means[:, 0]) / sds) @ oracle.weights

    X = load_dataset(name, n_samples=20_000, random_state=7)
    assert stats.kstest(X[:, 0], cdf).pvalue > 1e-3


@pytest.mark.parametrize(("name", "lo", "hi"), [("1to2", -2.0, 2.0), ("1to5", -2.5, 2.5)])
def test_oracle_density_integrates_to_one_1d(name, lo, hi):
    grid = np.linspace(lo, hi, 8001)
    p = np.exp(mixture_oracle(name).log_prob(grid[:, None]))
    assert integrate.trapezoid(p, grid) == pytest.approx(1.0, abs=1e-8)


def test_oracle_density_integrates_to_one_six_gaussians():
    # components at radius 1.41 with sd 0.0995 (in data units): the square [-2, 2]^2 holds
    # all but ~ exp(-18) of the mass, and a grid step of 0.2 sd integrates a Gaussian to ~1e-9
    h = 0.02
    g = np.arange(-2.0, 2.0 + h / 2, h)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    p = np.exp(mixture_oracle("six_gaussians").log_prob(np.stack([xx.ravel(), yy.ravel()], 1)))
    assert p.sum() * h * h == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", MIXTURES)
def test_oracle_density_peaks_at_the_means(name):
    oracle = mixture_oracle(name)
    M, d = oracle.means.shape
    var = oracle.covariances[0, 0, 0]
    # at a mean, the other components are >= 7 sd away: p = (1 / M) N(0; 0, var I)
    expected = -math.log(M) - 0.5 * d * math.log(2 * math.pi * var)
    np.testing.assert_allclose(oracle.log_prob(oracle.means), expected, rtol=1e-9)
    # moving off a mean lowers the density; halfway to the nearest other mean (>= 3.5 sd away
    # from both) it is lower by more than 3.5^2 / 2 - log 2 > 5 nats
    off = oracle.means + 0.5 * math.sqrt(var)
    assert np.all(oracle.log_prob(off) < expected)
    dist = np.linalg.norm(oracle.means[:, None] - oracle.means[None], axis=-1) + np.diag(np.full(M, np.inf))
    mid = 0.5 * (oracle.means + oracle.means[np.argmin(dist, axis=1)])
    assert np.all(oracle.log_prob(mid) < expected - 5)


def test_1to2_entropy_matches_the_spec(big_draws):
    # spec section 6: the differential entropy of 1to2 is about 0.156 nats (0.225 bits); the
    # Monte Carlo estimate -mean log p has a standard error of about sd(log p) / sqrt(n) ~ 0.002
    lp = mixture_oracle("1to2").log_prob(big_draws["1to2"])
    assert -lp.mean() == pytest.approx(0.1557, abs=0.01)


# ------------------------------------------------------------------ eight Gaussians source


def test_eight_gaussians_source_density_is_the_oracles():
    src = eight_gaussians_source()
    assert isinstance(src, GaussianMixtureSource) and src.has_log_prob and src.event_shape == (2,)
    X = np.random.default_rng(1).normal(scale=4.0, size=(300, 2))
    X[:8] = mixture_oracle("eight_gaussians").means
    lp = src.log_prob(torch.as_tensor(X, dtype=torch.float64))
    assert lp.dtype == torch.float64 and lp.shape == (300,)
    np.testing.assert_allclose(lp.numpy(), mixture_oracle("eight_gaussians").log_prob(X), rtol=1e-10)


def test_eight_gaussians_source_samples_match_the_data_set():
    src = eight_gaussians_source()
    x = src.sample(40_000, torch.Generator().manual_seed(0), dtype=torch.float64).numpy()
    y = make_eight_gaussians(40_000, random_state=0)
    means = mixture_oracle("eight_gaussians").means
    for Z in (x, y):
        comp = np.argmin(((Z[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        counts = np.bincount(comp, minlength=8) / len(Z)
        np.testing.assert_array_less(np.abs(counts - 1 / 8), 5 * math.sqrt(1 / 8 * 7 / 8 / len(Z)))
        resid = Z - means[comp]
        np.testing.assert_allclose(resid.mean(axis=0), 0.0, atol=5 * math.sqrt(0.1 / len(Z)))
        assert np.mean(resid**2) == pytest.approx(0.1, rel=5 * math.sqrt(2 / Z.size))


# ------------------------------------------------------------------------- moons


def test_moons_without_noise_lie_on_the_scaled_arcs():
    n = 1001
    X = make_moons_target(n, random_state=0, noise=0.0)
    u = (X + 1.0) / 3.0  # undo x -> 3 x - 1
    outer = np.isclose(np.hypot(u[:, 0], u[:, 1]), 1.0, atol=1e-12) & (u[:, 1] >= -1e-12)
    inner = np.isclose(np.hypot(u[:, 0] - 1.0, u[:, 1] - 0.5), 1.0, atol=1e-12) & (u[:, 1] <= 0.5 + 1e-12)
    assert np.all(outer | inner)
    assert outer.sum() == n // 2 and inner.sum() == n - n // 2
    # the very points of sklearn's noiseless moons, shuffled
    arcs = 3.0 * make_moons(n_samples=n, shuffle=False)[0] - 1.0
    np.testing.assert_allclose(np.sort(X, axis=0), np.sort(arcs, axis=0), atol=1e-12)
    assert not np.allclose(X, arcs)


def test_moons_paper_noise_is_a_uniform_diagonal_shift():
    # same seed: same shuffle, so the difference is the noise alone: 3 u (1, 1), u ~ U[0, 0.2)
    n = 20_000
    clean = make_moons_target(n, random_state=3, noise=0.0)
    X = make_moons_target(n, random_state=3)
    diff = X - clean
    np.testing.assert_allclose(diff[:, 0], diff[:, 1], atol=1e-12)
    assert diff.min() >= 0.0 and diff.max() < 0.6
    assert stats.kstest(diff[:, 0], stats.uniform(0.0, 0.6).cdf).pvalue > 1e-3


def test_moons_gaussian_noise():
    n = 20_000
    clean = make_moons_target(n, random_state=3, noise=0.0, noise_type="gaussian")
    diff = make_moons_target(n, random_state=3, noise=0.1, noise_type="gaussian") - clean
    # 3 * N(0, 0.1^2) independently per coordinate
    assert stats.kstest(diff.ravel(), stats.norm(0.0, 0.3).cdf).pvalue > 1e-3
    assert abs(np.corrcoef(diff.T)[0, 1]) < 5 / math.sqrt(n)


def test_moons_mean(big_draws):
    # arcs: outer mean (0, 2/pi), inner mean (1, 1/2 - 2/pi) -> (1/2, 1/4); the paper's
    # jitter adds 0.1 to both; then 3 x - 1 -> (0.8, 0.05). The arcs are evenly spaced, so the
    # only randomness is the jitter (sd 3 * 0.2 / sqrt(12) = 0.17, standard error 6e-4)
    np.testing.assert_allclose(big_draws["moons"].mean(axis=0), [0.8, 0.05], atol=3e-3)


# -------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", ["two_moons", "1to6", "", None, 3])
def test_unknown_names_raise(bad):
    with pytest.raises(ValueError, match="six_gaussians") as info:
        load_dataset(bad, n_samples=10)
    assert all(name in str(info.value) for name in DATASETS)


@pytest.mark.parametrize("bad", ["moons", "2D 1to6", None])
def test_mixture_oracle_unknown_names_raise(bad):
    with pytest.raises(ValueError, match="eight_gaussians"):
        mixture_oracle(bad)


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize(
    ("n_samples", "exc"),
    [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("10", TypeError), (True, TypeError)],
)
def test_bad_sizes_raise(name, n_samples, exc):
    with pytest.raises(exc, match="'n_samples'"):
        load_dataset(name, n_samples=n_samples, random_state=0)


@pytest.mark.parametrize(("random_state", "exc"), [(-1, ValueError), ("0", TypeError), (1.5, TypeError)])
def test_bad_random_state_raises(random_state, exc):
    with pytest.raises(exc, match="'random_state'"):
        make_1to2(5, random_state=random_state)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"noise": -0.1}, ValueError, "'noise'"),
        ({"noise": float("nan")}, ValueError, "'noise'"),
        ({"noise": "0.2"}, TypeError, "'noise'"),
        ({"noise_type": "laplace"}, ValueError, "'noise_type'"),
    ],
)
def test_moons_bad_noise_raises(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make_moons_target(5, random_state=0, **kwargs)
