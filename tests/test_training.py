"""The training machinery of hrflow.training: learning-rate schedule and batch construction.

The estimator's training (losses, divergence restore, interruption, checkpoints)
is tested end to end in test_estimator.py and test_persistence.py; here the pure
functions are checked on their own: shapes, the schedule's values at the ends
of the warm-up and of the cosine, optimal pairing of the location level, and the
time sampler of every level.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

import hrflow.training as training
from hrflow import hierarchy
from hrflow.coupling import pairing_cost
from hrflow.sources import StandardNormal
from hrflow.time_samplers import time_cdf
from hrflow.training import batch_coupling, lr_factor, training_batch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ================================================================ lr_factor
def test_lr_factor_warm_up_is_linear_to_one():
    assert lr_factor(0, 100, warmup_iter=10) == pytest.approx(0.1)
    assert lr_factor(4, 100, warmup_iter=10) == pytest.approx(0.5)
    assert lr_factor(9, 100, warmup_iter=10) == 1.0  # end of the warm-up: the full rate
    assert lr_factor(0, 100, warmup_iter=1) == 1.0


def test_lr_factor_cosine_from_one_to_zero_after_the_warm_up():
    assert lr_factor(10, 100, warmup_iter=10) == 1.0  # start of the cosine
    assert lr_factor(55, 100, warmup_iter=10) == pytest.approx(0.5)  # half way
    assert lr_factor(100, 100, warmup_iter=10) == pytest.approx(0.0, abs=1e-15)  # cosine end
    assert lr_factor(150, 100, warmup_iter=10) == pytest.approx(0.0, abs=1e-15)  # stays there
    assert lr_factor(0, 1) == 1.0 and lr_factor(1, 1) == pytest.approx(0.0, abs=1e-15)
    # without a warm-up the cosine starts at iteration 0
    n = 40
    values = [lr_factor(it, n) for it in range(n + 1)]
    expected = [0.5 * (1 + math.cos(math.pi * it / n)) for it in range(n + 1)]
    assert values == pytest.approx(expected, abs=1e-15)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_lr_factor_constant_schedule():
    assert lr_factor(0, 100, warmup_iter=4, schedule="constant") == 0.25
    assert [lr_factor(it, 100, schedule="constant") for it in (0, 50, 100, 500)] == [1.0] * 4


def test_lr_factor_span_of_a_warm_up_longer_than_the_call():
    # warm-up beyond n_iter: the cosine's span is at least 1 iteration (no division by 0)
    assert lr_factor(5, 5, warmup_iter=5) == 1.0
    assert lr_factor(6, 5, warmup_iter=5) == pytest.approx(0.0, abs=1e-15)


# =========================================================== batch_coupling
@pytest.mark.parametrize("coupling, depth, paired, expected", [
    ("independent", 1, False, ((), False)),
    ("independent", 3, True, ((), False)),
    ("ot_location", 1, False, ((0,), False)),
    ("ot_location", 3, False, ((0,), False)),
    ("ot_location", 3, True, ((), False)),
    ("ot_velocity", 1, False, ((), False)),
    ("ot_velocity", 2, False, ((), True)),
    ("ot_velocity", 3, True, ((), False)),
])
def test_batch_coupling(coupling, depth, paired, expected):
    assert batch_coupling(coupling, depth, paired=paired) == expected


def test_batch_coupling_rejects_unknown_couplings():
    with pytest.raises(ValueError, match="coupling"):
        batch_coupling("ot_all", 2)


# =========================================================== training_batch
def _batch(depth=2, batch_size=9, event_shape=(3,), seed=0, **kw):
    data = torch.randn((40, *event_shape), generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
    kw.setdefault("samplers", ("uniform",) * depth)
    gen = torch.Generator().manual_seed(seed)
    return data, training_batch(data, StandardNormal(event_shape), depth, batch_size, gen, **kw)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("event_shape", [(3,), (1, 4, 4)])
@pytest.mark.parametrize("coupling", ["independent", "ot_location", "ot_velocity"])
def test_training_batch_shapes(depth, event_shape, coupling):
    data, (x1, x0, t) = _batch(depth, 12, event_shape, coupling=coupling, coupling_group_size=4)
    assert x1.shape == (12, *event_shape) and x0.shape == (depth, 12, *event_shape)
    assert t.shape == (depth, 12)
    assert x1.dtype == x0.dtype == t.dtype == torch.float64
    assert torch.all((t >= 0) & (t <= 1))


def test_training_batch_draws_data_rows_and_is_reproducible():
    data, (x1, x0, t) = _batch(batch_size=100)  # more rows than data: drawn with replacement
    rows = {tuple(r) for r in data.tolist()}
    assert all(tuple(r) in rows for r in x1.tolist())
    _, again = _batch(batch_size=100)
    assert all(torch.equal(a, b) for a, b in zip((x1, x0, t), again))
    _, other = _batch(batch_size=100, seed=1)
    assert not torch.equal(x0, other[1])


def test_training_batch_dequantises_by_one_bin():
    data = torch.tensor([[-1.0], [0.5]], dtype=torch.float64)  # bin corners of n_bins=8
    gen = torch.Generator().manual_seed(0)
    x1, _, _ = training_batch(data, StandardNormal((1,)), 1, 500, gen, samplers=("uniform",),
                              n_bins=8)
    offset = torch.minimum((x1 + 1.0).abs(), (x1 - 0.5).abs())
    assert torch.all((offset >= 0) & (offset < 0.25)) and offset.std() > 0.05


def test_training_batch_with_paired_sources_keeps_the_pairs():
    data = torch.arange(20.0, dtype=torch.float64).reshape(10, 2)
    pairs = -data
    gen = torch.Generator().manual_seed(0)
    # even with an OT coupling or n_bins: reflow batches keep their fixed pairs, undequantised
    x1, x0, t = training_batch(data, None, 3, 16, gen, samplers=("uniform",) * 3,
                               coupling="ot_location", n_bins=4, paired_sources=pairs)
    assert torch.equal(x0[0], -x1)
    assert all(tuple(r) in {tuple(d) for d in data.tolist()} for r in x1.tolist())
    assert x0.shape == (3, 16, 2) and t.shape == (3, 16)


def _brute_force_min_cost(x0, x1):
    n = x0.shape[0]
    C = ((x0[:, None, :] - x1[None, :, :]) ** 2).sum(-1)
    return min(C[list(p), range(n)].mean() for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_training_batch_ot_location_pairs_optimally(depth):
    for seed in range(3):
        _, (x1, x0, _) = _batch(depth, 6, (2,), seed=seed, coupling="ot_location")
        y = hierarchy.residuals(x1, x0)
        cost = pairing_cost(x0[0], y[0], torch.arange(6))
        assert cost == pytest.approx(_brute_force_min_cost(x0[0].numpy(), y[0].numpy()), rel=1e-9)
    # the independent draws are generally not optimal
    costs = []
    for seed in range(5):
        _, (x1, x0, _) = _batch(depth, 6, (2,), seed=seed)
        y = hierarchy.residuals(x1, x0)
        costs.append(pairing_cost(x0[0], y[0], torch.arange(6))
                     - _brute_force_min_cost(x0[0].numpy(), y[0].numpy()))
    assert max(costs) > 1e-6


def test_training_batch_samples_the_times_of_every_level_with_its_sampler(monkeypatch):
    kinds = ("u_shaped", "logit_normal", "uniform")
    calls = []
    real = training.sample_times

    def spy(kind, *args, **kwargs):
        calls.append(kind)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(training, "sample_times", spy)
    _, (_, _, t) = _batch(3, 4000, (1,), samplers=kinds)
    assert calls == list(kinds)
    for level, kind in enumerate(kinds):
        assert stats.kstest(t[level].numpy(), lambda s, k=kind: time_cdf(k, s).numpy()).pvalue > 1e-3
        for other in set(kinds) - {kind}:
            assert stats.kstest(
                t[level].numpy(), lambda s, k=other: time_cdf(k, s).numpy()
            ).pvalue < 1e-6
    assert np.all(np.isfinite(t.numpy()))
