"""Step allocation: enumeration of NFE splits and HRFEstimator.tune_steps."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from hrflow import HRFEstimator
from hrflow.metrics import sliced_wasserstein, wasserstein_1d
from hrflow.step_allocation import allocation_score, step_allocations

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = dict(hidden_size=32, n_layers=2, embedding_dim=8, batch_size=128, device="cpu")


# ---------------------------------------------------------------------------
# enumeration
# ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 3))
def test_step_allocations_are_every_exact_split(nfe, depth):
    got = step_allocations(nfe, depth)
    brute = [s for s in itertools.product(range(1, nfe + 1), repeat=depth) if math.prod(s) == nfe]
    assert got == sorted(brute)  # all of them, each once, lexicographic


def test_step_allocations_examples_and_bad_input():
    assert step_allocations(100, 2) == [(1, 100), (2, 50), (4, 25), (5, 20), (10, 10),
                                        (20, 5), (25, 4), (50, 2), (100, 1)]
    assert step_allocations(7, 1) == [(7,)]
    assert step_allocations(1, 3) == [(1, 1, 1)]
    with pytest.raises(ValueError, match="nfe"):
        step_allocations(0, 2)
    with pytest.raises(TypeError, match="depth"):
        step_allocations(10, 2.0)


def test_allocation_score():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(50, 2)), rng.normal(size=(60, 2))
    assert allocation_score(A, B, random_state=3) == sliced_wasserstein(A, B, random_state=3)
    assert allocation_score(A[:, :1], B[:, :1], "wasserstein") == wasserstein_1d(A[:, :1], B[:, :1])
    assert allocation_score(A, B, lambda a, b: 4.0) == 4.0
    A[0, 0] = np.nan
    assert allocation_score(A, B) == math.inf
    with pytest.raises(ValueError, match="1-D"):
        allocation_score(B, B, "wasserstein")
    with pytest.raises(ValueError, match="criterion"):
        allocation_score(B, B, "energy")


# ---------------------------------------------------------------------------
# tune_steps
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data2d():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 4.0], [4.0, 0.0], [-4.0, -2.0]])

    def draw(n):
        return centres[rng.integers(3, size=n)] + 0.4 * rng.normal(size=(n, 2))

    return draw(3000), draw(1000)


@pytest.fixture(scope="module")
def fitted2(data2d):
    X, _ = data2d
    return HRFEstimator(depth=2, n_iter=300, learning_rate=3e-3, random_state=0, **SMALL).fit(X)


def test_tune_steps_picks_the_best_of_an_exhaustive_grid(fitted2, data2d):
    import copy

    _, X_val = data2d
    est = copy.deepcopy(fitted2)
    assert est.tune_steps(X_val, nfe=24, n_samples=800, random_state=5) is est
    # the exhaustive grid, evaluated separately with the same seeds
    grid = step_allocations(24, 2)
    scores = [sliced_wasserstein(est.sample(800, steps=s, random_state=5), X_val, random_state=5)
              for s in grid]
    res = est.tune_results_
    assert res["steps"] == grid
    np.testing.assert_allclose(res["score"], scores, rtol=1e-12)
    assert est.steps_ == grid[int(np.argmin(scores))]
    assert list(res["nfe"]) == [24] * len(grid)
    assert res["rank"][int(np.argmin(scores))] == 1 and sorted(res["rank"]) == list(range(1, 9))
    # the choice is not trivial: the splits differ in quality
    assert max(scores) > 1.5 * min(scores)
    # and it becomes the default of sample
    np.testing.assert_array_equal(est.sample(5, random_state=0),
                                  est.sample(5, steps=est.steps_, random_state=0))


def test_tune_steps_with_candidates_and_a_callable_criterion(fitted2, data2d):
    import copy

    _, X_val = data2d
    est = copy.deepcopy(fitted2)
    calls = []

    def crit(X_gen, X):
        calls.append((X_gen.shape, X.shape))
        return -float(len(calls))  # the last candidate scores lowest

    est.tune_steps(X_val[:100], candidates=[(2, 2), (3, 1), [1, 5]], criterion=crit,
                   random_state=0)
    assert est.steps_ == (1, 5)
    assert calls == [((100, 2), (100, 2))] * 3
    assert list(est.tune_results_["nfe"]) == [4, 3, 5]


def test_tune_steps_wasserstein_in_1d_and_seed_from_the_estimator():
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(-3, 0.3, 1000), rng.normal(3, 0.3, 1000)])[:, None]
    est = HRFEstimator(depth=2, n_iter=50, random_state=0, **SMALL).fit(X)
    a = est.tune_steps(X[:300], nfe=6, criterion="wasserstein").tune_results_["score"]
    b = est.tune_steps(X[:300], nfe=6, criterion="wasserstein").tune_results_["score"]
    np.testing.assert_array_equal(a, b)  # random_state=None: the estimator's int seed
    seed = int(np.random.RandomState(0).randint(0, 2**31 - 1))
    ref = [wasserstein_1d(est.sample(300, steps=s, random_state=seed), X[:300])
           for s in step_allocations(6, 2)]
    np.testing.assert_allclose(a, ref, rtol=1e-12)


def test_tune_steps_depth_1_and_3():
    X = np.random.default_rng(0).normal(size=(200, 2))
    est1 = HRFEstimator(depth=1, n_iter=5, random_state=0, **SMALL).fit(X)
    assert est1.tune_steps(X[:50], nfe=9, random_state=0).steps_ == (9,)
    est3 = HRFEstimator(depth=3, n_iter=5, random_state=0, **SMALL).fit(X)
    est3.tune_steps(X[:50], nfe=4, random_state=0)
    assert est3.tune_results_["steps"] == step_allocations(4, 3)
    assert est3.steps_ in step_allocations(4, 3)


def test_tune_steps_bad_input(fitted2, data2d):
    import copy

    _, X_val = data2d
    est = copy.deepcopy(fitted2)
    with pytest.raises(ValueError, match="1-D"):
        est.tune_steps(X_val, nfe=4, criterion="wasserstein")
    with pytest.raises(ValueError, match="criterion"):
        est.tune_steps(X_val, nfe=4, criterion="mmd")
    with pytest.raises(ValueError, match="nfe"):
        est.tune_steps(X_val, nfe=0)
    with pytest.raises(ValueError, match="steps"):
        est.tune_steps(X_val, candidates=[(2, 2, 2)])
    with pytest.raises(ValueError, match="candidates"):
        est.tune_steps(X_val, candidates=[])
    with pytest.raises(ValueError, match="features"):
        est.tune_steps(X_val[:, :1], nfe=4)
    with pytest.raises(ValueError, match="n_samples"):
        est.tune_steps(X_val, nfe=4, n_samples=0)
    with pytest.raises(NotFittedError):
        HRFEstimator().tune_steps(X_val)
    assert not hasattr(est, "tune_results_")  # nothing half-done


def test_tuned_steps_survive_save_and_load(fitted2, data2d, tmp_path):
    import copy

    _, X_val = data2d
    est = copy.deepcopy(fitted2).tune_steps(X_val[:100], nfe=6, random_state=0)
    loaded = HRFEstimator.load(est.save(tmp_path / "m.hrf"))
    assert loaded.steps_ == est.steps_
    assert loaded.tune_results_["steps"] == est.tune_results_["steps"]
    np.testing.assert_array_equal(loaded.tune_results_["score"], est.tune_results_["score"])


def test_tune_steps_compares_integer_samples_with_quantised_data():
    # with n_bins the model's samples are continuous in [0, n_bins); the data are integers:
    # the candidates are scored on the floored samples, the model's discrete samples
    rng = np.random.default_rng(3)
    X = rng.integers(0, 5, size=(200, 4))
    est = HRFEstimator(depth=2, n_iter=20, n_bins=5, random_state=0, **SMALL).fit(X)
    est.tune_steps(X[:100], nfe=4, random_state=2)
    floored = [sliced_wasserstein(np.floor(est.sample(100, steps=s, random_state=2)), X[:100],
                                  random_state=2) for s in est.tune_results_["steps"]]
    np.testing.assert_allclose(est.tune_results_["score"], floored, rtol=1e-12)
