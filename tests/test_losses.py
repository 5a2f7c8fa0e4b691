"""Regression losses: pseudo-Huber formula and limits, batch reduction, the estimator option."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hrflow import HRFEstimator
from hrflow.losses import LOSSES, pseudo_huber, regression_loss

finite = st.floats(-100, 100, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def pairs(draw):
    n = draw(st.integers(1, 5))
    shape = draw(st.sampled_from([(n, 1), (n, 3), (n, 2, 2)]))
    a = draw(arrays(np.float64, shape, elements=finite))
    b = draw(arrays(np.float64, shape, elements=finite))
    return a, b


@settings(max_examples=50, deadline=None)
@given(pairs(), st.floats(1e-3, 10.0))
def test_pseudo_huber_matches_its_formula(ab, c):
    a, b = ab
    ref = np.array([math.sqrt(np.sum((x - y) ** 2) + c * c) - c for x, y in zip(a, b)])
    got = pseudo_huber(torch.as_tensor(a), torch.as_tensor(b), c).numpy()
    assert got.shape == (a.shape[0],)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def check_small_residual(ratio, c, d):
    # ||a - b|| = r << c: sqrt(r^2 + c^2) - c = r^2 / (2c) (1 - x/4 + ...), x = r^2 / c^2
    r = ratio * c
    a = torch.full((1, d), r / math.sqrt(d), dtype=torch.float64)
    got = pseudo_huber(a, torch.zeros_like(a), c).item()
    assert got == pytest.approx(r * r / (2 * c), rel=ratio**2 / 4 + 1e-9)


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-12, 1e-2), st.floats(0.1, 10.0), st.integers(1, 4))
def test_small_residuals_give_the_scaled_l2_loss(ratio, c, d):
    check_small_residual(ratio, c, d)


@pytest.mark.parametrize("ratio, c, d", [(1e-8, 0.1, 1), (1e-12, 0.00054, 2), (1e-6, 3.0, 4)])
def test_small_residuals_regression(ratio, c, d):
    # the naive sqrt(r^2 + c^2) - c cancels: a 180% error at ratio 1e-8, c = 0.1
    check_small_residual(ratio, c, d)


@settings(max_examples=50, deadline=None)
@given(st.floats(1e2, 1e8), st.floats(1e-3, 1.0), st.integers(1, 4))
def test_large_residuals_give_the_shifted_l1_loss(ratio, c, d):
    # ||a - b|| = r >> c: sqrt(r^2 + c^2) - c - (r - c) = c^2 / (sqrt(r^2 + c^2) + r) <= c^2 / (2r)
    r = ratio * c
    a = torch.full((1, d), r / math.sqrt(d), dtype=torch.float64)
    got = pseudo_huber(a, torch.zeros_like(a), c).item()
    assert abs(got - (r - c)) <= c * c / (2 * r) + 1e-12 * r


def test_pseudo_huber_gradient_is_finite_at_zero_residual():
    a = torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)
    pseudo_huber(a, torch.zeros(3, 2, dtype=torch.float64), 0.1).sum().backward()
    assert torch.equal(a.grad, torch.zeros_like(a))


def test_regression_loss_l2_is_the_mean_squared_error():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    assert regression_loss(a, b, "l2").item() == pytest.approx(((a - b) ** 2).mean().item(), rel=1e-6)


def test_regression_loss_pseudo_huber_is_the_batch_mean_with_the_default_constant():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
    b = torch.randn(5, 4, 2, generator=g, dtype=torch.float64)
    c_default = 0.00054 * math.sqrt(8)  # Song and Dhariwal (2023): 0.00054 sqrt(d)
    assert regression_loss(a, b, "pseudo_huber").item() == pytest.approx(
        pseudo_huber(a, b, c_default).mean().item(), rel=1e-12
    )
    assert regression_loss(a, b, "pseudo_huber", 0.3).item() == pytest.approx(
        pseudo_huber(a, b, 0.3).mean().item(), rel=1e-12
    )


def test_unknown_loss():
    with pytest.raises(ValueError, match="loss"):
        regression_loss(torch.zeros(1, 1), torch.zeros(1, 1), "l1")
    assert LOSSES == ("l2", "pseudo_huber")


SMALL = dict(hidden_size=16, n_layers=1, embedding_dim=4, batch_size=32, n_iter=20, device="cpu")


@pytest.mark.parametrize("huber_c", [None, 0.5])
def test_estimator_with_pseudo_huber_fits(huber_c):
    X = np.random.default_rng(0).normal(size=(100, 2))
    est = HRFEstimator(depth=2, loss="pseudo_huber", huber_c=huber_c, random_state=0, **SMALL).fit(X)
    assert np.all(np.isfinite(est.loss_curve_))
    assert np.all(np.isfinite(est.sample(5, steps=(2, 2), random_state=0)))


def test_estimator_loss_curve_is_the_pseudo_huber_value(monkeypatch):
    # the recorded loss of a batch is regression_loss(field(z, t), target, "pseudo_huber", c)
    import hrflow.training as module

    seen = []
    original = module.regression_loss

    def spy(pred, target, kind, c):
        out = original(pred, target, kind, c)
        seen.append((kind, c, out.item()))
        return out

    monkeypatch.setattr(module, "regression_loss", spy)
    X = np.random.default_rng(0).normal(size=(50, 1))
    est = HRFEstimator(depth=1, loss="pseudo_huber", huber_c=0.25, random_state=0,
                       **{**SMALL, "n_iter": 3}).fit(X)
    assert [s[:2] for s in seen] == [("pseudo_huber", 0.25)] * 3
    np.testing.assert_allclose(est.loss_curve_, [s[2] for s in seen], rtol=1e-6)


@pytest.mark.parametrize("params", [{"loss": "l1"}, {"huber_c": 0.0}, {"huber_c": -1.0}])
def test_estimator_rejects_bad_loss_parameters(params):
    X = np.random.default_rng(0).normal(size=(20, 1))
    with pytest.raises(ValueError, match=next(iter(params))):
        HRFEstimator(**params, **SMALL).fit(X)
