"""Tests of hrflow.density (spec section 4, Algorithms 3 and 4).

Oracles: fields whose flow is an affine map of N(0, I) (closed-form Gaussian
endpoint densities, built here), and the exact optimal field of a Gaussian
mixture (hrflow.analytic.MixtureOracle, spec section 5), whose log-densities,
marginals and velocity densities are closed form.

Tolerances. ODE error: with the exact field, Algorithm 3 must match the closed
form up to the solver's error; we use dopri5 at atol = rtol = 1e-8 (observed
error <~ 1e-7) and assert 1e-5, or rk4 with 40 steps (observed <~ 1e-6 for the
mixtures used) and assert 2e-5. Monte Carlo error (Algorithm 4, Hutchinson):
asserted within 4-5 estimated standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.special import logsumexp

from hrflow.analytic import MixtureOracle
from hrflow.density import (
    cnf_log_density,
    log_density,
    log_marginal_density,
    standard_normal_log_prob,
)
from hrflow.fields.base import HierarchicalField
from hrflow.fields.mlp import HierarchicalMLP
from hrflow.sources import CallableSource, GaussianMixtureSource, StandardNormal

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------
# closed-form fields built here
# ---------------------------------------------------------------------------


class AffineFlowField(HierarchicalField):
    """Innermost flow ``z(tau) = ((1 - tau) I + tau L) z(0) + tau mu``.

    ``L`` lower triangular with positive diagonal, so ``A(tau) = (1 - tau) I + tau L``
    is invertible on [0, 1] and the velocity is
    ``f(z, tau) = (L - I) A(tau)^{-1} (z - tau mu) + mu``. Started from N(0, I) the
    endpoint is ``N(mu, L L^T)``. ``mu = mu0 + W z_0`` depends on the outermost
    state for depth >= 2 (conditioning test); other outer levels are ignored.
    """

    def __init__(self, depth, L, mu0, W=None):
        d = L.shape[0]
        super().__init__(depth, (d,))
        self.L, self.mu0 = L, mu0
        self.W = torch.zeros(d, d, dtype=L.dtype) if W is None else W
        self.outer_encodes = 0

    def encode(self, level, z, t):
        if level < self.depth - 1:
            self.outer_encodes += 1
        return (z, t)

    def mean(self, encodings):
        if self.depth == 1:
            return self.mu0
        return self.mu0 + encodings[0][0] @ self.W.T

    def head(self, encodings):
        z, tau = encodings[-1]
        mu = self.mean(encodings)
        d = self.L.shape[0]
        eye = torch.eye(d, dtype=z.dtype)
        A = (1 - tau)[:, None, None] * eye + tau[:, None, None] * self.L  # (n, d, d)
        x = torch.linalg.solve_triangular(A, (z - tau[:, None] * mu).unsqueeze(-1), upper=False)
        return ((self.L - eye) @ x).squeeze(-1) + mu


def random_affine(d, seed, depth=1):
    g = gen(seed)
    L = torch.tril(torch.randn(d, d, generator=g, dtype=F64)) * 0.5
    L.diagonal().copy_(torch.rand(d, generator=g, dtype=F64) * 1.5 + 0.3)
    mu0 = torch.randn(d, generator=g, dtype=F64)
    W = torch.randn(d, d, generator=g, dtype=F64) * 0.7
    return AffineFlowField(depth, L, mu0, W)


def gauss_logpdf(x, mean, L):
    cov = (L @ L.T).numpy()
    return np.array([stats.multivariate_normal(m, cov).logpdf(xi) for xi, m in zip(x.numpy(), mean.numpy())])


def mlp_field(depth, d, seed, dtype=F64):
    """A random-init HierarchicalMLP whose weights come from an explicit generator."""
    field = HierarchicalMLP(depth, d, hidden_size=32, n_layers=2, embedding_dim=8).to(dtype)
    g = gen(seed)
    with torch.no_grad():
        for p in field.parameters():
            fan_in = p.shape[-1] if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) / math.sqrt(fan_in))
    return field


# ---------------------------------------------------------------------------
# cnf_log_density on affine flows
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 3])
@pytest.mark.parametrize("solver,n_steps,tol", [("rk4", 40, 1e-6), ("dopri5", 1, 1e-6), ("euler", 400, 2e-2)])
def test_cnf_affine_depth1(d, solver, n_steps, tol):
    field = random_affine(d, seed=d)
    x = torch.randn(6, d, generator=gen(1), dtype=F64) * 2
    lp = cnf_log_density(field, x, [], base_log_prob=standard_normal_log_prob, solver=solver,
                         n_steps=n_steps, atol=1e-9, rtol=1e-9)
    expected = gauss_logpdf(x, field.mu0.expand(6, d), field.L)
    assert lp.dtype == F64 and lp.shape == (6,)
    np.testing.assert_allclose(lp.numpy(), expected, rtol=0, atol=tol)


def test_cnf_affine_conditional_depth3_and_encodes_context_once():
    d, n = 2, 5
    field = random_affine(d, seed=7, depth=3)
    z0 = torch.randn(n, d, generator=gen(2), dtype=F64)
    z1 = torch.randn(n, d, generator=gen(3), dtype=F64)
    x = torch.randn(n, d, generator=gen(4), dtype=F64)
    ctx = [(z0, torch.rand(n, generator=gen(5), dtype=F64)), (z1, 0.0)]
    lp = cnf_log_density(field, x, ctx, base_log_prob=standard_normal_log_prob, n_steps=40)
    expected = gauss_logpdf(x, field.mu0 + z0 @ field.W.T, field.L)
    np.testing.assert_allclose(lp.numpy(), expected, rtol=0, atol=1e-6)
    assert field.outer_encodes == 2  # each outer level encoded once, not per step


class ImageAffineFlowField(AffineFlowField):
    """The affine flow acting on the flattened state of an event shape (1, 2, 2)."""

    def __init__(self, depth, L, mu0, W=None):
        super().__init__(depth, L, mu0, W)
        self.event_shape = (1, 2, 2)

    def head(self, encodings):
        flat = [(z.reshape(z.shape[0], -1), t) for z, t in encodings]
        return super().head(flat).reshape(-1, 1, 2, 2)


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_multidim_event_shape(divergence):
    base = random_affine(4, seed=3, depth=2)
    field = ImageAffineFlowField(2, base.L, base.mu0, base.W)
    X = torch.randn(3, 1, 2, 2, generator=gen(0), dtype=F64)
    src = StandardNormal((1, 2, 2))
    lp = log_density(field, X, src, n_draws=2, n_steps=40, generator=gen(1), divergence=divergence,
                     return_draws=True)
    x0 = src.sample(2, gen(1), dtype=F64).reshape(2, 4)  # documented draw order: source draws first
    Xf = X.reshape(3, 4)
    for j in range(2):  # endpoint X - x0 ~ N(mu0 + W x0, L L^T)
        expected = gauss_logpdf(Xf - x0[j], (base.mu0 + x0[j] @ base.W.T).expand(3, 4), base.L)
        if divergence == "exact":
            np.testing.assert_allclose(lp[:, j].numpy(), expected, rtol=0, atol=1e-6)
        else:
            assert torch.isfinite(lp).all()


def test_adaptive_solver_chunking_within_tolerance():
    """dopri5 picks one step sequence per chunk: chunking changes results only within tolerance."""
    field = random_affine(2, seed=8, depth=2)
    X = torch.randn(6, 2, generator=gen(0), dtype=F64) * 2
    src = StandardNormal((2,))
    kw = dict(n_draws=2, solver="dopri5", atol=1e-8, rtol=1e-8, return_draws=True)
    a = log_density(field, X, src, generator=gen(1), **kw)
    b = log_density(field, X, src, generator=gen(1), batch_size=5, **kw)
    x0 = src.sample(2, gen(1), dtype=F64)
    expected = np.stack([gauss_logpdf(X - x0[j], field.mu0 + x0[j].expand(6, 2) @ field.W.T, field.L)
                         for j in range(2)], axis=1)
    np.testing.assert_allclose(a.numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(b.numpy(), expected, rtol=0, atol=1e-6)


def test_cnf_depth1_uses_base_log_prob():
    # f = mu constant (L = I): endpoint = source draw + mu, density = source density shifted
    src = GaussianMixtureSource([0.4, 0.6], [[-1.0, 0.5], [2.0, 0.0]],
                                [np.eye(2) * 0.3, [[1.0, 0.2], [0.2, 0.5]]])
    mu = torch.tensor([0.7, -1.2], dtype=F64)
    field = AffineFlowField(1, torch.eye(2, dtype=F64), mu)
    x = torch.randn(4, 2, generator=gen(0), dtype=F64)
    lp = cnf_log_density(field, x, [], base_log_prob=src.log_prob, n_steps=5)
    np.testing.assert_allclose(lp.numpy(), src.log_prob(x - mu).numpy(), rtol=0, atol=1e-12)
    lp_alg = log_density(field, x, src, generator=gen(0))
    np.testing.assert_allclose(lp_alg.numpy(), lp.numpy(), rtol=0, atol=1e-12)


class LinearField(HierarchicalField):
    """Depth-1 field ``f(z, tau) = z A^T``: constant divergence ``tr A``."""

    def __init__(self, A):
        super().__init__(1, (A.shape[0],))
        self.A = A

    def head(self, encodings):
        return encodings[-1][0] @ self.A.T


@pytest.mark.parametrize("n_steps", [1, 2, 5])
def test_fixed_grid_cnf_takes_n_steps_steps(n_steps):
    """``n_steps`` Euler steps (one included): ``z0 = z1 (1 - a / K)^K``, divergence ``d a`` exactly."""
    a = 0.3
    z1 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    lp = cnf_log_density(LinearField(a * torch.eye(2, dtype=F64)), z1, [],
                         base_log_prob=standard_normal_log_prob, solver="euler", n_steps=n_steps)
    z0 = z1 * (1 - a / n_steps) ** n_steps
    np.testing.assert_allclose(lp.numpy(), (standard_normal_log_prob(z0) - 2 * a).numpy(),
                               rtol=0, atol=1e-12)


def test_depth1_hutchinson_uses_one_probe_per_draw():
    """``eps^T A eps = tr A + (A01 + A10) eps0 eps1``: the draws differ and average to the exact value."""
    A = torch.tensor([[0.5, 1.0], [-2.0, 0.3]], dtype=F64)
    X = torch.tensor([[0.2, -0.1]], dtype=F64)
    src = StandardNormal((2,))
    lp = log_density(LinearField(A), X, src, divergence="hutchinson", n_draws=64, n_steps=4,
                     generator=gen(0), return_draws=True)
    assert lp.shape == (1, 64)
    # the divergence term is (A01 + A10) eps0 eps1 = -eps0 eps1 off its mean: sd 1 per draw
    assert lp.std() > 0.5
    exact = log_density(LinearField(A), X, src, n_steps=4, generator=gen(0))
    assert abs(lp.mean().item() - exact.item()) < 4.5 / math.sqrt(64)


def test_adaptive_solver_meets_the_tolerance_on_every_row():
    """dopri5's error norm is the worst row's: one hard row among 200 easy ones is as accurate alone."""
    oracle = MixtureOracle([0.5, 0.5], [[-1.0], [1.0]], [[[0.02]], [[0.02]]])
    hard = torch.tensor([[0.37]], dtype=F64)
    easy = torch.zeros((200, 1), dtype=F64)
    kw = dict(solver="dopri5", atol=1e-7, rtol=1e-7, generator=gen(0))
    truth = oracle.log_prob(hard.numpy())[0]
    alone = log_density(oracle.field(1), hard, StandardNormal((1,)), **kw)
    together = log_density(oracle.field(1), torch.cat([hard, easy]), StandardNormal((1,)), **kw)
    assert abs(alone.item() - truth) < 1e-4
    assert abs(together[0].item() - truth) < 1e-4  # an error norm averaged over rows: 2.6e-3


class ShiftedSourceField(HierarchicalField):
    """Exact field for the source ``N(c, I)``: ``inner`` (the oracle of ``X - c``) at ``z_0 - c``."""

    def __init__(self, inner, c):
        super().__init__(inner.depth, inner.event_shape)
        self.inner, self.c = inner, c

    def encode(self, level, z, t):
        return self.inner.encode(level, z - self.c if level == 0 else z, t)

    def head(self, encodings):
        return self.inner.head(encodings)


def test_algorithm4_uses_the_density_of_a_non_normal_source():
    """With source ``N(c, I)`` Algorithm 4 divides by that density, not by ``N(0, I)``'s."""
    c = 1.5
    oracle = MixtureOracle([1.0], [[1.0]], [[[0.5]]])
    field = ShiftedSourceField(oracle.shifted(c, 1.0).field(2), c)
    src = GaussianMixtureSource([1.0], [[c]], [[[1.0]]])
    X = torch.tensor([[-0.5], [1.0], [2.5]], dtype=F64)
    truth = oracle.log_prob(X.numpy())
    lp3 = log_density(field, X, src, algorithm=3, n_steps=20, generator=gen(0))
    np.testing.assert_allclose(lp3.numpy(), truth, rtol=0, atol=1e-3)  # the field is right
    lp4 = log_density(field, X, src, algorithm=4, t=0.5, n_draws_marginal=400, n_steps=10,
                      generator=gen(0))
    np.testing.assert_allclose(lp4.numpy(), truth, rtol=0, atol=0.1)


