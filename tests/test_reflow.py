"""Reflow: pairs from the model's own sampler, retraining on them, few-step gains."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from hrflow import HRFEstimator
from hrflow.coupling import CouplingDensityWarning
from hrflow.fields import HierarchicalMLP
from hrflow.metrics import wasserstein_1d
from hrflow.reflow import RecordingSource, sample_pairs
from hrflow.sampling import nested_euler
from hrflow.sources import StandardNormal

pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = dict(hidden_size=32, n_layers=2, embedding_dim=8, batch_size=64, device="cpu")


def bimodal(n, seed):
    g = np.random.default_rng(seed)
    return (np.where(g.random(n) < 0.5, -2.0, 2.0) + 0.2 * g.normal(size=n))[:, None]


@pytest.fixture(scope="module")
def fitted2():
    X = np.random.default_rng(0).normal(size=(300, 2)) * [1.0, 3.0] + [5.0, -1.0]
    return HRFEstimator(depth=2, n_iter=30, random_state=0, **SMALL).fit(X)


# ---------------------------------------------------------------------------
# the pairs are the sampler's own
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth, steps", [(1, (3,)), (2, (3, 2)), (3, (2, 2, 2))])
def test_sample_pairs_function_reproduces_nested_euler(depth, steps):
    field = HierarchicalMLP(depth, 2, hidden_size=8, n_layers=1, embedding_dim=4).double()
    src = StandardNormal((2,))
    x0, x1 = sample_pairs(field, 9, steps, src, torch.Generator().manual_seed(3),
                          dtype=torch.float64)
    ref, path = nested_euler(field, 9, steps, src, torch.Generator().manual_seed(3),
                             dtype=torch.float64, return_path=True)
    assert torch.equal(x1, ref)
    assert torch.equal(x0, path[0])  # the location source draw


def test_sample_pairs_function_rejects_return_path():
    field = HierarchicalMLP(1, 1, hidden_size=4, n_layers=1, embedding_dim=4)
    with pytest.raises(TypeError, match="return_path"):
        sample_pairs(field, 2, (1,), StandardNormal((1,)), torch.Generator(), return_path=True)


def test_recording_source_forwards_log_prob():
    rec = RecordingSource(StandardNormal((1,)))
    x = torch.zeros(2, 1)
    assert torch.equal(rec.log_prob(x), StandardNormal((1,)).log_prob(x)) and rec.has_log_prob


@pytest.mark.parametrize("steps", [None, (4, 3)])
def test_estimator_sample_pairs_equal_sample_and_path(fitted2, steps):
    X0, X1 = fitted2.sample_pairs(50, steps=steps, random_state=7)
    S, path = fitted2.sample(50, steps=steps, random_state=7, return_path=True)
    np.testing.assert_array_equal(X1, S)
    np.testing.assert_array_equal(X0, path[0])
    assert X0.shape == X1.shape == (50, 2)


def test_sample_pairs_with_an_adaptive_inner_solver_and_chunks():
    # depth 1 with dopri5: return_path integrates on the step grid (other values), the pairs
    # must still equal the plain sample; chunk_size splits the batch
    X = np.random.default_rng(1).normal(size=(100, 1))
    est = HRFEstimator(depth=1, n_iter=10, inner_solver="dopri5", chunk_size=7, random_state=0,
                       **SMALL).fit(X)
    X0, X1 = est.sample_pairs(20, random_state=3)
    np.testing.assert_array_equal(X1, est.sample(20, random_state=3))
    _, path = est.sample(20, steps=(1,), random_state=3, return_path=True)
    np.testing.assert_array_equal(X0, path[0])


def test_reflow_trains_on_the_pairs_of_the_models_own_sampler(fitted2, monkeypatch):
    est = copy.deepcopy(fitted2)
    seen = {}

    def spy(data, gen, *, sources=None, n_iter=None):
        seen.update(data=data, sources=sources, n_iter=n_iter)

    expected0, expected1 = est._sample_pairs(40, (4, 2), np.random.RandomState(11))
    X0, X1 = est.sample_pairs(40, steps=(4, 2), random_state=11)
    monkeypatch.setattr(est, "_train", spy)
    assert est.reflow(n_pairs=40, steps=(4, 2), n_iter=5, random_state=11) is est
    assert seen["n_iter"] == 5
    assert torch.equal(seen["data"], expected1) and torch.equal(seen["sources"], expected0)
    # in user units these are the samples of est.sample with the same seed, and their sources
    np.testing.assert_allclose(est._to_user(seen["data"].double().numpy()), X1, rtol=1e-12)
    np.testing.assert_allclose(est._to_user(seen["sources"].double().numpy()), X0, rtol=1e-12)
    S, path = est.sample(40, steps=(4, 2), random_state=11, return_path=True)
    np.testing.assert_array_equal(X1, S)
    np.testing.assert_array_equal(X0, path[0])


def test_reflow_batches_use_the_fixed_pairs(fitted2, training_pairs):
    # inside training, every example's location source is its pair's source point
    est = copy.deepcopy(fitted2)
    Z0, Z1 = est._sample_pairs(30, (2, 2), np.random.RandomState(0))
    pairs = {tuple(np.round(z1, 5)): z0 for z0, z1 in zip(Z0.tolist(), Z1.tolist())}
    seen = training_pairs
    est.reflow(n_pairs=30, steps=(2, 2), n_iter=3, random_state=0)
    assert len(seen) == 3
    for x1, x0, *_ in seen:
        for a, b in zip(x1.tolist(), x0[0].tolist()):
            assert pairs[tuple(np.round(a, 5))] == b


def test_reflow_updates_state(fitted2):
    est = copy.deepcopy(fitted2)
    before = {k: v.clone() for k, v in est.field_.state_dict().items()}
    est.reflow(n_pairs=64, steps=(2, 2), n_iter=7, random_state=0)
    assert est.n_iter_ == fitted2.n_iter_ + 7 and len(est.loss_curve_) == est.n_iter_
    assert any(not torch.equal(before[k], v) for k, v in est.field_.state_dict().items())
    assert est.coupled_ and not fitted2.coupled_
    # n_iter=0 draws pairs but trains nothing
    est2 = copy.deepcopy(fitted2).reflow(n_pairs=8, n_iter=0, random_state=0)
    assert est2.n_iter_ == fitted2.n_iter_ and not est2.coupled_


def test_reflow_is_deterministic_given_random_state(fitted2):
    a = copy.deepcopy(fitted2).reflow(n_pairs=64, steps=(2, 2), n_iter=5, random_state=3)
    b = copy.deepcopy(fitted2).reflow(n_pairs=64, steps=(2, 2), n_iter=5, random_state=3)
    np.testing.assert_array_equal(a.sample(10, random_state=0), b.sample(10, random_state=0))


def test_successive_reflows_draw_new_batches(fitted2, training_pairs):
    # the same random_state gives the same pairs, but the training draws are seeded
    # with n_iter_ too: a second reflow does not replay the first one's batches
    est = copy.deepcopy(fitted2)
    est.reflow(n_pairs=64, steps=(2, 2), n_iter=3, random_state=0)
    est.reflow(n_pairs=64, steps=(2, 2), n_iter=3, random_state=0)
    assert len(training_pairs) == 6
    for (x1a, x0a, *_), (x1b, x0b, *_) in zip(training_pairs[:3], training_pairs[3:]):
        assert not torch.equal(x1a, x1b) and not torch.equal(x0a[1:], x0b[1:])


def test_density_after_reflow_warns_for_depth_2(fitted2):
    est = copy.deepcopy(fitted2).reflow(n_pairs=32, steps=(2, 2), n_iter=2, random_state=0)
    X = np.zeros((3, 2))
    with pytest.warns(CouplingDensityWarning) as record:
        est.score_samples(X)
    message = str(record[0].message)  # names the cause without guessing from the parameter
    assert "or reflow" in message and "coupling='independent'" not in message
    with pytest.raises(ValueError, match="algorithm 4"):
        est.log_density(X, algorithm=4)


def test_density_after_reflow_depth_1_is_silent():
    X = np.random.default_rng(0).normal(size=(100, 1))
    est = HRFEstimator(depth=1, n_iter=5, random_state=0, **SMALL).fit(X)
    est.reflow(n_pairs=32, steps=(3,), n_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.all(np.isfinite(est.score_samples(X[:3])))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"n_pairs": 0}, ValueError, "n_pairs"),
        ({"n_pairs": 2.5}, ValueError, "n_pairs"),
        ({"n_pairs": True}, ValueError, "n_pairs"),
        ({"n_iter": -1}, ValueError, "n_iter"),
        ({"steps": (1,)}, ValueError, "steps"),
    ],
)
def test_reflow_bad_arguments(fitted2, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        copy.deepcopy(fitted2).reflow(**{"n_pairs": 8, **kwargs})


@pytest.mark.parametrize(
    "params, exc, match",
    [
        ({"checkpoint_dir": "FILE/sub"}, ValueError, "checkpoint_dir"),
        ({"depth": 3}, ValueError, r"reflow continues training.*depth=3"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"time_sampler": ("uniform",)}, ValueError, "time_sampler"),
    ],
)
def test_reflow_checks_the_parameters_before_any_work(fitted2, tmp_path, params, exc, match):
    # the checks of a warm start, before the pairs are drawn: nothing changes
    (tmp_path / "FILE").write_text("")
    if "checkpoint_dir" in params:
        params = {"checkpoint_dir": tmp_path / params["checkpoint_dir"]}
    est = copy.deepcopy(fitted2).set_params(**params)
    before = {k: v.clone() for k, v in est.field_.state_dict().items()}
    with pytest.raises(exc, match=match):
        est.reflow(n_pairs=16, steps=(2, 2), n_iter=2, random_state=0)
    assert est.n_iter_ == fitted2.n_iter_ and not est.coupled_
    assert all(torch.equal(before[k], v) for k, v in est.field_.state_dict().items())


def test_reflow_follows_checkpoint_dir_and_ema_decay_as_a_warm_start(tmp_path):
    X = np.random.default_rng(0).normal(size=(100, 2))
    est = HRFEstimator(depth=2, n_iter=3, ema_decay=0.9, random_state=0, **SMALL).fit(X)
    # a new checkpoint folder is created before the work (as fit does) and written to
    est.set_params(checkpoint_dir=tmp_path / "new" / "folder")
    est.reflow(n_pairs=16, steps=(2, 2), n_iter=2, random_state=0)
    assert [p.name for p in (tmp_path / "new" / "folder").iterdir()] == ["checkpoint-000000005.hrf"]
    # the EMA switched off is dropped; switched on, it starts from the weights and is updated
    est.set_params(checkpoint_dir=None, ema_decay=None)
    est.reflow(n_pairs=16, steps=(2, 2), n_iter=2, random_state=0)
    assert est.ema_field_ is None and est.n_iter_ == 7
    est.set_params(ema_decay=0.5)
    est.reflow(n_pairs=16, steps=(2, 2), n_iter=2, random_state=0)
    assert est.ema_field_ is not None and not est.ema_field_.training and est.n_iter_ == 9
    assert any(not torch.equal(a, b) for a, b in zip(est.ema_field_.parameters(), est.field_.parameters()))


def test_reflow_and_sample_pairs_need_a_fitted_model():
    with pytest.raises(NotFittedError):
        HRFEstimator().reflow(10)
    with pytest.raises(NotFittedError):
        HRFEstimator().sample_pairs(10)


# ---------------------------------------------------------------------------
# reflow straightens the paths: one-step sampling improves
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth, steps", [(1, (50,)), (2, (10, 5))])
def test_reflow_improves_one_step_sampling_in_1d(depth, steps):
    # Bimodal 1-D target. One Euler step of an independent-coupling flow collapses the
    # points towards E[x1]; after one reflow on 2000 pairs drawn with `steps`, the
    # location paths are nearly straight and one step is close to the many-step result.
    # Seen: depth 1: 1.78 -> 0.31, depth 2: 1.31 -> 0.41 (the 50-NFE W1 is about 0.21).
    X, X_test = bimodal(2000, 0), bimodal(2000, 1)
    est = HRFEstimator(depth=depth, n_iter=400, learning_rate=1e-2, random_state=0,
                       **{**SMALL, "batch_size": 128}).fit(X)
    one = (1,) * depth
    before = wasserstein_1d(est.sample(2000, steps=one, random_state=1), X_test)
    est.reflow(n_pairs=2000, steps=steps, n_iter=400, random_state=0)
    after = wasserstein_1d(est.sample(2000, steps=one, random_state=1), X_test)
    assert before > 1.0
    assert after < 0.5 * before
