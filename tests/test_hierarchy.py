"""Property tests of the training math in :mod:`hrflow.hierarchy` (spec section 2).

Every property compares with an oracle written as the plain recursion of the
spec (a Python loop over levels), never with the vectorised code itself.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hrflow.hierarchy import interpolate_states, regression_target, residuals, training_pair

SETTINGS = settings(deadline=None, max_examples=40)

event_shapes = st.one_of(
    st.tuples(st.integers(1, 5)),
    st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
)
dtypes = st.sampled_from([torch.float32, torch.float64])


def _tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _draw(depth, n, shape, dtype, seed):
    """Data ``x1 (n, *e)``, source draws ``x0 (D, n, *e)`` and times ``t (D, n)``."""
    g = torch.Generator().manual_seed(seed)
    x1 = 3.0 * torch.randn((n, *shape), generator=g, dtype=dtype) + 1.0
    x0 = torch.randn((depth, n, *shape), generator=g, dtype=dtype)
    t = torch.rand((depth, n), generator=g, dtype=dtype)
    return x1, x0, t


def _oracle(x1, x0, t):
    """Spec section 2 verbatim: ``y_0 = x1``, ``y_{k+1} = y_k - x0^(k)``, ``z_k``."""
    ys = [x1]
    for k in range(x0.shape[0]):
        ys.append(ys[-1] - x0[k])
    zs = []
    for k in range(x0.shape[0]):
        tk = t[k].reshape(-1, *([1] * (x1.dim() - 1)))
        zs.append((1 - tk) * x0[k] + tk * ys[k])
    return ys, zs


common = given(
    depth=st.integers(1, 4),
    n=st.integers(1, 5),
    shape=event_shapes,
    dtype=dtypes,
    seed=st.integers(0, 2**31 - 1),
)


@SETTINGS
@common
def test_matches_spec_recursion(depth, n, shape, dtype, seed):
    x1, x0, t = _draw(depth, n, shape, dtype, seed)
    ys, zs = _oracle(x1, x0, t)
    z, target = training_pair(x1, x0, t)
    torch.testing.assert_close(z, torch.stack(zs), **_tol(dtype))
    torch.testing.assert_close(target, ys[-1], **_tol(dtype))
    torch.testing.assert_close(residuals(x1, x0), torch.stack(ys), **_tol(dtype))


@SETTINGS
@common
def test_shapes_and_dtypes_preserved(depth, n, shape, dtype, seed):
    x1, x0, t = _draw(depth, n, shape, dtype, seed)
    y = residuals(x1, x0)
    z, target = training_pair(x1, x0, t)
    assert y.shape == (depth + 1, n, *shape)
    assert z.shape == (depth, n, *shape)
    assert target.shape == (n, *shape)
    assert regression_target(x1, x0).shape == (n, *shape)
    assert y.dtype == z.dtype == target.dtype == dtype


@SETTINGS
@common
def test_time_zero_gives_source_draws(depth, n, shape, dtype, seed):
    x1, x0, _ = _draw(depth, n, shape, dtype, seed)
    z, _ = training_pair(x1, x0, torch.zeros((depth, n), dtype=dtype))
    torch.testing.assert_close(z, x0, rtol=0, atol=0)


@SETTINGS
@common
def test_time_one_gives_residuals(depth, n, shape, dtype, seed):
    x1, x0, _ = _draw(depth, n, shape, dtype, seed)
    z, _ = training_pair(x1, x0, torch.ones((depth, n), dtype=dtype))
    ys, _ = _oracle(x1, x0, torch.ones((depth, n), dtype=dtype))
    torch.testing.assert_close(z, torch.stack(ys[:depth]), **_tol(dtype))
    # the location level ends exactly at the data
    torch.testing.assert_close(z[0], x1, rtol=0, atol=0)


@SETTINGS
@common
def test_target_identities(depth, n, shape, dtype, seed):
    x1, x0, _ = _draw(depth, n, shape, dtype, seed)
    y = residuals(x1, x0)
    torch.testing.assert_close(y[0], x1, rtol=0, atol=0)
    for k in range(depth):
        torch.testing.assert_close(y[k + 1], y[k] - x0[k], **_tol(dtype))
    total = x0[0].clone()
    for k in range(1, depth):
        total = total + x0[k]
    torch.testing.assert_close(y[depth], x1 - total, **_tol(dtype))
    torch.testing.assert_close(regression_target(x1, x0), x1 - total, **_tol(dtype))


@SETTINGS
@given(n=st.integers(1, 5), shape=event_shapes, dtype=dtypes, seed=st.integers(0, 2**31 - 1))
def test_depth_one_is_rectified_flow(n, shape, dtype, seed):
    x1, x0, t = _draw(1, n, shape, dtype, seed)
    z, target = training_pair(x1, x0, t)
    tt = t[0].reshape(-1, *([1] * len(shape)))
    torch.testing.assert_close(z[0], (1 - tt) * x0[0] + tt * x1, **_tol(dtype))
    torch.testing.assert_close(target, x1 - x0[0], **_tol(dtype))


@SETTINGS
@given(n=st.integers(1, 5), shape=event_shapes, dtype=dtypes, seed=st.integers(0, 2**31 - 1))
def test_depth_two_is_acceleration_objective(n, shape, dtype, seed):
    x1, x0, t = _draw(2, n, shape, dtype, seed)
    z, target = training_pair(x1, x0, t)
    x0_, v0 = x0[0], x0[1]
    tt = t[0].reshape(-1, *([1] * len(shape)))
    tau = t[1].reshape(-1, *([1] * len(shape)))
    torch.testing.assert_close(z[0], (1 - tt) * x0_ + tt * x1, **_tol(dtype))
    torch.testing.assert_close(z[1], (1 - tau) * v0 + tau * (x1 - x0_), **_tol(dtype))
    torch.testing.assert_close(target, x1 - x0_ - v0, **_tol(dtype))


def test_per_example_times_are_not_mixed():
    # every example uses its own time at every level
    x1 = torch.tensor([[10.0], [20.0]], dtype=torch.float64)
    x0 = torch.zeros((2, 2, 1), dtype=torch.float64)
    t = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64)
    z, _ = training_pair(x1, x0, t)
    torch.testing.assert_close(z[:, :, 0], torch.tensor([[1.0, 4.0], [3.0, 8.0]], dtype=torch.float64))


def test_interpolate_states_ignores_trailing_target():
    x1, x0, t = _draw(3, 4, (2,), torch.float64, 0)
    y = residuals(x1, x0)
    torch.testing.assert_close(interpolate_states(x0, y, t), interpolate_states(x0, y[:3], t))


@pytest.mark.parametrize(
    "x1_shape, x0_shape, t_shape",
    [
        ((4, 3), (2, 4, 2), (2, 4)),  # event shapes differ
        ((4, 3), (2, 5, 3), (2, 4)),  # batch sizes differ
        ((4, 3), (4, 3), (1, 4)),  # missing level axis
        ((4, 3), (2, 4, 3), (2,)),  # t without batch axis
        ((4, 3), (2, 4, 3), (4,)),  # t without level axis (would broadcast silently)
        ((4, 3), (2, 4, 3), (2, 1)),  # t shared across examples (would broadcast silently)
        ((4, 3), (2, 4, 3), (3, 4)),  # t with too many levels
        ((4, 3), (2, 4, 3), (2, 4, 1)),
    ],
)
def test_bad_shapes_raise(x1_shape, x0_shape, t_shape):
    with pytest.raises(ValueError, match=r"x0|t must"):
        training_pair(torch.zeros(x1_shape), torch.zeros(x0_shape), torch.zeros(t_shape))


def test_bad_shapes_raise_in_each_function():
    x1, x0, t = _draw(2, 4, (3,), torch.float64, 1)
    with pytest.raises(ValueError, match="x0"):
        residuals(x1, x0[:, :3])
    with pytest.raises(ValueError, match="x0"):
        regression_target(x1, x0[:, :1])  # would broadcast silently
    with pytest.raises(ValueError, match="y"):
        interpolate_states(x0, residuals(x1, x0)[:, :, :2], t)
    with pytest.raises(ValueError, match="y"):
        interpolate_states(x0, residuals(x1, x0)[:1], t)
    with pytest.raises(ValueError, match="t"):
        interpolate_states(x0, residuals(x1, x0), t[:, :2])
