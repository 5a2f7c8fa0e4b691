"""Tests of the location-level sources in :mod:`hrflow.sources`."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.integrate import trapezoid
from scipy.special import logsumexp

from hrflow.sources import (
    AffineSource,
    CallableSource,
    EmpiricalSource,
    GaussianMixtureSource,
    Source,
    StandardNormal,
)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _gmm_2d():
    weights = np.array([2.0, 1.0, 1.0])  # unnormalised on purpose
    means = np.array([[0.0, 0.0], [3.0, -1.0], [-2.0, 4.0]])
    covs = np.array(
        [[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]], [[1.5, -0.7], [-0.7, 1.0]]]
    )
    return weights, means, covs


def _gmm_logpdf(x, weights, means, covs):
    w = weights / weights.sum()
    comps = [np.log(w[m]) + stats.multivariate_normal(means[m], covs[m]).logpdf(x)
             for m in range(len(w))]
    return logsumexp(np.stack(comps, axis=-1), axis=-1)


def _all_sources():
    w, mu, cov = _gmm_2d()
    return {
        "normal": StandardNormal((2,)),
        "normal_image": StandardNormal((2, 3, 4)),
        "empirical": EmpiricalSource(np.arange(10.0).reshape(5, 2)),
        "callable": CallableSource(lambda n, rng: rng.normal(size=(n, 2)), (2,)),
        "gmm": GaussianMixtureSource(w, mu, cov),
        "affine": AffineSource(StandardNormal((2,)), [1.0, -1.0], [2.0, 0.5]),
        "affine_empirical": AffineSource(EmpiricalSource(np.eye(2)), 0.5, 2.0),
    }


SOURCES = _all_sources()


# ------------------------------------------------------------------ common behaviour
@pytest.mark.parametrize("name", list(SOURCES))
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_shape_and_dtype(name, dtype):
    src = SOURCES[name]
    x = src.sample(7, _gen(), dtype=dtype)
    assert x.shape == (7, *src.event_shape)
    assert x.dtype == dtype
    assert x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert src.sample(1, _gen()).shape == (1, *src.event_shape)
    assert src.sample(5, _gen()).dtype == torch.float32  # the default


@pytest.mark.parametrize("name", list(SOURCES))
def test_seeded_generator_is_deterministic(name):
    src = SOURCES[name]
    a = src.sample(50, _gen(3), dtype=F64)
    b = src.sample(50, _gen(3), dtype=F64)
    c = src.sample(50, _gen(4), dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # draws advance the generator: two consecutive draws differ
    g = _gen(3)
    assert not torch.equal(src.sample(50, g, dtype=F64), src.sample(50, g, dtype=F64))


@pytest.mark.parametrize("name", list(SOURCES))
def test_global_rng_untouched(name):
    state = torch.get_rng_state()
    SOURCES[name].sample(20, _gen(1))
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    "src", [Source((2,)), SOURCES["empirical"], SOURCES["callable"], SOURCES["affine_empirical"]],
    ids=["base", "empirical", "callable", "affine_empirical"],
)
def test_no_density_raises(src):
    assert not src.has_log_prob
    with pytest.raises(ValueError, match="density"):
        src.log_prob(torch.zeros(3, 2))


def test_has_log_prob_flags():
    for name in ("normal", "normal_image", "gmm", "affine"):
        assert SOURCES[name].has_log_prob, name


# ------------------------------------------------------------------ StandardNormal
@pytest.mark.parametrize("shape", [(1,), (3,), (2, 3, 4)])
def test_standard_normal_log_prob_vs_scipy(shape):
    x = torch.randn((6, *shape), generator=_gen(), dtype=F64) * 2.0
    expected = stats.norm.logpdf(x.numpy()).reshape(6, -1).sum(axis=1)
    lp = StandardNormal(shape).log_prob(x)
    assert lp.shape == (6,)
    np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-12)
    d = math.prod(shape)
    mvn = stats.multivariate_normal(np.zeros(d), np.eye(d)).logpdf(x.reshape(6, d).numpy())
    np.testing.assert_allclose(lp.numpy(), mvn, rtol=1e-12)


def test_standard_normal_moments():
    x = StandardNormal((3,)).sample(20_000, _gen(), dtype=F64)
    se = 1 / math.sqrt(20_000)
    torch.testing.assert_close(x.mean(0), torch.zeros(3, dtype=F64), rtol=0, atol=5 * se)
    torch.testing.assert_close(torch.cov(x.T), torch.eye(3, dtype=F64), rtol=0, atol=5 * math.sqrt(2) * se)


# ------------------------------------------------------------------ Gaussian mixture
def test_gmm_log_prob_vs_scipy():
    w, mu, cov = _gmm_2d()
    src = GaussianMixtureSource(w, mu, cov)
    x = torch.randn((50, 2), generator=_gen(), dtype=F64) * 3.0
    lp = src.log_prob(x)
    assert lp.shape == (50,) and lp.dtype == F64
    np.testing.assert_allclose(lp.numpy(), _gmm_logpdf(x.numpy(), w, mu, cov), rtol=1e-10)
    assert src.log_prob(x.float()).dtype == torch.float32


def test_gmm_one_dimensional_vs_scipy():
    w, mu, var = np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.array([[[0.02]], [[0.02]]])
    src = GaussianMixtureSource(w, mu, var)
    x = torch.linspace(-2, 2, 41, dtype=F64).reshape(-1, 1)
    expected = np.log(0.5 * stats.norm.pdf(x.numpy()[:, 0], -1, math.sqrt(0.02))
                      + 0.5 * stats.norm.pdf(x.numpy()[:, 0], 1, math.sqrt(0.02)))
    np.testing.assert_allclose(src.log_prob(x).numpy(), expected, rtol=1e-10)


def test_gmm_sample_moments():
    """Mean and covariance of 40,000 draws vs the mixture's, within ~5 standard errors."""
    w, mu, cov = _gmm_2d()
    p = w / w.sum()
    mean = p @ mu
    second = sum(p[m] * (cov[m] + np.outer(mu[m], mu[m])) for m in range(3))
    covariance = second - np.outer(mean, mean)
    n = 40_000
    x = GaussianMixtureSource(w, mu, cov).sample(n, _gen(7), dtype=F64).numpy()
    se_mean = np.sqrt(np.diag(covariance) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * se_mean)
    # covariance entries within 5 standard errors of the products (x_i - m_i)(x_j - m_j)
    c = x - x.mean(0)
    prods = c[:, :, None] * c[:, None, :]
    se_cov = prods.std(0) / math.sqrt(n)
    np.testing.assert_array_less(np.abs(prods.mean(0) - covariance), 5 * se_cov)
    # component frequencies: the sample falls near each mean with its weight
    nearest = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
    freq = np.bincount(nearest, minlength=3) / n
    np.testing.assert_allclose(freq, p, atol=0.05)