def test_cnf_no_graph_and_no_grad_caller():
    field = mlp_field(2, 2, seed=0)
    x = torch.randn(3, 2, generator=gen(0), dtype=F64)
    ctx = [(torch.randn(3, 2, generator=gen(1), dtype=F64), 0.3)]
    with torch.no_grad():
        a = cnf_log_density(field, x, ctx, base_log_prob=standard_normal_log_prob, n_steps=4)
    b = cnf_log_density(field, x.requires_grad_(True), ctx, base_log_prob=standard_normal_log_prob, n_steps=4)
    assert a.grad_fn is None and b.grad_fn is None and not b.requires_grad
    assert all(p.grad is None for p in field.parameters())
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cnf_rows_independent_fixed_grid():
    field = mlp_field(2, 2, seed=1)
    x = torch.randn(7, 2, generator=gen(0), dtype=F64)
    c = torch.randn(7, 2, generator=gen(1), dtype=F64)
    full = cnf_log_density(field, x, [(c, 0.0)], base_log_prob=standard_normal_log_prob, n_steps=6)
    part = cnf_log_density(field, x[2:4], [(c[2:4], 0.0)], base_log_prob=standard_normal_log_prob,
                           n_steps=6)
    torch.testing.assert_close(part, full[2:4], rtol=1e-12, atol=1e-12)


