"""``sample_velocity``: the inner levels at a frozen location state draw from Theorem 1.

With the exact Gaussian-mixture field (spec section 5) the draws must follow the
velocity distribution ``p(v | x, t)`` of Theorem 1 (Kolmogorov-Smirnov against its
closed-form CDF); at depth 1 the single value must be the mean of that distribution.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from hrflow.analytic import paper_mixture
from hrflow.fields import HierarchicalMLP
from hrflow.sampling import sample_velocity

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def oracle():
    return paper_mixture("1to2")


def theorem1_cdf(oracle, x, t):
    """CDF of the 1-D velocity distribution p(v | x, t)."""
    log_w, means, covs = oracle.velocity_distribution(np.array([[x]]), t)
    w, m, s = np.exp(log_w[0]), means[0, :, 0], np.sqrt(covs[0, :, 0, 0])

    def cdf(v):
        v = np.asarray(v, dtype=np.float64)[..., None]
        return np.sum(w * stats.norm.cdf((v - m) / s), axis=-1)

    return cdf


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("x, t", [(0.2, 0.5), (-0.5, 0.0), (1.0, 0.9), (0.0, 0.3)])
def test_depth2_draws_follow_theorem1(oracle, x, t):
    n = 1000
    X = torch.full((n, 1), x, dtype=F64)
    v = sample_velocity(oracle.field(2), X, t, (100,), gen(3))[:, 0].numpy()
    assert stats.kstest(v, theorem1_cdf(oracle, x, t)).pvalue > 1e-3
    # a wrong time must be detected by the same test (the test can fail)
    assert stats.kstest(v, theorem1_cdf(oracle, x, 1.0 - t if t != 0.5 else 0.95)).pvalue < 1e-3


def test_rows_carry_their_own_location_and_time(oracle):
    """Alternating rows at two different (x, t): each half follows its own distribution."""
    n = 2000
    xs = torch.tensor([0.2, -0.7], dtype=F64).repeat(n // 2).reshape(n, 1)
    ts = torch.tensor([0.5, 0.8], dtype=F64).repeat(n // 2)
    v = sample_velocity(oracle.field(2), xs, ts, (100,), gen(4))[:, 0].numpy()
    assert stats.kstest(v[0::2], theorem1_cdf(oracle, 0.2, 0.5)).pvalue > 1e-3
    assert stats.kstest(v[1::2], theorem1_cdf(oracle, -0.7, 0.8)).pvalue > 1e-3


def test_depth3_draws_follow_theorem1(oracle):
    """Velocity and acceleration levels: a random ODE, correct only in distribution."""
    x, t = 0.2, 0.5
    X = torch.full((1000, 1), x, dtype=F64)
    v = sample_velocity(oracle.field(3), X, t, (10, 5), gen(5), inner_solver="rk4")[:, 0].numpy()
    assert stats.kstest(v, theorem1_cdf(oracle, x, t)).pvalue > 1e-3


@pytest.mark.parametrize("steps", [None, ()])
def test_depth1_returns_the_mean_velocity(oracle, steps):
    X = np.array([[-1.3], [0.0], [0.4], [2.0]])
    t = np.array([0.0, 0.25, 0.6, 0.95])
    v = sample_velocity(oracle.field(1), torch.as_tensor(X), torch.as_tensor(t), steps, gen(0))
    log_w, means, _ = oracle.velocity_distribution(X, t)
    expected = np.einsum("nm,nmd->nd", np.exp(log_w), means)
    np.testing.assert_allclose(v.numpy(), expected, rtol=1e-9, atol=1e-10)


def test_nfe_is_the_product_of_steps_and_location_is_encoded_once(oracle):
    field = oracle.field(3)
    calls = {"head": 0, "encode0": 0}
    head, encode = field.head, field.encode

    def counted_head(encodings):
        calls["head"] += 1
        return head(encodings)

    def counted_encode(level, z, t):
        calls["encode0"] += level == 0
        return encode(level, z, t)

    field.head, field.encode = counted_head, counted_encode
    sample_velocity(field, torch.zeros(7, 1, dtype=F64), 0.3, (3, 4), gen(0))
    assert calls == {"head": 12, "encode0": 1}


def test_seeded_dtype_device_and_default_steps():
    field = HierarchicalMLP(2, 3, hidden_size=8, n_layers=1, embedding_dim=4)
    x = torch.randn(5, 3, generator=gen(1))
    a = sample_velocity(field, x, 0.5, None, gen(2))
    b = sample_velocity(field, x, 0.5, None, gen(2))
    c = sample_velocity(field, x, 0.5, None, gen(3))
    assert a.shape == (5, 3) and a.dtype == torch.float32 and a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"x": np.zeros((3, 1))}, TypeError, "x"),
        ({"x": torch.zeros(3, 2, dtype=F64)}, ValueError, "x"),
        ({"x": torch.zeros(0, 1, dtype=F64)}, ValueError, "x"),
        ({"t": 1.5}, ValueError, "t"),
        ({"t": -0.1}, ValueError, "t"),
        ({"t": torch.zeros(2, dtype=F64)}, ValueError, "t"),
        ({"steps": (5, 5)}, ValueError, "steps"),
        ({"steps": (0,)}, ValueError, "steps"),
        ({"generator": 0}, TypeError, "generator"),
        ({"field": "mlp"}, TypeError, "field"),
    ],
)
def test_bad_input_names_the_parameter(oracle, kwargs, error, match):
    args = {"field": oracle.field(2), "x": torch.zeros(3, 1, dtype=F64), "t": 0.5, "steps": (5,),
            "generator": gen(0)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sample_velocity(args["field"], args["x"], args["t"], args["steps"], args["generator"])


def test_depth1_rejects_inner_steps(oracle):
    with pytest.raises(ValueError, match="steps"):
        sample_velocity(oracle.field(1), torch.zeros(2, 1, dtype=F64), 0.5, (5,), gen(0))