def test_gmm_density_integrates_to_one():
    w, mu, cov = _gmm_2d()
    src = GaussianMixtureSource(w, mu, cov)
    g = np.linspace(-10, 10, 401)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = torch.as_tensor(np.stack([xx.ravel(), yy.ravel()], 1))
    mass = src.log_prob(pts).exp().sum().item() * (g[1] - g[0]) ** 2
    assert mass == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------ AffineSource
@pytest.mark.parametrize("shift, scale", [(0.5, 2.0), (-3.0, 0.25), (1.0, -2.0)])
def test_affine_1d_vs_change_of_variables(shift, scale):
    """y = (x - shift) / scale with x ~ N(0, 1) is N(-shift / scale, 1 / scale^2)."""
    src = AffineSource(StandardNormal((1,)), shift, scale)
    y = torch.linspace(-4, 4, 33, dtype=F64).reshape(-1, 1)
    expected = stats.norm.logpdf(y.numpy()[:, 0], loc=-shift / scale, scale=1 / abs(scale))
    np.testing.assert_allclose(src.log_prob(y).numpy(), expected, rtol=1e-12)
    # by hand: base density at the mapped point plus log |scale|
    by_hand = StandardNormal((1,)).log_prob(y * scale + shift) + math.log(abs(scale))
    torch.testing.assert_close(src.log_prob(y), by_hand, rtol=1e-12, atol=1e-12)