def test_cnf_hutchinson_unbiased_on_affine_flow():
    """Mean over 3000 probes of the Hutchinson log-density is within 4 SE of the exact one."""
    d, K = 3, 3000
    field = random_affine(d, seed=11)
    x = torch.randn(1, d, generator=gen(0), dtype=F64).expand(K, d)
    for kind in ("rademacher", "gaussian"):
        from hrflow.divergence import make_probe

        probe = make_probe((K, d), kind, gen(1), dtype=F64)
        lp = cnf_log_density(field, x, [], base_log_prob=standard_normal_log_prob, divergence="hutchinson",
                             probe=probe, n_steps=20)
        exact = gauss_logpdf(x[:1], field.mu0[None], field.L)[0]
        se = lp.std().item() / math.sqrt(K)
        assert se > 0 and abs(lp.mean().item() - exact) < 4 * se, kind


def test_cnf_bad_inputs():
    field = mlp_field(2, 2, seed=0)
    x = torch.zeros(3, 2, dtype=F64)
    ctx = [(x, 0.0)]
    kw = dict(base_log_prob=standard_normal_log_prob)
    with pytest.raises(ValueError, match="context"):
        cnf_log_density(field, x, [], **kw)
    with pytest.raises(ValueError, match="endpoint"):
        cnf_log_density(field, torch.zeros(3, 3, dtype=F64), ctx, **kw)
    with pytest.raises(ValueError, match="probe"):
        cnf_log_density(field, x, ctx, divergence="hutchinson", **kw)
    with pytest.raises(ValueError, match="solver"):
        cnf_log_density(field, x, ctx, solver="rk45", **kw)
    with pytest.raises(ValueError, match="divergence"):
        cnf_log_density(field, x, ctx, divergence="trace", **kw)
    with pytest.raises(ValueError, match="n_steps"):
        cnf_log_density(field, x, ctx, n_steps=0, **kw)
    with pytest.raises(TypeError, match="field"):
        cnf_log_density(lambda z: z, x, ctx, **kw)
    with pytest.raises(ValueError, match="context\\[0\\] time"):
        cnf_log_density(field, x, [(x, torch.zeros(2))], **kw)


