"""Tests of hrflow.divergence: exact trace vs autograd Jacobians, Hutchinson in expectation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from hrflow.divergence import divergence_exact, divergence_hutchinson, make_probe

METHODS = ["loop", "batched"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def seeded_mlp(d, seed, width=16):
    """A random MLP with weights drawn from an explicit generator (no global seed)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, width), nn.Tanh(), nn.Linear(width, width), nn.SiLU(),
                        nn.Linear(width, d)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(max(p.shape[-1], 1)))
    return net


def jacobian_traces(fn, v):
    """Oracle: per-row trace of the full autograd Jacobian, one row at a time."""
    out = []
    for row in v:
        jac = torch.autograd.functional.jacobian(lambda x: fn(x.unsqueeze(0))[0], row)
        d = row.numel()
        out.append(torch.trace(jac.reshape(d, d)))
    return torch.stack(out)


@pytest.mark.parametrize("method", METHODS)
@settings(deadline=None, max_examples=15)
@given(d=st.integers(1, 6), n=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
def test_exact_matches_jacobian_trace(method, d, n, seed):
    net = seeded_mlp(d, seed)
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    out, div = divergence_exact(net, v, method=method)
    expected = jacobian_traces(net, v)
    torch.testing.assert_close(div, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out, net(v))
    assert div.shape == (n,) and div.dtype == torch.float64


@pytest.mark.parametrize("method", METHODS)
def test_exact_multidim_event_shape(method):
    # event shape (2, 3): the field acts on the flattened row
    net = seeded_mlp(6, 3)

    def fn(v):
        return net(v.reshape(v.shape[0], 6)).reshape(v.shape)

    v = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, div = divergence_exact(fn, v, method=method)
    torch.testing.assert_close(div, jacobian_traces(fn, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_exact_linear_field(method):
    A = torch.tensor([[0.5, 2.0, 0.0], [1.0, -3.0, 4.0], [0.0, 7.0, 1.25]], dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    v = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out, div = divergence_exact(lambda x: x @ A.T + b, v, method=method)
    torch.testing.assert_close(div, torch.full((5,), -1.25, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(out, v @ A.T + b)


@pytest.mark.parametrize("method", METHODS)
def test_exact_constant_field_has_zero_divergence(method):
    v = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    out, div = divergence_exact(lambda x: torch.ones_like(x) * 2.0, v, method=method)
    assert torch.equal(div, torch.zeros(3)) and torch.equal(out, torch.full((3, 2), 2.0))


def _grad_free_checks(fn_div):
    net = seeded_mlp(3, 0)
    v = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        out, div = fn_div(net, v)
    assert not out.requires_grad and not div.requires_grad
    assert out.grad_fn is None and div.grad_fn is None
    # the parameters received no gradient
    assert all(p.grad is None for p in net.parameters())
    # outside no_grad as well
    out2, div2 = fn_div(net, v)
    assert out2.grad_fn is None and div2.grad_fn is None
    torch.testing.assert_close(div, div2, rtol=0, atol=0)
    return net, v, div


@pytest.mark.parametrize("method", METHODS)
def test_exact_inside_no_grad_and_detached(method):
    net, v, div = _grad_free_checks(lambda f, x: divergence_exact(f, x, method=method))
    torch.testing.assert_close(div, jacobian_traces(net, v), rtol=1e-12, atol=1e-12)


def test_hutchinson_inside_no_grad_and_detached():
    probe = make_probe((4, 3), "rademacher", torch.Generator().manual_seed(2), dtype=torch.float64)
    _grad_free_checks(lambda f, x: divergence_hutchinson(f, x, probe))


@pytest.mark.parametrize("method", METHODS)
def test_exact_rows_independent(method):
    net = seeded_mlp(4, 5)
    v = torch.randn(9, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    _, div = divergence_exact(net, v, method=method)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    _, div_perm = divergence_exact(net, v[perm], method=method)
    _, div_sub = divergence_exact(net, v[2:5], method=method)
    torch.testing.assert_close(div_perm, div[perm], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(div_sub, div[2:5], rtol=1e-13, atol=1e-13)


def test_hutchinson_exact_for_linear_field():
    # probe^T A probe, computed directly
    A = torch.randn(4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probe = make_probe((6, 4), "gaussian", torch.Generator().manual_seed(2), dtype=torch.float64)
    _, div = divergence_hutchinson(lambda x: x @ A.T, v, probe)
    expected = torch.einsum("ni,ij,nj->n", probe, A, probe)
    torch.testing.assert_close(div, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_unbiased(kind):
    """The mean over K probes is within 4 standard errors of the exact divergence.

    Each row's K estimates are iid given v, so the standard error of their mean
    is std / sqrt(K). With 5 rows x 2 kinds at 4 SE the chance of a false alarm
    is ~6e-4.
    """
    d, n, K = 5, 5, 4000
    net = seeded_mlp(d, 11)
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    _, exact = divergence_exact(net, v)
    probe = make_probe((K, n, d), kind, torch.Generator().manual_seed(13), dtype=torch.float64)
    vv = v.expand(K, n, d).reshape(K * n, d)
    _, est = divergence_hutchinson(net, vv, probe.reshape(K * n, d))
    est = est.reshape(K, n)
    mean, se = est.mean(0), est.std(0) / math.sqrt(K)
    assert torch.all(se > 0)
    assert torch.all((mean - exact).abs() < 4 * se), ((mean - exact) / se)


def test_rademacher_variance_not_larger_than_gaussian():
    # Var_rademacher = 2 sum_{i != j} A_ij^2-ish <= Var_gaussian = that + 2 sum_i A_ii^2 (symmetrised)
    A = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S = (A + A.T) / 2
    var_rad = 2 * ((S**2).sum() - (torch.diagonal(S) ** 2).sum())
    var_gauss = 2 * (S**2).sum()
    K = 20000
    v = torch.zeros(K, 3, dtype=torch.float64)
    for kind, var in [("rademacher", var_rad), ("gaussian", var_gauss)]:
        probe = make_probe((K, 3), kind, torch.Generator().manual_seed(1), dtype=torch.float64)
        _, est = divergence_hutchinson(lambda x: x @ A.T, v, probe)
        # sample variance within 10% of the closed form (K = 20000: rel. sd of the variance < 3%)
        assert abs(est.var().item() / var.item() - 1) < 0.1, kind


def test_make_probe_rademacher_distribution():
    p = make_probe((200, 50), "rademacher", torch.Generator().manual_seed(0), dtype=torch.float64)
    assert p.shape == (200, 50) and p.dtype == torch.float64
    assert set(np.unique(p.numpy()).tolist()) == {-1.0, 1.0}
    m = p.numpy()
    # mean of 10,000 fair signs: sd 0.01
    assert abs(m.mean()) < 0.04
    # E[eps eps^T] = I: empirical second-moment matrix over the 200 rows
    cov = m.T @ m / m.shape[0]
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=0)
    off = cov[~np.eye(50, dtype=bool)]
    assert np.abs(off).max() < 5 / math.sqrt(200)  # sd of each entry is 1/sqrt(200)


def test_make_probe_gaussian_distribution():
    p = make_probe((4000,), "gaussian", torch.Generator().manual_seed(1), dtype=torch.float64).numpy()
    assert stats.kstest(p, "norm").pvalue > 1e-3
    q = make_probe((2000, 2), "gaussian", torch.Generator().manual_seed(2), dtype=torch.float64).numpy()
    assert abs(np.corrcoef(q.T)[0, 1]) < 4 / math.sqrt(2000)


def test_make_probe_determinism_and_dtype():
    a = make_probe((3, 4), "gaussian", torch.Generator().manual_seed(7))
    b = make_probe((3, 4), "gaussian", torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.dtype == torch.float32
    r = make_probe((3, 4), "rademacher", torch.Generator().manual_seed(7), dtype=torch.float16)
    assert r.dtype == torch.float16


def test_bad_inputs():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="kind"):
        make_probe((2, 2), "uniform", g)
    with pytest.raises(TypeError, match="generator"):
        make_probe((2, 2), "gaussian", None)
    with pytest.raises(TypeError, match="dtype"):
        make_probe((2, 2), "gaussian", g, dtype=torch.int64)
    with pytest.raises(ValueError, match="method"):
        divergence_exact(lambda x: x, torch.zeros(2, 2), method="jacfwd")
    with pytest.raises(TypeError, match="v must be"):
        divergence_exact(lambda x: x, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="v must have shape"):
        divergence_exact(lambda x: x, torch.zeros(3))
    with pytest.raises(ValueError, match="fn must map"):
        divergence_exact(lambda x: x.sum(1), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="probe must have shape"):
        divergence_hutchinson(lambda x: x, torch.zeros(2, 2), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="probe must be"):
        divergence_hutchinson(lambda x: x, torch.zeros(2, 2), None)