def test_affine_1d_monte_carlo():
    """Probability of intervals from the density (quadrature) vs the fraction of draws,
    with a Gaussian-mixture base so the density is not a plain Gaussian."""
    base = GaussianMixtureSource([0.3, 0.7], [[-1.0], [2.0]], [[[0.3]], [[0.5]]])
    src = AffineSource(base, 0.7, 1.6)
    n = 40_000
    y = src.sample(n, _gen(2), dtype=F64)[:, 0].numpy()
    grid = np.linspace(-4, 4, 4001)
    dens = src.log_prob(torch.as_tensor(grid).reshape(-1, 1)).exp().numpy()
    for lo, hi in [(-4.0, -0.5), (-0.5, 0.5), (0.5, 4.0)]:
        m = (grid >= lo) & (grid <= hi)
        p = trapezoid(dens[m], grid[m])
        frac = np.mean((y >= lo) & (y < hi))
        assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-3, (lo, hi, frac, p)
    total = np.sum(dens) * (grid[1] - grid[0])
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("scale", [np.array([2.0, 0.5]), 3.0, np.array([-1.5, 0.8])],
                         ids=["vector", "scalar", "negative"])
def test_affine_2d_vs_scipy(scale):
    """Gaussian-mixture base mapped by y = (x - shift) / scale is again a mixture with
    means (mu - shift) / scale and covariances D^-1 S D^-1, D = diag(scale)."""
    w, mu, cov = _gmm_2d()
    shift = np.array([0.5, -1.0])
    src = AffineSource(GaussianMixtureSource(w, mu, cov), shift, scale)
    dinv = np.diag(1 / np.broadcast_to(scale, (2,)))
    mu_y = (mu - shift) @ dinv
    cov_y = np.stack([dinv @ c @ dinv for c in cov])
    y = src.sample(30, _gen(1), dtype=F64)
    np.testing.assert_allclose(src.log_prob(y).numpy(), _gmm_logpdf(y.numpy(), w, mu_y, cov_y),
                               rtol=1e-10)
    # scalar scale counts log|scale| once per feature
    logdet = np.log(np.abs(np.broadcast_to(scale, (2,)))).sum()
    base_lp = GaussianMixtureSource(w, mu, cov).log_prob(
        y * torch.as_tensor(scale) + torch.as_tensor(shift))
    np.testing.assert_allclose(src.log_prob(y).numpy(), (base_lp + logdet).numpy(), rtol=1e-12)


def test_affine_sample_is_mapped_base_sample():
    base = GaussianMixtureSource(*_gmm_2d())
    shift, scale = np.array([1.0, 2.0]), np.array([0.5, 4.0])
    src = AffineSource(base, shift, scale)
    x = base.sample(9, _gen(5), dtype=F64)
    torch.testing.assert_close(src.sample(9, _gen(5), dtype=F64),
                               (x - torch.as_tensor(shift)) / torch.as_tensor(scale))


def test_affine_image_per_channel_scale():
    """A (C, 1, 1) scale counts log|scale_c| once per pixel of channel c."""
    shape = (2, 3, 4)
    scale = np.array([2.0, 0.5]).reshape(2, 1, 1)
    src = AffineSource(StandardNormal(shape), 0.1, scale)
    y = torch.randn((5, *shape), generator=_gen(), dtype=F64)
    expected = stats.norm.logpdf(y.numpy(), loc=-0.1 / scale, scale=1 / scale).reshape(5, -1).sum(1)
    np.testing.assert_allclose(src.log_prob(y).numpy(), expected, rtol=1e-12)


def test_affine_keeps_dtype():
    src = SOURCES["affine"]
    y = torch.zeros((3, 2))
    assert src.log_prob(y).dtype == torch.float32
    assert src.log_prob(y.double()).dtype == F64


# ------------------------------------------------------------------ EmpiricalSource
def test_empirical_draws_only_given_points():
    points = np.array([[0.0, 1.0], [2.5, -3.0], [7.0, 7.0]])
    src = EmpiricalSource(points)
    assert src.event_shape == (2,)
    x = src.sample(3000, _gen(), dtype=F64).numpy()
    match = (x[:, None, :] == points[None]).all(-1)
    assert (match.sum(1) == 1).all()
    # uniform with replacement: each point about a third of the time
    np.testing.assert_allclose(match.mean(0), np.full(3, 1 / 3), atol=5 * math.sqrt(2 / 9 / 3000))