# ---------------------------------------------------------------------------
# oracle: Algorithm 3
# ---------------------------------------------------------------------------


ORACLE_1D = MixtureOracle([0.3, 0.7], [[-1.0], [1.5]], [[[0.2]], [[0.5]]])
ORACLE_2D = MixtureOracle([0.4, 0.6], [[-1.0, 0.5], [1.0, -0.5]],
                          [[[0.4, 0.15], [0.15, 0.3]], [[0.5, 0.0], [0.0, 0.6]]])



@st.composite
def mixtures(draw, d):
    m = draw(st.integers(1, 3))
    weights = [draw(st.floats(0.2, 1.0)) for _ in range(m)]
    means = [[draw(st.floats(-2.0, 2.0)) for _ in range(d)] for _ in range(m)]
    covs = []
    for _ in range(m):
        a = np.array([[draw(st.floats(-0.7, 0.7)) for _ in range(d)] for _ in range(d)])
        covs.append(a @ a.T + draw(st.floats(0.1, 0.6)) * np.eye(d))
    return MixtureOracle(weights, means, np.array(covs))


def _check_algorithm3_oracle(depth, d, data):
    oracle = data.draw(mixtures(d))
    seed = data.draw(st.integers(0, 2**31 - 1))
    X = torch.as_tensor(oracle.sample(4, random_state=seed))
    X[0] = X[0] + 1.5  # one point off the bulk
    lp = log_density(oracle.field(depth), X, StandardNormal((d,)), n_draws=3, generator=gen(seed),
                     solver="dopri5", atol=1e-8, rtol=1e-8, return_draws=True)
    expected = oracle.log_prob(X.numpy())
    assert lp.shape == (4, 3) and lp.dtype == F64
    np.testing.assert_allclose(lp.numpy(), np.broadcast_to(expected[:, None], (4, 3)), rtol=0, atol=1e-5)
    # perfect model: the same value for every draw
    assert (lp.max(1).values - lp.min(1).values).max() < 2e-6


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 2])
@settings(deadline=None, max_examples=2)
@given(data=st.data())
def test_algorithm3_oracle_matches_log_prob(depth, d, data):
    _check_algorithm3_oracle(depth, d, data)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 2, 3])
