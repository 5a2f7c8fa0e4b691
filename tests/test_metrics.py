"""Tests of hrflow.metrics against hand-computed values and closed forms."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hrflow.metrics import bits_per_dim, sliced_wasserstein, wasserstein_1d

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------- wasserstein_1d


@pytest.mark.parametrize(
    ("X", "Y", "expected"),
    [
        ([0.0, 1.0, 3.0], [5.0, 6.0, 8.0], 5.0),  # pure shift by 5
        ([0.0], [0.0, 2.0], 1.0),  # half the mass moves by 2
        ([0.0, 1.0], [0.5], 0.5),  # each half moves by 0.5
        # quantile functions on quarters: |0-0|, |1-0|, |2-4|, |3-4| -> (0 + 1 + 2 + 1) / 4
        ([0.0, 1.0, 2.0, 3.0], [0.0, 4.0], 1.0),
        ([2.0, -1.0, 7.0], [7.0, 2.0, -1.0], 0.0),  # order does not matter
    ],
)
def test_wasserstein_1d_hand_values(X, Y, expected):
    assert wasserstein_1d(X, Y) == pytest.approx(expected, abs=1e-12)
    assert wasserstein_1d(Y, X) == pytest.approx(expected, abs=1e-12)


def test_wasserstein_1d_accepts_column_vectors():
    x = np.array([0.0, 1.0, 3.0])
    assert wasserstein_1d(x[:, None], x[:, None] + 2.0) == pytest.approx(2.0, abs=1e-12)
    assert wasserstein_1d(x, x[:, None] - 2.0) == pytest.approx(2.0, abs=1e-12)
    assert isinstance(wasserstein_1d(x, x), float)


@settings(deadline=None, max_examples=40)
@given(x=arrays(np.float64, st.integers(1, 30), elements=finite), shift=finite)
def test_wasserstein_1d_of_shifted_sample_is_the_shift(x, shift):
    assert wasserstein_1d(x, x + shift) == pytest.approx(abs(shift), rel=1e-9, abs=1e-9)


@settings(deadline=None, max_examples=40)
@given(data=st.data(), n=st.integers(1, 25))
def test_wasserstein_1d_matches_sorted_matching(data, n):
    # equal sizes: the optimal plan matches the sorted samples
    x = data.draw(arrays(np.float64, n, elements=finite))
    y = data.draw(arrays(np.float64, n, elements=finite))
    expected = np.mean(np.abs(np.sort(x) - np.sort(y)))
    assert wasserstein_1d(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 2)), np.zeros((2, 1, 1)), np.zeros(0), np.array([0.0, np.nan]), np.array([np.inf])],
)
def test_wasserstein_1d_refuses_bad_shapes_and_values(bad):
    with pytest.raises(ValueError, match="'X'"):
        wasserstein_1d(bad, [0.0, 1.0])
    with pytest.raises(ValueError, match="'Y'"):
        wasserstein_1d([0.0, 1.0], bad)


# ------------------------------------------------------------ sliced_wasserstein


def _two_clouds(seed=0, n=300, d=2):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n + 17, d)) + 0.3


def test_sliced_wasserstein_of_identical_sets_is_zero():
    X, _ = _two_clouds()
    assert sliced_wasserstein(X, X, random_state=0) == 0.0
    assert sliced_wasserstein(X, X[::-1].copy(), random_state=1) == pytest.approx(0.0, abs=1e-12)


def test_sliced_wasserstein_one_dimension_is_exact_w2():
    # in 1-D every direction is +-1, so SW2 is the exact W2 of the sorted matching
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=50), rng.exponential(size=50)
    expected = math.sqrt(np.mean((np.sort(x) - np.sort(y)) ** 2))
    assert sliced_wasserstein(x, y, n_projections=3, random_state=0) == pytest.approx(expected, rel=1e-10)
    assert sliced_wasserstein(x[:, None], y[:, None], random_state=5) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(
    ("d", "shift"), [(2, [3.0, 4.0]), (3, [1.0, -2.0, 2.0]), (5, [0.0, 0.0, 0.0, 0.0, 2.0])]
)
def test_sliced_wasserstein_of_shifted_sets(d, shift):
    # each direction u sees the projected shift <u, s> exactly (sorting commutes with a shift),
    # so SW2^2 is the mean of <u, s>^2 over the L directions. For uniform directions
    # E<u, s>^2 = |s|^2 / d and, for s along an axis (the worst case), the relative standard
    # deviation of <u, s>^2 is sqrt(d^2 E u_1^4 - 1) = sqrt(3 d / (d + 2) - 1): allow 5 of them.
    rng = np.random.default_rng(d)
    X = rng.normal(size=(40, d))
    s = np.asarray(shift)
    L = 5_000
    sw = sliced_wasserstein(X, X + s, n_projections=L, random_state=0)
    expected = np.linalg.norm(s) / math.sqrt(d)
    rel_sd = math.sqrt(3 * d / (d + 2) - 1) / math.sqrt(L)
    assert sw**2 == pytest.approx(expected**2, rel=5 * rel_sd)


def test_sliced_wasserstein_between_gaussians_of_different_scale():
    # X ~ N(0, I), Y ~ N(0, 4 I): every projection compares N(0, 1) with N(0, 4), W2 = |1 - 2| = 1
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 2))
    Y = 2.0 * rng.normal(size=(4000, 2))
    assert sliced_wasserstein(X, Y, n_projections=100, random_state=0) == pytest.approx(1.0, abs=0.06)


def test_sliced_wasserstein_matches_brute_force_over_many_directions():
    # independent implementation: own directions, sorted matching for equal sizes
    rng = np.random.default_rng(11)
    X = rng.normal(size=(100, 3))
    Y = rng.standard_t(df=4, size=(100, 3)) * [1.0, 2.0, 0.5]
    U = rng.normal(size=(3, 4000))
    U /= np.linalg.norm(U, axis=0)
    proj_x, proj_y = np.sort(X @ U, axis=0), np.sort(Y @ U, axis=0)
    brute = math.sqrt(np.mean((proj_x - proj_y) ** 2))
    assert sliced_wasserstein(X, Y, n_projections=4000, random_state=0) == pytest.approx(brute, rel=0.03)


def test_sliced_wasserstein_is_deterministic_given_random_state():
    X, Y = _two_clouds()
    a = sliced_wasserstein(X, Y, n_projections=10, random_state=42)
    assert sliced_wasserstein(X, Y, n_projections=10, random_state=42) == a
    assert sliced_wasserstein(X, Y, n_projections=10, random_state=np.random.default_rng(42)) == a
    assert sliced_wasserstein(X, Y, n_projections=10, random_state=43) != a
    # a shared Generator advances: two calls give two different draws
    g = np.random.default_rng(0)
    assert sliced_wasserstein(X, Y, n_projections=10, random_state=g) != sliced_wasserstein(
        X, Y, n_projections=10, random_state=g
    )
    assert isinstance(a, float) and a > 0


def test_sliced_wasserstein_validation():
    X, Y = _two_clouds()
    with pytest.raises(ValueError, match="same number of features"):
        sliced_wasserstein(X, Y[:, :1])
    with pytest.raises(ValueError, match="'n_projections'"):
        sliced_wasserstein(X, Y, n_projections=0)
    with pytest.raises(TypeError, match="'n_projections'"):
        sliced_wasserstein(X, Y, n_projections=2.5)
    with pytest.raises(ValueError, match="'X'"):
        sliced_wasserstein(np.zeros((0, 2)), Y)
    with pytest.raises(ValueError, match="'Y'"):
        sliced_wasserstein(X, np.full((3, 2), np.nan))
    with pytest.raises(TypeError, match="'random_state'"):
        sliced_wasserstein(X, Y, random_state="seed")


# ------------------------------------------------------------------ bits_per_dim


def test_bits_per_dim_continuous_hand_values():
    ln2 = math.log(2.0)
    assert bits_per_dim(-ln2, n_features=1) == pytest.approx(1.0, rel=1e-15)
    assert bits_per_dim(-10 * ln2, n_features=5) == pytest.approx(2.0, rel=1e-15)
    assert bits_per_dim(0.0, n_features=3) == 0.0
    # a density above 1 gives negative bits
    assert bits_per_dim(2 * ln2, n_features=2) == pytest.approx(-1.0, rel=1e-15)
    # standard normal at 0 in d = 1: 0.5 ln(2 pi) nats
    assert bits_per_dim(-0.5 * math.log(2 * math.pi), 1) == pytest.approx(1.3257480647361593, rel=1e-12)


@pytest.mark.parametrize("d", [1, 3, 3 * 32 * 32])
def test_bits_per_dim_eight_bit_is_continuous_plus_seven(d):
    lp = np.array([-5.0, -1234.5, 17.25]) * d
    np.testing.assert_allclose(
        bits_per_dim(lp, d, n_bins=256), bits_per_dim(lp, d) + 7.0, rtol=0, atol=1e-12
    )


@pytest.mark.parametrize("n_bins", [2, 17, 256])
@pytest.mark.parametrize("d", [1, 3, 64, 3 * 32 * 32])
def test_bits_per_dim_uniform_model_costs_log2_bins(d, n_bins):
    # the uniform density on [-1, 1)^d has log p_z = -d ln 2, so bpd = log2(n_bins)
    assert bits_per_dim(-d * math.log(2.0), d, n_bins=n_bins) == pytest.approx(math.log2(n_bins), rel=1e-12)


@settings(deadline=None, max_examples=50)
@given(lp=finite, d=st.integers(1, 10_000), n_bins=st.integers(2, 1024))
def test_bits_per_dim_quantised_shift(lp, d, n_bins):
    shift = bits_per_dim(lp, d, n_bins=n_bins) - bits_per_dim(lp, d)
    assert shift == pytest.approx(math.log2(n_bins) - 1.0, abs=1e-9)


def test_bits_per_dim_shapes_and_types():
    lp = -np.arange(6.0).reshape(2, 3)
    out = bits_per_dim(lp, 2)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3) and out.dtype == np.float64
    np.testing.assert_allclose(out, np.arange(6.0).reshape(2, 3) / (2 * math.log(2.0)))
    assert isinstance(bits_per_dim(-1.0, 1), float)
    assert isinstance(bits_per_dim(np.float32(-1.0), 1), float)
    t = torch.tensor([-math.log(2.0), -2 * math.log(2.0)], dtype=torch.float64)
    np.testing.assert_allclose(bits_per_dim(t, 1), [1.0, 2.0])
    assert bits_per_dim([], 1).shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_features": 0}, ValueError, "'n_features'"),
        ({"n_features": 2.0}, TypeError, "'n_features'"),
        ({"n_features": True}, TypeError, "'n_features'"),
        ({"n_features": 2, "n_bins": 1}, ValueError, "'n_bins'"),
        ({"n_features": 2, "n_bins": 256.0}, TypeError, "'n_bins'"),
    ],
)
def test_bits_per_dim_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        bits_per_dim(-1.0, **kwargs)


def test_bits_per_dim_refuses_nan_and_keeps_a_zero_density():
    with pytest.raises(ValueError, match="NaN"):
        bits_per_dim(np.array([0.0, np.nan]), 2)
    assert bits_per_dim(-np.inf, 2) == np.inf  # a zero density costs infinitely many bits