def test_empirical_moves_only_the_drawn_rows(monkeypatch):
    # the rows are gathered where the points live, then only they are converted (and moved):
    # the same values as converting all the points first, without copying them every call
    points = np.random.default_rng(0).normal(size=(1000, 3))
    src = EmpiricalSource(points)
    converted = []
    real_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        converted.append(tuple(self.shape))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    x = src.sample(5, _gen(), dtype=torch.float32)
    monkeypatch.undo()
    assert (1000, 3) not in converted
    idx = torch.randint(1000, (5,), generator=_gen())
    assert torch.equal(x, torch.as_tensor(points, dtype=torch.float32)[idx])


def test_empirical_image_points():
    points = np.arange(2 * 2 * 3 * 3, dtype=float).reshape(2, 2, 3, 3)
    x = EmpiricalSource(points).sample(20, _gen(), dtype=F64).numpy()
    assert x.shape == (20, 2, 3, 3)
    assert all(any(np.array_equal(xi, p) for p in points) for xi in x)


def _read_only(a):
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("make", [
    lambda a: EmpiricalSource(a),
    lambda a: GaussianMixtureSource(_read_only([1.0]), a[:1], _read_only(np.eye(2)[None])),
    lambda a: AffineSource(StandardNormal((2,)), a[0], a[1]),
], ids=["empirical", "gmm", "affine"])
def test_read_only_arrays_are_copied_without_warning(make):
    # torch warns ("non-writable") when it would share memory with a read-only array; it
    # warns only once per process, so also check that the source holds its own copy
    a = _read_only(np.arange(1.0, 11.0).reshape(5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        src = make(a)
        x = src.sample(7, _gen(), dtype=F64)
    assert x.shape == (7, 2) and torch.isfinite(x).all()
    held = [v for v in vars(src).values() if isinstance(v, torch.Tensor)]
    assert held and not any(np.shares_memory(t.numpy(), a) for t in held)


def test_empirical_does_not_alias_the_given_points():
    points = np.array([[0.0, 1.0], [2.5, -3.0]])
    src = EmpiricalSource(points)
    points[:] = np.nan  # changing the caller's array later does not change the source
    assert torch.isfinite(src.sample(50, _gen(), dtype=F64)).all()


@pytest.mark.parametrize("points, exc, match", [
    ([[np.nan, 0.0]], ValueError, "points contains NaN"),
    ([[np.inf, 0.0]], ValueError, "points contains infinity"),
    (np.zeros((0, 2)), ValueError, "'points'.*minimum of 1"),
    (np.array([[1j, 0.0]]), ValueError, "'points'.*Complex"),
    (3.0, TypeError, "'points'"),
], ids=["nan", "inf", "empty", "complex", "scalar"])
def test_empirical_refuses_bad_points(points, exc, match):
    with pytest.raises(exc, match=match):
        EmpiricalSource(points)


# ------------------------------------------------------------------ CallableSource
def test_callable_receives_seeded_numpy_generator():
    seen = []

    def fn(n, rng):
        seen.append(rng)
        return rng.uniform(-1, 1, size=(n, 3))

    src = CallableSource(fn, (3,))
    a = src.sample(100, _gen(9), dtype=F64)
    assert isinstance(seen[0], np.random.Generator)
    assert a.shape == (100, 3)
    assert (a.abs() <= 1).all()
    torch.testing.assert_close(src.sample(100, _gen(9), dtype=F64), a, rtol=0, atol=0)


@pytest.mark.parametrize(
    "out",
    [np.zeros((4, 3)), np.zeros((5, 2)), np.zeros(4), np.zeros((4, 2, 1))],
    ids=["wrong_d", "wrong_n", "flat", "extra_axis"],
)
def test_callable_wrong_shape(out):
    src = CallableSource(lambda n, rng: out, (2,))
    with pytest.raises(ValueError, match="shape"):
        src.sample(4, _gen())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_callable_non_finite(bad):
    def fn(n, rng):
        out = rng.normal(size=(n, 2))
        out[1, 0] = bad
        return out

    with pytest.raises(ValueError, match="NaN or infinite"):
        CallableSource(fn, (2,)).sample(4, _gen())


def test_callable_complex_output_refused_not_truncated():
    src = CallableSource(lambda n, rng: rng.normal(size=(n, 2)) + 1j, (2,))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: refused before any cast
        with pytest.raises(TypeError, match="source callable must return real values"):
            src.sample(4, _gen())


# ------------------------------------------------------------------ GaussianMixtureSource checks
_I2 = np.eye(2)
_M2 = [[0.0, 0.0], [1.0, 1.0]]


@pytest.mark.parametrize("weights, means, covs, exc, match", [
    ([0.0, 0.0], _M2, [_I2, _I2], ValueError, "'weights'.*non-negative.*positive finite sum"),
    ([-1.0, 2.0], _M2, [_I2, _I2], ValueError, "'weights'.*non-negative"),
    ([1e308, 1e308], _M2, [_I2, _I2], ValueError, "'weights'.*positive finite sum"),
    ([np.nan, 1.0], _M2, [_I2, _I2], ValueError, "weights contains NaN"),
    ([[1.0, 1.0]], _M2, [_I2, _I2], ValueError, "'weights'.*1-D"),
    ([1.0, 1.0, 1.0], _M2, [_I2, _I2], ValueError, r"'means'.*\(m, d\) with m=3"),
    ([1.0, 1.0], [0.0, 1.0], [_I2, _I2], ValueError, r"'means'.*\(m, d\)"),
    ([1.0, 1.0], [[np.nan, 0.0], [1.0, 1.0]], [_I2, _I2], ValueError, "means contains NaN"),
    ([1.0, 1.0], _M2, [np.eye(3)] * 2, ValueError, r"'covariances'.*\(2, 2, 2\)"),
    ([1.0, 1.0], _M2, [_I2], ValueError, r"'covariances'.*\(2, 2, 2\)"),
    ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], ValueError,
     r"'covariances'.*symmetric positive definite.*\[0\]"),
    ([1.0, 1.0], _M2, [_I2, np.zeros((2, 2))], ValueError,
     r"'covariances'.*positive definite.*\[1\]"),
    ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], ValueError,
     "'covariances'.*symmetric"),
    ([1.0], [[0.0, 0.0]], [[[1.0, np.inf], [0.0, 1.0]]], ValueError,
     "covariances contains infinity"),
    ([1.0, 1j], _M2, [_I2, _I2], TypeError, "'weights'"),
], ids=["zero_sum", "negative", "overflowing_sum", "nan_weight", "2d_weights",
        "weights_vs_means", "1d_means", "nan_mean", "cov_dim", "cov_count", "not_pd",
        "singular", "asymmetric", "inf_cov", "complex_weight"])
