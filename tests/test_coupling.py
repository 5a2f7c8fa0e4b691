"""Mini-batch OT couplings: pairing optimality, sinkhorn, per-level coupling, estimator wiring."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.optimize import linear_sum_assignment

from hrflow import HRFEstimator, hierarchy
from hrflow.coupling import (
    CouplingDensityWarning,
    apply_pairing,
    couple_sources,
    coupled_levels,
    ot_pairing,
    pairing_cost,
    squared_distances,
)
from hrflow.metrics import wasserstein_1d


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small models and many small ops: one torch thread is fastest on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def brute_force_min_cost(x0, x1):
    """Smallest mean squared distance over every permutation (tiny batches only)."""
    n = x0.shape[0]
    C = ((x0[:, None, :] - x1[None, :, :]) ** 2).sum(-1)
    return min(C[list(p), range(n)].mean() for p in itertools.permutations(range(n)))


finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def batches(draw, max_n=6):
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, 3))
    x0 = draw(arrays(np.float64, (n, d), elements=finite))
    x1 = draw(arrays(np.float64, (n, d), elements=finite))
    return x0, x1


# ---------------------------------------------------------------------------
# exact pairing
# ---------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(batches())
def test_exact_pairing_is_a_permutation_minimising_the_batch_cost(pair):
    x0, x1 = pair
    perm = ot_pairing(torch.as_tensor(x0), torch.as_tensor(x1))
    assert perm.dtype == torch.long and perm.shape == (x0.shape[0],)
    assert sorted(perm.tolist()) == list(range(x0.shape[0]))
    best = brute_force_min_cost(x0, x1)
    assert pairing_cost(x0, x1, perm) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_exact_pairing_with_ties_is_still_a_permutation():
    # all points equal: every permutation is optimal (a degenerate plan)
    x0 = torch.zeros(5, 2, dtype=torch.float64)
    x1 = torch.ones(5, 2, dtype=torch.float64)
    perm = ot_pairing(x0, x1)
    assert sorted(perm.tolist()) == list(range(5))


def test_exact_pairing_matches_linear_sum_assignment_on_a_larger_batch():
    g = np.random.default_rng(0)
    x0, x1 = g.normal(size=(64, 3)), g.normal(size=(64, 3)) + 1.0
    perm = ot_pairing(x0, x1)
    rows, cols = linear_sum_assignment(squared_distances(x0, x1))
    assert pairing_cost(x0, x1, perm) == pytest.approx(
        squared_distances(x0, x1)[rows, cols].mean(), rel=1e-12
    )


def test_pairing_of_images_flattens_events():
    g = gen(0)
    x0 = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    x1 = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    perm = ot_pairing(x0, x1)
    assert pairing_cost(x0, x1, perm) == pytest.approx(
        brute_force_min_cost(x0.reshape(6, -1).numpy(), x1.reshape(6, -1).numpy()), rel=1e-12
    )
    assert apply_pairing(x0, perm).shape == x0.shape


def test_squared_distances_is_the_pairwise_squared_euclidean_matrix():
    g = np.random.default_rng(1)
    a, b = g.normal(size=(4, 3)), g.normal(size=(5, 3))
    ref = np.array([[np.sum((u - v) ** 2) for v in b] for u in a])
    np.testing.assert_allclose(squared_distances(a, b), ref, rtol=1e-12)


# ---------------------------------------------------------------------------
# sinkhorn pairing
# ---------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(batches(max_n=8), st.sampled_from([0.01, 0.1, 1.0]), st.integers(0, 2**16))
def test_sinkhorn_pairing_is_a_valid_assignment(pair, reg, seed):
    x0, x1 = pair
    perm = ot_pairing(x0, x1, method="sinkhorn", reg=reg, generator=gen(seed))
    assert perm.dtype == torch.long and perm.shape == (x0.shape[0],)
    assert perm.min() >= 0 and perm.max() < x0.shape[0]
    # an assignment (partners may repeat), so its cost is not bounded by the optimal
    # permutation's, only by the cheapest partner of every point
    C = squared_distances(x0, x1)
    assert pairing_cost(x0, x1, perm) >= C.min(axis=0).mean() - 1e-9


def test_sinkhorn_cost_tends_to_the_exact_cost_as_reg_vanishes():
    g = np.random.default_rng(2)
    x0, x1 = g.normal(size=(48, 2)), g.normal(size=(48, 2)) + np.array([2.0, 0.0])
    exact = pairing_cost(x0, x1, ot_pairing(x0, x1))
    independent = squared_distances(x0, x1).mean()  # expected cost of a random pairing

    def mean_cost(reg, reps=8):
        return np.mean([pairing_cost(x0, x1, ot_pairing(x0, x1, "sinkhorn", reg, gen(s)))
                        for s in range(reps)])

    costs = [mean_cost(reg) for reg in (10.0, 0.1, 0.01, 0.002)]
    # a huge reg gives (nearly) the independent plan, a tiny one (nearly) the exact plan
    # (seen: 6.85 vs 6.84 independent; 3.56 vs 3.53 exact)
    assert costs[0] == pytest.approx(independent, rel=0.15)
    assert costs[-1] == pytest.approx(exact, rel=0.02)
    assert costs[0] > costs[1] > costs[2] > costs[3] >= exact


def test_sinkhorn_with_a_tiny_reg_takes_the_log_domain_and_finds_the_permutation():
    # the plain kernel exp(-C / reg) underflows for reg = 1e-4: the log-domain iterations run
    g = np.random.default_rng(4)
    x0, x1 = g.normal(size=(5, 2)), g.normal(size=(5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # POT: "did not converge" at 1000 iterations
        perm = ot_pairing(x0, x1, "sinkhorn", 1e-4, gen(0))
    assert torch.equal(perm, ot_pairing(x0, x1))


def test_sinkhorn_pairing_is_reproducible_and_needs_a_generator():
    g = np.random.default_rng(3)
    x0, x1 = g.normal(size=(10, 2)), g.normal(size=(10, 2))
    a = ot_pairing(x0, x1, "sinkhorn", 0.05, gen(7))
    b = ot_pairing(x0, x1, "sinkhorn", 0.05, gen(7))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="generator"):
        ot_pairing(x0, x1, "sinkhorn", 0.05)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "hungarian"}, "method"),
        ({"method": "sinkhorn", "reg": 0.0}, "reg"),
        ({"method": "sinkhorn", "reg": -1.0}, "reg"),
    ],
)
def test_ot_pairing_bad_arguments(kwargs, match):
    x = np.zeros((3, 1))
    with pytest.raises(ValueError, match=match):
        ot_pairing(x, x + 1, generator=gen(0), **kwargs)


def test_ot_pairing_rejects_unequal_batches_and_event_sizes():
    with pytest.raises(ValueError, match="batch size"):
        ot_pairing(np.zeros((3, 1)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="event size"):
        ot_pairing(np.zeros((3, 1)), np.zeros((3, 2)))


# ---------------------------------------------------------------------------
# per-level coupling of the hierarchy's source draws
# ---------------------------------------------------------------------------


def test_coupled_levels():
    assert coupled_levels("independent", 3) == ()
    assert coupled_levels("ot_location", 3) == (0,)
    assert coupled_levels("ot_all", 3) == (0, 1, 2)
    assert coupled_levels("ot_all", 1) == (0,)
    with pytest.raises(ValueError, match="coupling"):
        coupled_levels("ot", 2)
    with pytest.raises(ValueError, match="depth"):
        coupled_levels("ot_all", 0)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_couple_sources_pairs_every_level_with_its_residual_endpoint(depth):
    g = gen(depth)
    n = 7
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 3
    x0 = torch.randn(depth, n, 2, generator=g, dtype=torch.float64)
    out = couple_sources(x1, x0, coupled_levels("ot_all", depth))
    y = hierarchy.residuals(x1, out)  # y[k] = x1 - sum_{j<k} out[j]
    for k in range(depth):
        # each level is a permutation of its own draws ...
        assert torch.equal(torch.sort(out[k].flatten()).values, torch.sort(x0[k].flatten()).values)
        # ... that minimises the cost against the level's endpoint y_k
        best = brute_force_min_cost(out[k].numpy(), y[k].numpy())
        assert pairing_cost(out[k], y[k], torch.arange(n)) == pytest.approx(best, rel=1e-9)


def test_couple_sources_ot_location_leaves_inner_levels_alone():
    g = gen(0)
    x1 = torch.randn(6, 1, generator=g, dtype=torch.float64)
    x0 = torch.randn(2, 6, 1, generator=g, dtype=torch.float64)
    out = couple_sources(x1, x0, coupled_levels("ot_location", 2))
    assert torch.equal(out[1], x0[1])
    assert not torch.equal(out[0], x0[0]) or torch.equal(ot_pairing(x0[0], x1), torch.arange(6))
    # 1-D: the optimal pairing is monotone
    order = torch.argsort(x1[:, 0])
    assert torch.all(torch.diff(out[0][order, 0]) >= 0)
    indep = couple_sources(x1, x0, ())
    assert torch.equal(indep, x0) and indep is not x0


def test_ot_all_makes_the_inner_source_depend_on_the_location_state():
    # The documented caveat of coupling="ot_all": pairing v0 = x0^(1) with y_1 = x1 - x0^(0)
    # across the batch ties v0 to the location draw (at t_0 = 0 the location state), while
    # the sampler draws v0 ~ N(0, I) independently of it. With the location level alone
    # coupled, v0 stays independent. Bimodal 1-D target: corr(v0, x0) is about -0.33.
    g = gen(0)
    n, reps = 512, 4
    corr = {}
    for name, levels in (("ot_location", (0,)), ("ot_all", (0, 1))):
        values = []
        for _ in range(reps):
            x1 = torch.where(torch.rand(n, 1, generator=g) < 0.5, -1.0, 1.0).double()
            x1 = x1 + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
            x0 = torch.randn(2, n, 1, generator=g, dtype=torch.float64)
            out = couple_sources(x1, x0, levels)
            values.append(torch.corrcoef(torch.stack([out[0, :, 0], out[1, :, 0]]))[0, 1].item())
        corr[name] = np.mean(values)
    se = 1 / math.sqrt(n * reps)  # standard error of a correlation of independent draws
    assert abs(corr["ot_location"]) < 4 * se
    assert corr["ot_all"] < -0.2


def test_couple_sources_bad_input():
    x1 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="x0"):
        couple_sources(x1, torch.zeros(2, 3, 2), (0,))
    with pytest.raises(ValueError, match="levels"):
        couple_sources(x1, torch.zeros(2, 4, 2), (2,))


# ---------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------


def bimodal(n, seed):
    g = np.random.default_rng(seed)
    return (np.where(g.random(n) < 0.5, -2.0, 2.0) + 0.2 * g.normal(size=n))[:, None]


SMALL = dict(hidden_size=32, n_layers=2, embedding_dim=8, batch_size=64, device="cpu")


@pytest.mark.parametrize("coupling", ["independent", "ot_location", "ot_all"])
@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_estimator_with_each_coupling_fits_and_samples(coupling, method):
    X = np.random.default_rng(0).normal(size=(200, 2))
    est = HRFEstimator(depth=2, n_iter=20, coupling=coupling, coupling_method=method,
                       random_state=0, **SMALL).fit(X)
    S = est.sample(50, steps=(2, 2), random_state=0)
    assert S.shape == (50, 2) and np.all(np.isfinite(S))
    assert len(est.loss_curve_) == 20 and np.all(np.isfinite(est.loss_curve_))
    assert est.coupled_ is (coupling != "independent")


@pytest.mark.parametrize("coupling, depth", [("ot_location", 2), ("ot_all", 2), ("ot_all", 3)])
def test_training_batches_are_ot_paired_before_the_hierarchy_math(monkeypatch, coupling, depth):
    seen = []
    original = hierarchy.training_pair

    def spy(x1, x0, t):
        seen.append((x1.detach().clone(), x0.detach().clone()))
        return original(x1, x0, t)

    monkeypatch.setattr(hierarchy, "training_pair", spy)
    X = np.random.default_rng(1).normal(size=(100, 2))
    HRFEstimator(depth=depth, n_iter=3, coupling=coupling, dtype="float64", random_state=0,
                 **{**SMALL, "batch_size": 7}).fit(X)
    assert len(seen) == 3
    for x1, x0 in seen:
        y = hierarchy.residuals(x1, x0)
        levels = coupled_levels(coupling, depth)
        for k in range(depth):
            cost = pairing_cost(x0[k], y[k], torch.arange(7))
            best = brute_force_min_cost(x0[k].numpy(), y[k].numpy())
            if k in levels:
                assert cost == pytest.approx(best, rel=1e-9)
        if 1 not in levels and depth > 1:  # inner draws untouched: generally not optimal
            assert any(
                pairing_cost(x0_[1], hierarchy.residuals(x1_, x0_)[1], torch.arange(7))
                > brute_force_min_cost(x0_[1].numpy(), hierarchy.residuals(x1_, x0_)[1].numpy())
                + 1e-9
                for x1_, x0_ in seen
            )


def test_ot_coupling_makes_one_step_rectified_flow_accurate_in_1d():
    # Independent RF, one Euler step at t = 0, moves every point to E[x1] (a collapse onto
    # the mean of a bimodal target); with the OT coupling the 1-D pairing is the monotone
    # map and one step already lands near the target.
    X, X_test = bimodal(2000, 0), bimodal(2000, 1)
    w = {}
    for coupling in ("independent", "ot_location"):
        est = HRFEstimator(depth=1, n_iter=400, coupling=coupling, learning_rate=1e-2,
                           random_state=0, **{**SMALL, "batch_size": 128}).fit(X)
        w[coupling] = wasserstein_1d(est.sample(2000, steps=(1,), random_state=1), X_test)
    # seen: 1.78 and 0.27
    assert w["independent"] > 1.2  # close to the collapse value E|x1| ~ 2
    assert w["ot_location"] < 0.4 * w["independent"]


def test_score_samples_of_a_coupled_model_warns_or_refuses():
    X = np.random.default_rng(0).normal(size=(100, 1))
    est = HRFEstimator(depth=2, n_iter=5, coupling="ot_location", random_state=0, **SMALL).fit(X)
    with pytest.warns(CouplingDensityWarning, match="Theorem 1"):
        logp = est.score_samples(X[:5])
    assert np.all(np.isfinite(logp))
    with pytest.raises(ValueError, match="algorithm 4"):
        est.log_density(X[:5], algorithm=4)
    with pytest.raises(ValueError, match="algorithm 4"), warnings.catch_warnings():
        est.set_params(density_algorithm=4).score(X[:5])


@pytest.mark.parametrize("depth, coupling", [(1, "ot_location"), (1, "ot_all"), (2, "independent")])
def test_exact_densities_do_not_warn(depth, coupling):
    X = np.random.default_rng(0).normal(size=(100, 1))
    est = HRFEstimator(depth=depth, n_iter=5, coupling=coupling, random_state=0, **SMALL).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isfinite(est.score_samples(X[:5])))
    if depth == 2:
        est.log_density(X[:5], algorithm=4)


def test_refit_without_coupling_clears_the_flag():
    X = np.random.default_rng(0).normal(size=(100, 1))
    est = HRFEstimator(depth=2, n_iter=3, coupling="ot_all", random_state=0, **SMALL).fit(X)
    assert est.coupled_
    assert not est.set_params(coupling="independent").fit(X).coupled_


@pytest.mark.parametrize(
    "params",
    [{"coupling": "ot"}, {"coupling_method": "hungarian"}, {"coupling_reg": 0.0}],
)
def test_bad_coupling_parameters(params):
    X = np.random.default_rng(0).normal(size=(20, 1))
    with pytest.raises(ValueError, match=next(iter(params))):
        HRFEstimator(n_iter=1, **params).fit(X)
