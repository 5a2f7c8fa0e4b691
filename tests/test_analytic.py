"""Tests of the Gaussian-mixture oracle (hrflow.analytic, spec section 5).

Oracles used here: scipy's multivariate normal, the closed form of the marginal,
numerical quadrature in 1-D, Monte Carlo draws of the training construction
(spec section 2) and a slow per-row numpy implementation of the exact field.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from scipy.special import logsumexp

from hrflow.analytic import (
    MixtureOracle,
    OracleField,
    hierarchy_design,
    hierarchy_moments,
    mixture_blocks,
    optimal_field,
    paper_mixture,
)
from hrflow.hierarchy import training_pair

from mixture_strategies import mixtures

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------
# slow, obviously-correct references
# ---------------------------------------------------------------------------


def scipy_mixture_logpdf(X, weights, means, covs):
    """log sum_m w_m N(X; means_m, covs_m), one scipy call per component."""
    comps = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(X).reshape(len(X))
        for w, m, c in zip(weights, means, covs)
    ]
    return logsumexp(np.stack(comps, axis=1), axis=1)


def slow_field(oracle, zs, ts):
    """Exact field, one row and one component at a time, straight from the definition.

    zs (D, n, d), ts (D, n) numpy -> (n, d).
    """
    depth, n, d = zs.shape
    eye = np.eye(d)
    out = np.zeros((n, d))
    for i in range(n):
        # A: rows z_k = t_k x1 - t_k sum_{j<k} x0^(j) + (1 - t_k) x0^(k)
        A = np.zeros((depth * d, (depth + 1) * d))
        for k in range(depth):
            tk = ts[k, i]
            A[k * d : (k + 1) * d, 0:d] = tk * eye
            for j in range(k):
                A[k * d : (k + 1) * d, (j + 1) * d : (j + 2) * d] = -tk * eye
            A[k * d : (k + 1) * d, (k + 1) * d : (k + 2) * d] = (1 - tk) * eye
        B = np.hstack([eye] + [-eye] * depth)
        z = zs[:, i, :].reshape(-1)
        logs, cmeans = [], []
        for w, mu, S in zip(oracle.weights, oracle.means, oracle.covariances):
            mw = np.concatenate([mu, np.zeros(depth * d)])
            Sw = np.eye((depth + 1) * d)
            Sw[:d, :d] = S
            Szz = A @ Sw @ A.T
            Syz = B @ Sw @ A.T
            logs.append(np.log(w) + stats.multivariate_normal(A @ mw, Szz).logpdf(z))
            cmeans.append(B @ mw + Syz @ np.linalg.solve(Szz, z - A @ mw))
        post = np.exp(np.array(logs) - logsumexp(logs))
        out[i] = post @ np.array(cmeans)
    return out


def field_np(field, zs, ts, dtype=F64):
    """Evaluate an OracleField on numpy states (D, n, d) and times (D, n)."""
    out = field(
        [torch.as_tensor(z, dtype=dtype) for z in zs],
        [torch.as_tensor(t, dtype=dtype) for t in ts],
    )
    return out.detach().numpy()


# ---------------------------------------------------------------------------
# hypothesis strategies
# ---------------------------------------------------------------------------


unit_times = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))


# ---------------------------------------------------------------------------
# construction and validation
# ---------------------------------------------------------------------------


def test_attributes_and_normalised_weights():
    o = MixtureOracle([1, 3], [[0.0, 1.0], [2.0, 0.0]], np.stack([np.eye(2), 2 * np.eye(2)]))
    assert o.n_features == 2 and o.n_components == 2
    np.testing.assert_allclose(o.weights, [0.25, 0.75])
    assert o.weights.dtype == o.means.dtype == o.covariances.dtype == np.float64


@pytest.mark.parametrize(
    "weights, means, covs, match",
    [
        ([1.0, -1.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "weights"),
        ([[1.0]], [[0.0]], [[[1.0]]], "weights"),
        ([1.0], [0.0], [[[1.0]]], "means"),
        ([1.0, 1.0], [[0.0]], [[[1.0]], [[1.0]]], "means"),
        ([1.0], [[np.nan]], [[[1.0]]], "means"),
        ([1.0], [[0.0, 0.0]], [[[1.0]]], "covariances"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "positive definite"),
    ],
)
def test_bad_parameters_raise(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        MixtureOracle(weights, means, covs)


def test_bad_inputs_raise():
    o = paper_mixture("1to2")
    with pytest.raises(ValueError, match="X"):
        o.log_prob(np.zeros(3))
    with pytest.raises(ValueError, match="X"):
        o.marginal_log_prob(np.zeros((3, 2)), 0.5)
    with pytest.raises(ValueError, match="t"):
        o.marginal_log_prob(np.zeros((3, 1)), 1.5)
    with pytest.raises(ValueError, match="t"):
        o.velocity_distribution(np.zeros((3, 1)), np.zeros(2))
    with pytest.raises(ValueError, match="V"):
        o.velocity_log_prob(np.zeros((3, 2)), np.zeros((3, 1)), 0.5)
    with pytest.raises(ValueError, match="n_samples"):
        o.sample(-1)
    with pytest.raises(ValueError, match="depth"):
        o.field(0)
    with pytest.raises(TypeError, match="oracle"):
        OracleField("1to2", 1)
    with pytest.raises(ValueError, match="scale"):
        o.shifted(0.0, 0.0)
    with pytest.raises(ValueError, match="name"):
        paper_mixture("moons")


# ---------------------------------------------------------------------------
# data density, sampling and marginals
# ---------------------------------------------------------------------------


def test_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    covs = np.array([[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]], [[0.7, -0.4], [-0.4, 0.9]]])
    o = MixtureOracle([0.2, 0.5, 0.3], [[0.0, 1.0], [-2.0, 0.5], [1.5, -1.0]], covs)
    X = rng.normal(scale=2.0, size=(50, 2))
    np.testing.assert_allclose(
        o.log_prob(X), scipy_mixture_logpdf(X, o.weights, o.means, o.covariances), rtol=1e-12, atol=1e-12
    )


def test_sample_moments_and_random_state():
    o = MixtureOracle(
        [0.3, 0.7], [[0.0, 1.0], [-2.0, 0.5]], [[[1.0, 0.3], [0.3, 0.5]], [[0.2, 0.0], [0.0, 2.0]]]
    )
    n = 200_000
    X = o.sample(n, random_state=0)
    assert X.shape == (n, 2)
    mean, cov = o.moments()
    # standard errors are below 0.005 for the mean, 0.01 for the covariance
    np.testing.assert_allclose(X.mean(axis=0), mean, atol=0.02)
    np.testing.assert_allclose(np.cov(X.T), cov, atol=0.04)
    np.testing.assert_array_equal(o.sample(5, random_state=3), o.sample(5, random_state=3))
    np.testing.assert_array_equal(
        o.sample(5, random_state=np.random.default_rng(3)), o.sample(5, random_state=np.random.default_rng(3))
    )
    assert not np.array_equal(o.sample(5, random_state=3), o.sample(5, random_state=4))
    assert o.sample(0).shape == (0, 2)


def test_marginal_endpoints():
    o = paper_mixture("2D 1to6")
    X = np.random.default_rng(1).normal(size=(20, 2))
    np.testing.assert_allclose(o.marginal_log_prob(X, 1.0), o.log_prob(X), rtol=1e-12)
    np.testing.assert_allclose(
        o.marginal_log_prob(X, 0.0), stats.multivariate_normal(np.zeros(2)).logpdf(X), rtol=1e-12
    )


@given(o=mixtures(), t=unit_times, seed=st.integers(0, 1000))
@settings(deadline=None, max_examples=20)
def test_marginal_closed_form(o, t, seed):
    """p_t = sum_m w_m N(t mu_m, t^2 S_m + (1-t)^2 I), per-row times included."""
    X = np.random.default_rng(seed).normal(scale=2.0, size=(6, o.n_features))
    covs = t**2 * o.covariances + (1 - t) ** 2 * np.eye(o.n_features)
    expected = scipy_mixture_logpdf(X, o.weights, t * o.means, covs)
    np.testing.assert_allclose(o.marginal_log_prob(X, t), expected, rtol=1e-9, atol=1e-9)
    ts = np.linspace(0, 1, 6)
    per_row = [o.marginal_log_prob(X[i : i + 1], ts[i])[0] for i in range(6)]
    np.testing.assert_allclose(o.marginal_log_prob(X, ts), per_row, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [0.3, 0.7, 0.95])
def test_marginal_matches_monte_carlo_interpolation(t):
    """The density of (1-t) x0 + t x1 integrates to one, has the Monte Carlo
    moments, and its CDF (by quadrature) passes a KS test against the draws."""
    o = paper_mixture("1to2")
    rng = np.random.default_rng(7)
    n = 20_000
    xt = (1 - t) * rng.standard_normal((n, 1)) + t * o.sample(n, random_state=rng)
    grid = np.linspace(-5, 5, 20_001)
    dens = np.exp(o.marginal_log_prob(grid[:, None], t))
    assert integrate.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)
    mean = integrate.trapezoid(grid * dens, grid)
    var = integrate.trapezoid(grid**2 * dens, grid) - mean**2
    # exact moments: t E[x1] and t^2 Var[x1] + (1-t)^2
    assert mean == pytest.approx(0.0, abs=1e-8)
    assert var == pytest.approx(t**2 * 1.02 + (1 - t) ** 2, rel=1e-6)
    # Monte Carlo: standard error of the mean <= 0.008, of the variance <= 0.01
    assert xt.mean() == pytest.approx(mean, abs=0.03)
    assert xt.var() == pytest.approx(var, abs=0.04)
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0.0)
    assert stats.kstest(xt[:, 0], lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3


# ---------------------------------------------------------------------------
# velocity distribution (Theorem 1)
# ---------------------------------------------------------------------------


@given(o=mixtures(), t=unit_times, seed=st.integers(0, 1000))
@settings(deadline=None, max_examples=40)
def test_velocity_log_prob_is_theorem_1(o, t, seed):
    """log p(v | x, t) = log rho0(x - t v) + log p1(x + (1-t) v) - log p_t(x), all from scipy."""
    rng = np.random.default_rng(seed)
    d = o.n_features
    X = rng.normal(scale=1.5, size=(5, d))
    V = rng.normal(scale=2.0, size=(5, d))
    log_rho0 = stats.multivariate_normal(np.zeros(d)).logpdf(X - t * V).reshape(5)
    log_p1 = scipy_mixture_logpdf(X + (1 - t) * V, o.weights, o.means, o.covariances)
    pt_covs = t**2 * o.covariances + (1 - t) ** 2 * np.eye(d)
    log_pt = scipy_mixture_logpdf(X, o.weights, t * o.means, pt_covs)
    expected = log_rho0 + log_p1 - log_pt
    got = o.velocity_log_prob(V, X, t)
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("t", [0.0, 0.4, 0.9, 1.0])
@pytest.mark.parametrize("x", [-1.2, 0.1])
def test_velocity_density_integrates_to_one(x, t):
    o = paper_mixture("1to2")
    grid = np.linspace(-12, 12, 12_001)
    dens = np.exp(o.velocity_log_prob(grid[:, None], np.full((grid.size, 1), x), t))
    assert integrate.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)
    log_w, means, covs = o.velocity_distribution(np.array([[x]]), t)
    mean = np.exp(log_w[0]) @ means[0, :, 0]
    assert integrate.trapezoid(grid * dens, grid) == pytest.approx(mean, abs=1e-6)


def test_velocity_distribution_endpoints():
    """t = 0: v | x0 is the data shifted by -x0 (same weights); t = 1: v | x1 ~ N(x1, I)."""
    o = MixtureOracle([0.2, 0.8], [[1.0, 0.0], [-1.0, 2.0]], [np.eye(2), [[0.5, 0.2], [0.2, 0.3]]])
    X = np.array([[0.3, -0.2], [2.0, 1.0]])
    log_w, means, covs = o.velocity_distribution(X, 0.0)
    np.testing.assert_allclose(np.exp(log_w), np.tile(o.weights, (2, 1)), rtol=1e-12)
    np.testing.assert_allclose(means, o.means[None] - X[:, None], atol=1e-12)
    np.testing.assert_allclose(covs, np.tile(o.covariances, (2, 1, 1, 1)), atol=1e-12)
    log_w, means, covs = o.velocity_distribution(X, 1.0)
    np.testing.assert_allclose(np.exp(log_w) @ np.ones(2), 1.0, rtol=1e-12)
    np.testing.assert_allclose(means, np.repeat(X[:, None], 2, axis=1), atol=1e-12)
    np.testing.assert_allclose(covs, np.tile(np.eye(2), (2, 2, 1, 1)), atol=1e-12)


@pytest.mark.parametrize("x, t", [(0.3, 0.5), (-0.8, 0.8), (0.0, 0.2)])
def test_velocity_matches_monte_carlo_conditioning(x, t):
    """Draws of x1 - x0 whose x_t falls within eps of x follow Theorem 1."""
    o = paper_mixture("1to2")
    rng = np.random.default_rng(11)
    n, eps = 1_000_000, 0.01
    x0 = rng.standard_normal(n)
    x1 = o.sample(n, random_state=rng)[:, 0]
    xt = (1 - t) * x0 + t * x1
    v_mc = (x1 - x0)[np.abs(xt - x) < eps]
    assert v_mc.size > 2000
    log_w, means, covs = o.velocity_distribution(np.array([[x]]), t)
    w, m, c = np.exp(log_w[0]), means[0, :, 0], covs[0, :, 0, 0]
    mean = w @ m
    var = w @ (c + m**2) - mean**2
    se = np.sqrt(var / v_mc.size)
    assert abs(v_mc.mean() - mean) < 5 * se + 0.01
    assert v_mc.var() == pytest.approx(var, rel=0.1)
    v_oracle = o.sample_velocity(np.full((5000, 1), x), t, random_state=1)[:, 0]
    assert stats.ks_2samp(v_mc, v_oracle).pvalue > 1e-3

    def cdf(v):
        return np.sum(w * stats.norm.cdf((np.asarray(v)[..., None] - m) / np.sqrt(c)), axis=-1)

    assert stats.kstest(v_oracle, cdf).pvalue > 1e-3
    assert stats.kstest(v_mc, cdf).pvalue > 1e-3


def test_sample_velocity_moments_2d():
    o = paper_mixture("2D 1to6")
    X = np.tile([[0.4, -0.3]], (40_000, 1))
    V = o.sample_velocity(X, 0.6, random_state=0)
    log_w, means, covs = o.velocity_distribution(X[:1], 0.6)
    w = np.exp(log_w[0])
    mean = w @ means[0]
    cov = np.einsum("m,mij->ij", w, covs[0] + np.einsum("mi,mj->mij", means[0], means[0])) - np.outer(
        mean, mean
    )
    # standard errors: below 0.01 for the mean and 0.015 for the covariance
    np.testing.assert_allclose(V.mean(axis=0), mean, atol=0.04)
    np.testing.assert_allclose(np.cov(V.T), cov, atol=0.06)


# ---------------------------------------------------------------------------
# the exact field
# ---------------------------------------------------------------------------


def test_hierarchy_design_reproduces_training_states():
    """z = A w and y_D = B w agree with hrflow.hierarchy.training_pair."""
    g = torch.Generator().manual_seed(0)
    depth, n, d = 3, 7, 2
    x1 = torch.randn(n, d, generator=g, dtype=F64)
    x0 = torch.randn(depth, n, d, generator=g, dtype=F64)
    t = torch.rand(depth, n, generator=g, dtype=F64)
    t[0, 0], t[1, 1], t[2, 2] = 0.0, 1.0, 1.0
    z, target = training_pair(x1, x0, t)
    A, B = hierarchy_design(t, d)
    w = torch.cat([x1.unsqueeze(0), x0]).permute(1, 0, 2).reshape(n, -1)
    torch.testing.assert_close((A @ w.unsqueeze(-1)).squeeze(-1), z.permute(1, 0, 2).reshape(n, -1))
    torch.testing.assert_close(w @ B.T, target)


@pytest.mark.parametrize("depth, d", [(1, 1), (2, 3), (3, 2)])
def test_hierarchy_moments_match_dense_maps(depth, d):
    """The blockwise moments equal A cov_w A^T, A cov_w B^T, B cov_w B^T and A mean_w."""
    g = torch.Generator().manual_seed(depth)
    n, m = 5, 2
    means = torch.randn(m, d, generator=g, dtype=F64)
    root = torch.randn(m, d, d, generator=g, dtype=F64)
    covs = root @ root.transpose(1, 2) + 0.1 * torch.eye(d, dtype=F64)
    t = torch.rand(depth, n, generator=g, dtype=F64)
    t[:, 0] = 0.0
    t[:, 1] = 1.0
    A, B = hierarchy_design(t, d)
    mean_w, cov_w = mixture_blocks(means, covs, depth)
    mz, my, czz, czy, cyy = hierarchy_moments(t, means, covs)
    torch.testing.assert_close(mz, torch.einsum("npq,mq->nmp", A, mean_w))
    torch.testing.assert_close(my[0], mean_w @ B.T)
    torch.testing.assert_close(czz, torch.einsum("npq,mqr,nsr->nmps", A, cov_w, A))
    torch.testing.assert_close(czy, torch.einsum("npq,mqr,sr->nmps", A, cov_w, B))
    torch.testing.assert_close(cyy, B @ cov_w @ B.T)


@given(o=mixtures(), depth=st.integers(1, 3), data=st.data())
@settings(deadline=None, max_examples=40)
def test_field_matches_slow_reference(o, depth, data):
    n, d = 4, o.n_features
    ts = np.array(data.draw(st.lists(unit_times, min_size=depth * n, max_size=depth * n))).reshape(depth, n)
    seed = data.draw(st.integers(0, 1000))
    zs = np.random.default_rng(seed).normal(scale=2.0, size=(depth, n, d))
    field = o.field(depth)
    out = field_np(field, zs, ts)
    assert out.shape == (n, d) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, slow_field(o, zs, ts), rtol=1e-7, atol=1e-7)
    out32 = field([torch.as_tensor(z, dtype=torch.float32) for z in zs], [torch.as_tensor(t) for t in ts])
    assert out32.dtype == torch.float32 and out32.shape == (n, d)
    np.testing.assert_allclose(out32.numpy(), out, rtol=1e-4, atol=1e-4)


def _random_case(o, depth, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=1.5, size=(depth, n, o.n_features)), rng.uniform(size=(depth, n))


@pytest.fixture(scope="module")
def oracle2d():
    return MixtureOracle(
        [0.3, 0.5, 0.2],
        [[1.0, 0.0], [-1.0, 2.0], [0.0, -1.5]],
        [np.eye(2), [[0.5, 0.2], [0.2, 0.3]], [[0.05, 0.0], [0.0, 0.4]]],
    )


def test_depth1_identities(oracle2d):
    o = oracle2d
    (zs, ts) = _random_case(o, 1)
    f = o.field(1)
    mean, _ = o.moments()
    # t = 0: the state is x0 and the field is E[x1] - x0
    np.testing.assert_allclose(field_np(f, zs, np.zeros_like(ts)), mean - zs[0], atol=1e-12)
    # t = 1: the state is x1 and the field is x1 - E[x0] = x1
    np.testing.assert_allclose(field_np(f, zs, np.ones_like(ts)), zs[0], atol=1e-12)
    # any t: the mean of the Theorem-1 velocity distribution
    log_w, means, _ = o.velocity_distribution(zs[0], ts[0])
    np.testing.assert_allclose(field_np(f, zs, ts), np.einsum("nm,nmd->nd", np.exp(log_w), means), atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_field_innermost_time_one_returns_state(oracle2d, depth):
    """t_{D-1} = 1: z_{D-1} = y_{D-1} and x0^(D-1) is unobserved, so the field is z_{D-1}."""
    zs, ts = _random_case(oracle2d, depth, seed=depth)
    ts[-1] = 1.0
    np.testing.assert_allclose(field_np(oracle2d.field(depth), zs, ts), zs[-1], atol=1e-10)


@pytest.mark.parametrize("depth", [1, 2])
def test_field_extra_level_at_time_zero(oracle2d, depth):
    """Adding a level at time 0 (its state is its own source draw x0^(D)) subtracts it:
    f_{D+1}(z, z_D; t, 0) = f_D(z; t) - z_D."""
    zs, ts = _random_case(oracle2d, depth + 1, seed=10 + depth)
    ts[-1] = 0.0
    expected = field_np(oracle2d.field(depth), zs[:-1], ts[:-1]) - zs[-1]
    np.testing.assert_allclose(field_np(oracle2d.field(depth + 1), zs, ts), expected, atol=1e-10)


@pytest.mark.parametrize("depth", [2, 3])
def test_field_outer_time_zero_is_shifted_data(oracle2d, depth):
    """t_0 = 0 reveals x0^(0) = z_0, so the inner levels see the data x1 - z_0:
    f_D(z_0, z_rest; 0, t_rest) = field_{D-1} of the mixture shifted by z_0."""
    zs, ts = _random_case(oracle2d, depth, n=1, seed=20 + depth)
    ts[0] = 0.0
    inner = oracle2d.shifted(zs[0, 0], 1.0).field(depth - 1)
    np.testing.assert_allclose(
        field_np(oracle2d.field(depth), zs, ts), field_np(inner, zs[1:], ts[1:]), atol=1e-10
    )


def _binned_residual_zscores(z, resid, bins):
    """Per-bin mean of the residual divided by its standard error (bins with >= 200 points)."""
    edges = [np.quantile(zk, np.linspace(0, 1, bins + 1)[1:-1]) for zk in z]
    idx = np.zeros(len(resid), dtype=np.int64)
    for zk, e in zip(z, edges):
        idx = idx * bins + np.searchsorted(e, zk)
    count = np.bincount(idx, minlength=bins ** len(z))
    total = np.bincount(idx, weights=resid, minlength=bins ** len(z))
    sq = np.bincount(idx, weights=resid**2, minlength=bins ** len(z))
    keep = count >= 200
    mean = total[keep] / count[keep]
    se = np.sqrt((sq[keep] / count[keep] - mean**2) / count[keep])
    return mean / se


@pytest.mark.parametrize("depth, times", [(1, (0.6,)), (2, (0.5, 0.4)), (2, (0.85, 0.7))])
def test_field_is_the_conditional_mean_monte_carlo(depth, times):
    """Regression check on the training construction: E[(y_D - f(z)) g(z)] = 0 for
    every bin indicator g, and f beats perturbed fields in mean squared error."""
    o = paper_mixture("1to2")
    g = torch.Generator().manual_seed(5)
    n = 150_000
    x1 = torch.as_tensor(o.sample(n, random_state=5))
    x0 = torch.randn(depth, n, 1, generator=g, dtype=F64)
    t = torch.tensor(times, dtype=F64)[:, None].expand(depth, n)
    z, target = training_pair(x1, x0, t)
    f = o.field(depth)(list(z), list(t))
    resid = (target - f)[:, 0].numpy()
    zsc = _binned_residual_zscores([zk[:, 0].numpy() for zk in z], resid, bins=20 if depth == 1 else 8)
    assert zsc.size >= 20
    assert np.max(np.abs(zsc)) < 4.5  # Bonferroni-safe for <= 400 bins
    # the residual must be small in every bin for the true field but not for a wrong one:
    # the depth-(D-1) answer ignores the innermost state
    if depth == 2:
        wrong = (o.field(1)([z[0]], [t[0]]) - z[1])[:, 0].numpy()
        resid_wrong = target[:, 0].numpy() - wrong
        zsc_wrong = _binned_residual_zscores([zk[:, 0].numpy() for zk in z], resid_wrong, bins=8)
        assert np.max(np.abs(zsc_wrong)) > 10
    mse = np.mean(resid**2)  # a constant shift of the field only adds error
    for delta in (0.02, -0.02):
        assert np.mean((resid - delta) ** 2) > mse


def test_field_endpoints_with_tiny_covariance_are_finite():
    o = MixtureOracle([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], np.stack([1e-8 * np.eye(2), 1e-6 * np.eye(2)]))
    for depth in (1, 2, 3):
        for tval in (0.0, 1.0):
            zs = np.random.default_rng(depth).normal(size=(depth, 5, 2))
            out = field_np(o.field(depth), zs, np.full((depth, 5), tval))
            assert np.all(np.isfinite(out))
    # at t = 1 near a component mean the depth-1 field is the state itself
    zs = np.array([[[1.0, 0.5]]])
    np.testing.assert_allclose(field_np(o.field(1), zs, np.ones((1, 1))), zs[0], atol=1e-12)


def test_field_is_differentiable_and_divergence_matches_finite_differences(oracle2d):
    f = oracle2d.field(2)
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(5, 2, generator=g, dtype=F64)
    z1 = torch.randn(5, 2, generator=g, dtype=F64).requires_grad_(True)
    t0, t1 = torch.full((5,), 0.3, dtype=F64), torch.full((5,), 0.6, dtype=F64)
    out = f([z0, z1], [t0, t1])
    eye = torch.eye(2, dtype=F64).unsqueeze(1).expand(2, 5, 2)
    (jac,) = torch.autograd.grad(out, z1, eye, is_grads_batched=True)  # jac[i, n, j] = d out_i / d z1_j
    div = jac[0, :, 0] + jac[1, :, 1]
    h = 1e-6
    fd = sum(
        (f([z0, z1.detach() + h * e], [t0, t1]) - f([z0, z1.detach() - h * e], [t0, t1]))[:, i] / (2 * h)
        for i, e in enumerate(torch.eye(2, dtype=F64))
    )
    torch.testing.assert_close(div, fd, rtol=1e-6, atol=1e-6)
    assert torch.autograd.gradcheck(lambda z: f([z0, z], [t0, t1]), (z1,))


def test_field_module_conventions(oracle2d):
    f = oracle2d.field(2)
    assert isinstance(f, OracleField) and f.depth == 2 and f.event_shape == (2,)
    assert list(f.parameters()) == []
    z = [torch.zeros(3, 2), torch.zeros(3, 2)]
    # Module.to(dtype) must not round the mixture: the answer stays the float64 one
    before = f(z, [torch.full((3,), 0.5)] * 2)
    f.to(torch.float16)
    torch.testing.assert_close(f(z, [torch.full((3,), 0.5)] * 2), before)
    # scalar times broadcast over the batch
    torch.testing.assert_close(f(z, [torch.tensor(0.5)] * 2), before)
    with pytest.raises(ValueError):
        f([z[0]], [torch.zeros(3)])


def test_optimal_field_function_matches_module(oracle2d):
    zs, ts = _random_case(oracle2d, 3, seed=4)
    out = optimal_field(
        torch.as_tensor(zs), torch.as_tensor(ts), *(torch.as_tensor(a) for a in (
            oracle2d.weights, oracle2d.means, oracle2d.covariances))
    )
    np.testing.assert_allclose(out.numpy(), field_np(oracle2d.field(3), zs, ts), rtol=1e-12)


def test_shifted_and_paper_mixtures():
    o = MixtureOracle([0.4, 0.6], [[1.0, -2.0], [3.0, 0.0]], [np.eye(2), [[2.0, 0.5], [0.5, 1.0]]])
    s = o.shifted([1.0, -1.0], [2.0, 0.5])
    X = o.sample(10, random_state=0)
    # log p_Y(y) = log p_X(shift + scale y) + sum log scale
    Y = (X - [1.0, -1.0]) / [2.0, 0.5]
    np.testing.assert_allclose(s.log_prob(Y), o.log_prob(X) + np.log(2.0 * 0.5), rtol=1e-12)
    for name in ("1to5", "2D 1to6"):
        mean, cov = paper_mixture(name).moments()
        assert np.mean(mean) == pytest.approx(0.0, abs=1e-12)
        assert np.trace(cov) / cov.shape[0] + np.var(mean) == pytest.approx(1.0, rel=1e-12)
    assert paper_mixture("2D 1to6").n_components == 6