def test_gmm_refuses_bad_parameters_at_construction(weights, means, covs, exc, match):
    with pytest.raises(exc, match=match):
        GaussianMixtureSource(weights, means, covs)


def test_gmm_accepts_rounding_asymmetry_and_zero_weights():
    a = np.random.default_rng(0).normal(size=(2, 2))
    cov = a @ a.T + _I2
    cov[0, 1] += 1e-14 * cov[0, 1]  # rounding-level asymmetry is fine
    src = GaussianMixtureSource([0.0, 1.0], _M2, [cov, _I2])
    assert src.weights.tolist() == [0.0, 1.0]
    assert torch.isfinite(src.log_prob(torch.zeros(3, 2, dtype=F64))).all()


def test_tensors_are_copied_to_another_device_once_and_not_pickled():
    """Per-step transfers of a source's tensors to a GPU are cached (``meta`` stands in)."""
    import copy
    import pickle

    src = AffineSource(EmpiricalSource(np.arange(6.0).reshape(3, 2)), shift=[1.0, 2.0], scale=[2.0, 4.0])
    assert src._on("shift", "cpu") is src.shift  # already there: no copy
    first = src._on("shift", "meta")
    assert first.device.type == "meta" and src._on("shift", "meta") is first  # cached
    src.shift = torch.zeros(2, dtype=torch.float64)  # a replaced attribute is copied anew
    assert src._on("shift", "meta") is not first
    for twin in (pickle.loads(pickle.dumps(src)), copy.deepcopy(src)):
        assert "_device_cache" not in vars(twin)
        torch.testing.assert_close(twin.shift, src.shift)
    assert "_device_cache" in vars(src)


def test_mixture_log_prob_checks_the_shape_of_its_input():
    src = GaussianMixtureSource([1.0], [[0.0, 0.0]], [np.eye(2)])
    for bad in (torch.zeros(3, 3), torch.zeros(3), torch.zeros(2, 3, 2)):
        with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
            src.log_prob(bad)