@settings(deadline=None, max_examples=25)
@given(data=st.data())
def test_algorithm3_oracle_matches_log_prob_many(depth, d, data):
    _check_algorithm3_oracle(depth, d, data)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_algorithm3_oracle_rk4_mean_of_logs(depth):
    """rk4 with 40 steps; for a perfect model the lower bound (mean of logs) is tight."""
    oracle = MixtureOracle([0.3, 0.7], [[-1.0, 0.0], [1.0, 1.0]],
                           [[[0.4, 0.1], [0.1, 0.3]], [[0.5, 0.0], [0.0, 0.5]]])
    X = torch.as_tensor(oracle.sample(5, random_state=0))
    lp = log_density(oracle.field(depth), X, StandardNormal((2,)), n_draws=4, n_steps=40, combine="mean",
                     generator=gen(3))
    np.testing.assert_allclose(lp.numpy(), oracle.log_prob(X.numpy()), rtol=0, atol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("solver,n_steps,tol", [("rk4", 160, 2e-7), ("midpoint", 400, 1e-4)])
def test_algorithm3_oracle_solver_convergence(solver, n_steps, tol):
    X = torch.as_tensor(ORACLE_2D.sample(20, random_state=1))
    lp = log_density(ORACLE_2D.field(2), X, StandardNormal((2,)), n_draws=3, solver=solver,
                     n_steps=n_steps, generator=gen(0))
    np.testing.assert_allclose(lp.numpy(), ORACLE_2D.log_prob(X.numpy()), rtol=0, atol=tol)


def test_algorithm3_oracle_hutchinson_unbiased():
    """With the exact field every draw has the exact log p in expectation over the probe;
    the mean of the logs over 400 (x0, probe) draws is within 4 SE of the truth."""
    oracle = MixtureOracle([0.5, 0.5], [[-1.0, 0.5], [1.0, -0.5]], np.tile(0.4 * np.eye(2), (2, 1, 1)))
    X = torch.as_tensor(oracle.sample(3, random_state=1))
    for kind in ("rademacher", "gaussian"):
        lp = log_density(oracle.field(2), X, StandardNormal((2,)), n_draws=400, divergence="hutchinson",
                         probe_kind=kind, n_steps=10, generator=gen(5), return_draws=True)
        se = lp.std(1) / math.sqrt(400)
        err = lp.mean(1) - torch.as_tensor(oracle.log_prob(X.numpy()))
        assert torch.all(se > 0) and torch.all(err.abs() < 4 * se + 1e-4), (kind, err / se)


# ---------------------------------------------------------------------------
# oracle: Algorithm 4 and its pieces
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("oracle", [ORACLE_1D, ORACLE_2D], ids=["1d", "2d"])
@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("t", [0.25, 0.5, 0.75])
def test_velocity_piece_matches_theorem1(oracle, depth, t):
    """log p(v | x_t, t) from the inner CNF = oracle.velocity_log_prob (ODE tolerance)."""
    d = oracle.n_features
    n = 4
    x0 = torch.randn(n, d, generator=gen(0), dtype=F64)
    X = torch.as_tensor(oracle.sample(n, random_state=0))
    xt, v = (1 - t) * x0 + t * X, X - x0
    ctx = [(xt, t)]
    endpoint = v
    if depth == 3:  # inner draw at time 0; endpoint is the residual
        w = torch.randn(n, d, generator=gen(1), dtype=F64)
        ctx.append((w, 0.0))
        endpoint = v - w
    lp = cnf_log_density(oracle.field(depth), endpoint, ctx, base_log_prob=standard_normal_log_prob,
                         n_steps=40)
    np.testing.assert_allclose(lp.numpy(), oracle.velocity_log_prob(v.numpy(), xt.numpy(), t),
                               rtol=0, atol=2e-5)
    # paper Eq. 22 with the exact marginal: exact for every x0
    eq22 = lp.numpy() + oracle.marginal_log_prob(xt.numpy(), t) - standard_normal_log_prob(x0).numpy()
    np.testing.assert_allclose(eq22, oracle.log_prob(X.numpy()), rtol=0, atol=2e-5)


def _check_log_of_mean(draws, truth, n_se=4.5, ode_tol=1e-4):
    """draws (n, M): per-draw log w; the log-mean-exp must be within n_se SE of truth.

    SE of log(mean w) by the delta method: std(w) / (sqrt(M) mean(w)).
    """
    draws = np.asarray(draws)
    M = draws.shape[1]
    w = np.exp(draws - draws.max(1, keepdims=True))
    rel_se = w.std(1, ddof=1) / (math.sqrt(M) * w.mean(1))
    est = logsumexp(draws, axis=1) - math.log(M)
    err = est - truth
    assert np.all(np.abs(err) < n_se * rel_se + ode_tol), err / rel_se
    return rel_se


@pytest.mark.parametrize("oracle,t", [
    (ORACLE_1D, 0.25), (ORACLE_1D, 0.5), (ORACLE_1D, 0.75), (ORACLE_2D, 0.5),
    pytest.param(ORACLE_2D, 0.25, marks=pytest.mark.slow),
    pytest.param(ORACLE_2D, 0.75, marks=pytest.mark.slow),
], ids=["1d-t.25", "1d-t.5", "1d-t.75", "2d-t.5", "2d-t.25", "2d-t.75"])
def test_marginal_piece_matches_oracle(oracle, t):
    d = oracle.n_features
    X = torch.randn(3, d, generator=gen(9), dtype=F64) * 0.8
    draws = log_marginal_density(oracle.field(2), X, t, StandardNormal((d,)), n_draws=600, n_steps=10,
                                 generator=gen(2), return_draws=True)
    assert draws.shape == (3, 600)
    truth = oracle.marginal_log_prob(X.numpy(), t)
    rel_se = _check_log_of_mean(draws.numpy(), truth)
    assert rel_se.max() < 0.3  # the test has power
    combined = log_marginal_density(oracle.field(2), X, t, StandardNormal((d,)), n_draws=600, n_steps=10,
                                    generator=gen(2))
    np.testing.assert_allclose(combined.numpy(), logsumexp(draws.numpy(), 1) - math.log(600), atol=1e-12)


def _alg4_relative_se(oracle, X, x0, t, M, rng):
    """True relative SE of the M-draw estimate of p_t(x_t) for every (row, draw), by plain MC.

    w(x0') = p1((x_t - (1 - t) x0') / t) / t^d for x0' ~ N(0, I); closed-form p1 from the oracle.
    """
    d = X.shape[1]
    xt = (1 - t) * x0[None, :, :] + t * X[:, None, :]  # (n, J, d)
    xp = rng.standard_normal((20000, d))
    pts = (xt[:, :, None, :] - (1 - t) * xp[None, None]) / t  # (n, J, K, d)
    logw = oracle.log_prob(pts.reshape(-1, d)).reshape(pts.shape[:3])
    w = np.exp(logw - logw.max(2, keepdims=True))
    return w.std(2) / (w.mean(2) * math.sqrt(M))


@pytest.mark.parametrize("oracle,depth,t", [
    (ORACLE_1D, 2, 0.25), (ORACLE_1D, 2, 0.5), (ORACLE_1D, 2, 0.75),
    (ORACLE_1D, 3, 0.5), (ORACLE_1D, 4, 0.5), (ORACLE_2D, 2, 0.5),
    pytest.param(ORACLE_2D, 3, 0.25, marks=pytest.mark.slow),
    pytest.param(ORACLE_2D, 2, 0.75, marks=pytest.mark.slow),
], ids=["1d-D2-t.25", "1d-D2-t.5", "1d-D2-t.75", "1d-D3-t.5", "1d-D4-t.5", "2d-D2-t.5", "2d-D3-t.25",
        "2d-D2-t.75"])
def test_algorithm4_oracle(oracle, depth, t):
    """Every per-draw Algorithm 4 value is within 4.5 SE of log p1 (SE of its p_t estimate)."""
    d = oracle.n_features
    n, J, M, seed = 3, 2, 500, 17
    X = torch.as_tensor(oracle.sample(n, random_state=4))
    src = StandardNormal((d,))
    lp = log_density(oracle.field(depth), X, src, algorithm=4, t=t, n_draws=J, n_draws_marginal=M,
                     n_steps=10, generator=gen(seed), return_draws=True)
    assert lp.shape == (n, J)
    # documented draw order: the J source draws come first from the generator
    x0 = src.sample(J, gen(seed), dtype=F64).numpy()
    rel_se = _alg4_relative_se(oracle, X.numpy(), x0, t, M, np.random.default_rng(0))
    err = lp.numpy() - oracle.log_prob(X.numpy())[:, None]
    assert np.all(np.abs(err) < 4.5 * rel_se + 1e-4), err / rel_se
    assert rel_se.max() < 0.3


# ---------------------------------------------------------------------------
# common random numbers: determinism, subset/order and chunking invariance
# ---------------------------------------------------------------------------

SETTINGS = [
    dict(algorithm=3, n_draws=3),
    dict(algorithm=3, n_draws=3, divergence="hutchinson"),
    dict(algorithm=4, t=0.4, n_draws=2, n_draws_marginal=5),
]


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("kw", SETTINGS, ids=["alg3", "alg3-hutch", "alg4"])
def test_invariances(depth, kw):
    if kw["algorithm"] == 4 and depth == 1:
        pytest.skip("algorithm 4 needs depth >= 2")
    d = 2
    field = mlp_field(depth, d, seed=depth)
    X = torch.randn(7, d, generator=gen(0), dtype=F64)
    src = StandardNormal((d,))
    opts = dict(kw, n_steps=2)
    ref = log_density(field, X, src, generator=gen(1), **opts)
    assert ref.shape == (7,) and ref.dtype == F64 and torch.isfinite(ref).all()
    # determinism
    torch.testing.assert_close(log_density(field, X, src, generator=gen(1), **opts), ref, rtol=0, atol=0)
    # another seed gives another value (there is randomness at depth >= 2 / with probes)
    if depth >= 2 or kw.get("divergence") == "hutchinson":
        assert not torch.allclose(log_density(field, X, src, generator=gen(2), **opts), ref)
    # order and subset invariance
    perm = torch.randperm(7, generator=gen(3))
    torch.testing.assert_close(log_density(field, X[perm], src, generator=gen(1), **opts), ref[perm],
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_density(field, X[:3], src, generator=gen(1), **opts), ref[:3],
                               rtol=1e-12, atol=1e-12)
    # chunking invariance
    for bs in (4, 5):
        torch.testing.assert_close(log_density(field, X, src, generator=gen(1), batch_size=bs, **opts), ref,
                                   rtol=1e-12, atol=1e-12)
    # numpy input gives the same
    torch.testing.assert_close(log_density(field, X.numpy(), src, generator=gen(1), **opts), ref,
                               rtol=1e-12, atol=1e-12)
    # combine="mean" is the lower bound
    mean = log_density(field, X, src, generator=gen(1), combine="mean", **opts)
    assert torch.all(mean <= ref + 1e-12)
    draws = log_density(field, X, src, generator=gen(1), return_draws=True, **opts)
    assert draws.shape == (7, kw["n_draws"])
    torch.testing.assert_close(draws.mean(1), mean, rtol=0, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("kw", SETTINGS, ids=["alg3", "alg3-hutch", "alg4"])
def test_per_row_draws(depth, kw):
    if kw["algorithm"] == 4 and depth == 1:
        pytest.skip("algorithm 4 needs depth >= 2")
    d = 2
    field = mlp_field(depth, d, seed=depth)
    src = StandardNormal((d,))
    opts = dict(kw, n_steps=2, draws="per_row")
    if kw.get("divergence") == "hutchinson":
        opts["probe_kind"] = "gaussian"  # 2-D Rademacher probes take only four values
    # seven copies of one point: shared draws give seven equal values, per-row draws seven
    # different ones wherever the estimate is random
    X = torch.randn(1, d, generator=gen(0), dtype=F64).expand(7, d).clone()
    ref = log_density(field, X, src, generator=gen(1), **opts)
    shared = log_density(field, X, src, generator=gen(1), **dict(opts, draws="shared"))
    assert ref.shape == (7,) and ref.dtype == F64 and torch.isfinite(ref).all()
    torch.testing.assert_close(shared, shared[:1].expand(7), rtol=0, atol=1e-12)
    random = depth >= 2 or kw.get("divergence") == "hutchinson"
    assert (torch.unique(ref).numel() == 7) == random
    # determinism, and invariance to the chunking
    torch.testing.assert_close(log_density(field, X, src, generator=gen(1), **opts), ref, rtol=0, atol=0)
    for bs in (3, 4, 5):
        torch.testing.assert_close(log_density(field, X, src, generator=gen(1), batch_size=bs, **opts), ref,
                                   rtol=1e-12, atol=1e-12)
    draws = log_density(field, X, src, generator=gen(1), return_draws=True, **opts)
    assert draws.shape == (7, kw["n_draws"])


@pytest.mark.parametrize("algorithm", [3, 4])
def test_per_row_draws_make_the_mean_over_rows_converge(algorithm):
    """Per-row errors average out over a data set; shared ones do not."""
    field = mlp_field(2, 1, seed=5)  # imperfect: every draw gives another value
    X = torch.full((40, 1), 0.3, dtype=F64)
    kw = dict(algorithm=algorithm, n_draws=1, n_draws_marginal=2, n_steps=2)
    means = {mode: torch.stack([log_density(field, X, StandardNormal((1,)), generator=gen(seed),
                                            draws=mode, **kw).mean() for seed in range(12)])
             for mode in ("shared", "per_row")}
    # 40 independent rows: the sd of their mean is about 1/sqrt(40) = 0.16 of one row's
    assert means["per_row"].std() < 0.45 * means["shared"].std()
    # both estimate the same thing
    pooled = means["shared"].std() / math.sqrt(12)
    assert abs(means["per_row"].mean() - means["shared"].mean()) < 5 * pooled


@pytest.mark.parametrize("depth", [2, 3])
def test_per_row_draws_match_the_oracle(depth):
    X = torch.tensor([[-1.2], [0.1], [1.4], [2.0]], dtype=F64)
    truth = ORACLE_1D.log_prob(X.numpy())
    lp = log_density(ORACLE_1D.field(depth), X, StandardNormal((1,)), n_draws=2, n_steps=40,
                     draws="per_row", generator=gen(0))
    np.testing.assert_allclose(lp.numpy(), truth, atol=2e-5)
    # Algorithm 4: unbiased p_t per row; log biased low by ~Var / (2M), checked loosely
    lp4 = log_density(ORACLE_1D.field(depth), X, StandardNormal((1,)), algorithm=4, t=0.5, n_draws=4,
                      n_draws_marginal=400, n_steps=20, draws="per_row", generator=gen(0))
    np.testing.assert_allclose(lp4.numpy(), truth, atol=0.15)


def test_per_row_marginal_draws():
    field = ORACLE_1D.field(2)
    X = torch.full((5, 1), 0.4, dtype=F64)
    kw = dict(n_draws=3, n_steps=2, generator=gen(0), draws="per_row")
    ref = log_marginal_density(field, X, 0.5, StandardNormal((1,)), return_draws=True, **kw)
    assert ref.shape == (5, 3) and torch.unique(ref).numel() == 15
    kw["generator"] = gen(0)
    torch.testing.assert_close(
        log_marginal_density(field, X, 0.5, StandardNormal((1,)), return_draws=True, batch_size=4, **kw),
        ref, rtol=1e-12, atol=1e-12)


def test_mean_strictly_below_logmeanexp_for_imperfect_model():
    field = mlp_field(2, 1, seed=5)
    X = torch.linspace(-2, 2, 5, dtype=F64)[:, None]
    kw = dict(n_draws=6, n_steps=4, generator=gen(0))
    a = log_density(field, X, StandardNormal((1,)), **kw)
    kw["generator"] = gen(0)
    b = log_density(field, X, StandardNormal((1,)), combine="mean", **kw)
    assert torch.all(b < a)


def test_float32_field():
    field = mlp_field(2, 2, seed=3, dtype=torch.float32)
    X = torch.randn(4, 2, generator=gen(0), dtype=F64)
    lp = log_density(field, X, StandardNormal((2,)), n_draws=2, n_steps=4, generator=gen(0))
    assert lp.dtype == F64 and torch.isfinite(lp).all()
    lp64 = log_density(field.double(), X, StandardNormal((2,)), n_draws=2, n_steps=4, generator=gen(0))
    torch.testing.assert_close(lp, lp64, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# far-away inputs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth,algorithm", [(1, 3), (2, 3), (3, 3), (2, 4)])
def test_far_away_oracle(depth, algorithm):
    X = torch.tensor([[1e3], [-1e3], [0.5]], dtype=F64)
    lp = log_density(ORACLE_1D.field(depth), X, StandardNormal((1,)), algorithm=algorithm, t=0.5,
                     n_draws=2, n_draws_marginal=8, generator=gen(0))
    assert torch.isfinite(lp).all()
    truth = ORACLE_1D.log_prob(X.numpy())
    assert np.all(lp[:2].numpy() < -1e5)
    if algorithm == 3:
        # even out there Algorithm 3 is right to a small relative error
        np.testing.assert_allclose(lp[:2].numpy(), truth[:2], rtol=1e-3)
    else:
        # Algorithm 4's p_t estimate (x0' ~ rho0) degenerates far from the data: the
        # log-mean-exp is dominated by the largest draw and biased low, never high
        assert np.all(lp[:2].numpy() < truth[:2] + 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("depth,algorithm", [(1, 3), (2, 3), (2, 4), (3, 4)])
def test_far_away_random_mlp(dtype, depth, algorithm):
    field = mlp_field(depth, 1, seed=0, dtype=dtype)
    X = torch.tensor([[1e3], [-1e3], [0.0]], dtype=F64)
    lp = log_density(field, X, StandardNormal((1,)), algorithm=algorithm, n_draws=2, n_draws_marginal=4,
                     n_steps=5, generator=gen(0))
    assert torch.isfinite(lp).all(), lp
    assert torch.all(lp[:2] < -1e4) and torch.all(lp[:2] < lp[2])


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def test_bad_inputs():
    field1, field2 = mlp_field(1, 2, 0), mlp_field(2, 2, 0)
    X = torch.zeros(3, 2, dtype=F64)
    src = StandardNormal((2,))
    no_density = CallableSource(lambda n, rng: rng.standard_normal((n, 2)), (2,))
    g = gen(0)
    with pytest.raises(ValueError, match="has_log_prob"):
        log_density(field1, X, no_density, generator=g)
    log_density(field2, X, no_density, generator=g, n_steps=2)  # fine: Algorithm 3, depth 2
    with pytest.raises(ValueError, match="has_log_prob"):
        log_density(field2, X, no_density, algorithm=4, generator=g)
    with pytest.raises(ValueError, match="depth >= 2"):
        log_density(field1, X, src, algorithm=4, generator=g)
    for t in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match="t must lie"):
            log_density(field2, X, src, algorithm=4, t=t, generator=g)
    with pytest.raises(TypeError, match="t must be"):
        log_density(field2, X, src, algorithm=4, t="half", generator=g)
    with pytest.raises(ValueError, match="algorithm"):
        log_density(field2, X, src, algorithm=5, generator=g)
    with pytest.raises(TypeError, match="generator"):
        log_density(field2, X, src, generator=None)
    with pytest.raises(TypeError, match="generator"):
        log_density(field2, X, src, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="combine"):
        log_density(field2, X, src, combine="max", generator=g)
    with pytest.raises(ValueError, match="draws"):
        log_density(field2, X, src, draws="independent", generator=g)
    with pytest.raises(ValueError, match="draws"):
        log_marginal_density(field2, X, 0.5, src, draws=None, generator=g)
    with pytest.raises(ValueError, match="probe_kind"):
        log_density(field2, X, src, probe_kind="sphere", generator=g)
    with pytest.raises(ValueError, match="n_draws"):
        log_density(field2, X, src, n_draws=0, generator=g)
    with pytest.raises(TypeError, match="n_draws"):
        log_density(field2, X, src, n_draws=2.0, generator=g)
    with pytest.raises(ValueError, match="n_draws_marginal"):
        log_density(field2, X, src, algorithm=4, n_draws_marginal=0, generator=g)
    with pytest.raises(ValueError, match="batch_size"):
        log_density(field2, X, src, batch_size=0, generator=g)
    with pytest.raises(ValueError, match="atol"):
        log_density(field2, X, src, atol=-1.0, generator=g)
    with pytest.raises(ValueError, match="X must have shape"):
        log_density(field2, torch.zeros(3, 3), src, generator=g)
    with pytest.raises(ValueError, match="finite"):
        log_density(field2, torch.tensor([[0.0, float("nan")]]), src, generator=g)
    with pytest.raises(ValueError, match="event shape"):
        log_density(field2, X, StandardNormal((3,)), generator=g)
    with pytest.raises(TypeError, match="source"):
        log_density(field2, X, "normal", generator=g)
    with pytest.raises(ValueError, match="depth >= 2"):
        log_marginal_density(field1, X, 0.5, src, generator=g)


def test_empty_input():
    field = mlp_field(2, 2, 0)
    for algorithm in (3, 4):
        lp = log_density(field, torch.zeros(0, 2), StandardNormal((2,)), algorithm=algorithm,
                         n_draws_marginal=3, generator=gen(0))
        assert lp.shape == (0,) and lp.dtype == F64
