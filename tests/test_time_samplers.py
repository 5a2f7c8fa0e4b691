"""Training-time distributions: samples follow time_cdf, time_pdf is its derivative."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from hrflow import HRFEstimator
from hrflow.time_samplers import TIME_SAMPLERS, sample_times, time_cdf, time_pdf


def draw(kind, n=20_000, seed=0, dtype=torch.float64):
    return sample_times(kind, n, torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
def test_samples_follow_the_stated_cdf_kolmogorov_smirnov(kind):
    t = draw(kind).numpy()
    res = stats.kstest(t, lambda s: time_cdf(kind, s).numpy())
    # fixed seed: deterministic; the 1% critical value of the KS statistic is 1.63 / sqrt(n)
    assert res.statistic < 1.63 / math.sqrt(t.size)
    assert res.pvalue > 1e-3


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
def test_kolmogorov_smirnov_detects_a_wrong_distribution(kind):
    # the same check has power: against the other samplers' CDFs it rejects
    t = draw(kind).numpy()
    for other in TIME_SAMPLERS:
        if other != kind:
            assert stats.kstest(t, lambda s, o=other: time_cdf(o, s).numpy()).pvalue < 1e-6


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
def test_pdf_integrates_to_one(kind):
    total, err = integrate.quad(lambda s: float(time_pdf(kind, s)), 0.0, 1.0, limit=200)
    assert total == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
def test_pdf_is_the_derivative_of_the_cdf(kind):
    s = np.linspace(0.02, 0.98, 49)
    h = 1e-6
    fd = (time_cdf(kind, s + h) - time_cdf(kind, s - h)).numpy() / (2 * h)
    np.testing.assert_allclose(time_pdf(kind, s).numpy(), fd, rtol=1e-6)


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
def test_cdf_end_points_and_monotone(kind):
    c = time_cdf(kind, np.linspace(1e-9, 1 - 1e-9, 1001)).numpy()
    assert c[0] == pytest.approx(0.0, abs=1e-6) and c[-1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(c) > 0)


def test_u_shaped_density_is_proportional_to_cosh():
    s = np.linspace(0.0, 1.0, 11)
    ratio = time_pdf("u_shaped", s).numpy() / np.cosh(4 * (s - 0.5))
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)
    # normalising constant: integral of cosh(4(t - 1/2)) over [0, 1] = sinh(2) / 2
    assert ratio[0] == pytest.approx(2 / math.sinh(2), rel=1e-12)


@pytest.mark.parametrize("kind", TIME_SAMPLERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_shape_dtype_range_and_determinism(kind, dtype):
    t = draw(kind, n=1000, seed=3, dtype=dtype)
    assert t.shape == (1000,) and t.dtype == dtype
    assert bool(((t >= 0) & (t <= 1)).all())
    assert torch.equal(t, draw(kind, n=1000, seed=3, dtype=dtype))


def test_sampling_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    for kind in TIME_SAMPLERS:
        draw(kind, n=10)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("fn", [time_pdf, time_cdf])
def test_unknown_kind(fn):
    with pytest.raises(ValueError, match="time sampler"):
        fn("beta", 0.5)
    with pytest.raises(ValueError, match="time sampler"):
        sample_times("beta", 3, torch.Generator())


# ---------------------------------------------------------------------------
# the estimator's time_sampler parameter
# ---------------------------------------------------------------------------

SMALL = dict(hidden_size=16, n_layers=1, embedding_dim=4, batch_size=32, n_iter=3, device="cpu")


@pytest.mark.parametrize("time_sampler", ["u_shaped", ("u_shaped", "logit_normal"), ["uniform", "uniform"]])
def test_estimator_accepts_one_or_per_level_samplers(time_sampler):
    X = np.random.default_rng(0).normal(size=(50, 2))
    est = HRFEstimator(depth=2, time_sampler=time_sampler, random_state=0, **SMALL).fit(X)
    assert np.all(np.isfinite(est.sample(4, steps=(2, 2), random_state=0)))


def test_estimator_draws_the_training_times_from_each_levels_sampler(monkeypatch):
    from hrflow import hierarchy

    seen = []
    original = hierarchy.training_pair

    def spy(x1, x0, t):
        seen.append(t.detach().clone())
        return original(x1, x0, t)

    monkeypatch.setattr(hierarchy, "training_pair", spy)
    X = np.random.default_rng(0).normal(size=(50, 1))
    HRFEstimator(depth=2, time_sampler=("u_shaped", "logit_normal"), random_state=0,
                 dtype="float64", **{**SMALL, "batch_size": 2000, "n_iter": 2}).fit(X)
    t = torch.cat(seen, dim=1).numpy()  # (2 levels, 4000)
    for level, kind in enumerate(("u_shaped", "logit_normal")):
        assert stats.kstest(t[level], lambda s, k=kind: time_cdf(k, s).numpy()).pvalue > 1e-3
        other = "logit_normal" if kind == "u_shaped" else "u_shaped"
        assert stats.kstest(t[level], lambda s, k=other: time_cdf(k, s).numpy()).pvalue < 1e-6


@pytest.mark.parametrize("time_sampler", [("uniform",), ("uniform", "beta"), "beta", 3])
def test_estimator_rejects_bad_time_samplers(time_sampler):
    X = np.random.default_rng(0).normal(size=(20, 1))
    with pytest.raises(ValueError, match="time_sampler"):
        HRFEstimator(depth=2, time_sampler=time_sampler, **SMALL).fit(X)
