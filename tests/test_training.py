"""The training machinery of hrflow.training: learning-rate schedule and batch construction.

The estimator's training (losses, divergence restore, interruption, checkpoints)
is tested end to end in test_estimator.py and test_persistence.py; here the pure
functions are checked on their own: shapes, the schedule's values at the ends
of the warm-up and of the cosine, optimal pairing of the location level, and the
time sampler of every level; and the loop (:class:`Trainer`) on a bare field,
without an estimator.
"""

from __future__ import annotations

import itertools
import math
import signal

import numpy as np
import pytest
import torch
from scipy import stats

from hrflow import hierarchy
from hrflow.coupling import pairing_cost
from hrflow.fields import HierarchicalMLP
from hrflow.sources import GaussianMixtureSource, StandardNormal
from hrflow.time_samplers import time_cdf
from hrflow.training import (
    Trainer,
    TrainingConfig,
    TrainingDivergedError,
    batch_coupling,
    lr_factor,
    restore_training_state,
    training_batch,
    training_state,
)

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


@pytest.mark.filterwarnings("ignore::hrflow.coupling.CouplingCollapseWarning")  # small groups: expected
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


def test_training_batch_samples_the_times_of_every_level_with_its_sampler(sample_times_calls):
    kinds = ("u_shaped", "logit_normal", "uniform")
    calls = sample_times_calls
    _, (_, _, t) = _batch(3, 4000, (1,), samplers=kinds)
    assert calls == list(kinds)
    for level, kind in enumerate(kinds):
        assert stats.kstest(t[level].numpy(), lambda s, k=kind: time_cdf(k, s).numpy()).pvalue > 1e-3
        for other in set(kinds) - {kind}:
            assert stats.kstest(
                t[level].numpy(), lambda s, k=other: time_cdf(k, s).numpy()
            ).pvalue < 1e-6
    assert np.all(np.isfinite(t.numpy()))


# ================================================================== Trainer
def _trainer(n_iter=30, *, ema=False, field_cls=HierarchicalMLP, **kw):
    torch.manual_seed(0)
    field = field_cls(2, 1, hidden_size=8, n_layers=1, embedding_dim=4)
    ema_field = HierarchicalMLP(2, 1, hidden_size=8, n_layers=1, embedding_dim=4) if ema else None
    if ema:
        ema_field.load_state_dict(field.state_dict())
    opt = torch.optim.AdamW(field.parameters(), lr=1e-3)
    config = TrainingConfig(n_iter=n_iter, batch_size=16, samplers=("uniform", "uniform"),
                            ema_decay=0.9 if ema else None, **kw)
    record = {"losses": [], "checkpoints": 0}

    def checkpoint():
        record["checkpoints"] += 1

    trainer = Trainer(field, opt, StandardNormal((1,)), config, ema_field=ema_field,
                      on_losses=record["losses"].extend, on_checkpoint=checkpoint)
    return trainer, record


def test_trainer_records_every_loss_and_checkpoints():
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    trainer, record = _trainer(30, checkpoint_every=10)
    assert trainer.run(data, torch.Generator().manual_seed(0)) is False
    assert len(record["losses"]) == trainer.n_done == 30
    assert all(math.isfinite(v) for v in record["losses"])
    assert record["checkpoints"] == 3  # at 10, 20 and 30 (the end)
    assert not trainer.field.training and trainer.fit_time >= 0
    # the learning rate followed the cosine to 0
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_trainer_clips_the_gradient_before_the_step():
    """One plain SGD step at lr 1 moves the weights by the clipped gradient: norm ``grad_clip``."""
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    trainer, _ = _trainer(1, grad_clip=1e-3)
    trainer.optimizer = torch.optim.SGD(trainer.field.parameters(), lr=1.0)
    before = torch.cat([p.detach().flatten().clone() for p in trainer.field.parameters()])
    trainer.run(data, torch.Generator().manual_seed(0))
    after = torch.cat([p.detach().flatten() for p in trainer.field.parameters()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-2)


def test_trainer_regresses_the_field_at_the_batch_states_and_times_on_the_target():
    """The field sees ``(z, t)`` of the batch (not ``1 - t``) and the loss is against its target."""
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    trainer, record = _trainer(1)
    seen = []
    forward = trainer.field.forward

    def spy(zs, ts):
        out = forward(zs, ts)
        seen.append((torch.as_tensor(zs).detach().clone(), torch.as_tensor(ts).detach().clone(),
                     out.detach().clone()))
        return out

    trainer.field.forward = spy
    trainer.run(data, torch.Generator().manual_seed(4))
    x1, x0, t = training_batch(data, StandardNormal((1,)), 2, 16, torch.Generator().manual_seed(4),
                               samplers=("uniform", "uniform"))
    z, target = hierarchy.training_pair(x1, x0, t)
    (z_seen, t_seen, out), = seen
    assert torch.equal(t_seen, t) and torch.equal(z_seen, torch.as_tensor(z))
    assert record["losses"][0] == pytest.approx(((out - target) ** 2).sum(1).mean().item(), rel=1e-5)


def test_training_batch_inner_levels_are_standard_normal_whatever_the_source():
    """Only the location level draws from the source; deeper levels draw N(0, I) (spec section 2)."""
    src = GaussianMixtureSource([1.0], [[10.0]], [[[4.0]]])
    data = torch.randn(500, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, x0, _ = training_batch(data, src, 3, 4000, torch.Generator().manual_seed(0),
                              samplers=("uniform",) * 3)
    assert stats.kstest(x0[0].flatten().numpy(), "norm", args=(10.0, 2.0)).pvalue > 1e-3
    for level in (1, 2):
        assert stats.kstest(x0[level].flatten().numpy(), "norm").pvalue > 1e-3


def test_trainer_is_reproducible():
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    (a, ra), (b, rb) = _trainer(12, ema=True), _trainer(12, ema=True)
    a.run(data, torch.Generator().manual_seed(3))
    b.run(data, torch.Generator().manual_seed(3))
    assert ra["losses"] == rb["losses"]
    for m, n in ((a.field, b.field), (a.ema_field, b.ema_field)):
        assert all(torch.equal(u, v) for u, v in zip(m.state_dict().values(), n.state_dict().values()))
    assert not a.field.training and not a.ema_field.training  # both only evaluated from now on


def _states(trainer):
    return [trainer.field.state_dict(), trainer.ema_field.state_dict(),
            trainer.optimizer.state_dict()["state"]]


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


def test_trainer_divergence_restores_the_last_check(failing_loss):
    # NaN loss at iteration 12 (checks every 5): back at the check of iteration 10, as if
    # the loop had run 10 iterations (constant rate: they do not depend on n_iter)
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    ref, _ = _trainer(10, ema=True, check_every=5, lr_schedule="constant")
    ref.start = 7  # iterations recorded before (warm start): the EMA warm-up goes on
    ref.run(data, torch.Generator().manual_seed(0))
    failing_loss(12, "nan")
    trainer, record = _trainer(30, ema=True, check_every=5, lr_schedule="constant")
    trainer.start = 7
    with pytest.raises(TrainingDivergedError, match=r"iteration 12\b.*n_iter_=17\)"):
        trainer.run(data, torch.Generator().manual_seed(0))
    assert len(record["losses"]) == trainer.n_done == 10
    assert _same(_states(trainer), _states(ref))
    assert all(torch.isfinite(p).all() for p in trainer.field.parameters())


class _NaNGradientMLP(HierarchicalMLP):
    """Finite outputs, but training call number ``AT`` (0-based) has a NaN gradient."""

    AT = 14

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, z, t):
        out = super().forward(z, t)
        if self.training:
            if self.calls == self.AT:  # value 0, gradient 0 * inf = NaN
                out = out + 0.0 * torch.sqrt(next(self.parameters()).abs() * 0.0).sum()
            self.calls += 1
        return out


def test_trainer_non_finite_weights_from_a_finite_loss_restore_the_last_check():
    # the last step of the call (iteration 14) takes a NaN gradient from a finite loss: the
    # check at the end sees the NaN weights, restores the check of iteration 10 and raises,
    # so no NaN state is kept, snapshotted or handed to on_checkpoint
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    ref, _ = _trainer(10, ema=True, check_every=5, lr_schedule="constant")
    ref.run(data, torch.Generator().manual_seed(0))
    trainer, record = _trainer(15, ema=True, check_every=5, lr_schedule="constant",
                               checkpoint_every=5, field_cls=_NaNGradientMLP)
    with pytest.raises(TrainingDivergedError, match=r"weights became non-finite by iteration 14\b"):
        trainer.run(data, torch.Generator().manual_seed(0))
    assert trainer.field.calls == 15
    assert len(record["losses"]) == trainer.n_done == 10
    assert all(math.isfinite(v) for v in record["losses"])
    assert record["checkpoints"] == 2  # at 5 and 10, not with the NaN weights at 15
    assert _same(_states(trainer), _states(ref))


class _FailingSource:
    """``N(0, 1)`` draws until draw number ``at`` (0-based), which raises."""

    def __init__(self, at):
        self.normal, self.at, self.calls = StandardNormal((1,)), at, 0

    def sample(self, *args, **kwargs):
        if self.calls == self.at:
            raise RuntimeError("the source failed")
        self.calls += 1
        return self.normal.sample(*args, **kwargs)


def test_trainer_other_errors_restore_the_last_check():
    # the source fails in iteration 12 (checks every 5): the error comes through, with
    # weights, optimizer and EMA back at the check of iteration 10, where n_done stands
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    ref, _ = _trainer(10, ema=True, check_every=5, lr_schedule="constant")
    ref.run(data, torch.Generator().manual_seed(0))
    trainer, record = _trainer(30, ema=True, check_every=5, lr_schedule="constant")
    trainer.source = _FailingSource(12)
    with pytest.raises(RuntimeError, match="the source failed"):
        trainer.run(data, torch.Generator().manual_seed(0))
    assert len(record["losses"]) == trainer.n_done == 10
    assert int(trainer.optimizer.state_dict()["state"][0]["step"]) == 10
    assert _same(_states(trainer), _states(ref))
    assert not trainer.field.training


def test_trainer_keyboard_interrupt_keeps_the_checked_losses(failing_loss):
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    failing_loss(7, "interrupt")
    trainer, record = _trainer(30, check_every=5)
    assert trainer.run(data, torch.Generator().manual_seed(0)) is True
    assert trainer.n_done == len(record["losses"]) == 7  # all finite losses before the interrupt
    assert record["checkpoints"] == 1 and not trainer.field.training


def test_training_state_round_trip():
    trainer, _ = _trainer(3, ema=True)
    trainer.run(torch.randn(20, 1), torch.Generator().manual_seed(0))
    state = training_state(trainer.field, trainer.optimizer, trainer.ema_field)
    before = [t.clone() for t in trainer.field.state_dict().values()]
    trainer.config = TrainingConfig(n_iter=3, batch_size=16, samplers=("uniform", "uniform"),
                                    ema_decay=0.9)
    trainer.run(torch.randn(20, 1), torch.Generator().manual_seed(1))
    assert not all(torch.equal(u, v) for u, v in zip(before, trainer.field.state_dict().values()))
    restore_training_state(state, trainer.field, trainer.optimizer, trainer.ema_field)
    assert all(torch.equal(u, v) for u, v in zip(before, trainer.field.state_dict().values()))
    assert trainer.optimizer.state_dict()["state"][0]["step"] == 3


@pytest.mark.parametrize("ema", [False, True])
def test_trainer_ctrl_c_during_the_update_keeps_weights_and_losses_in_step(ema):
    # a SIGINT right after the optimizer step: the iteration's update completes
    # (schedule, EMA, loss record) before the KeyboardInterrupt, so n_done counts
    # every step the weights took
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    trainer, record = _trainer(30, ema=ema, check_every=5)
    calls = [0]

    def after_step(optimizer, args, kwargs):
        calls[0] += 1
        if calls[0] == 8:
            signal.raise_signal(signal.SIGINT)

    trainer.optimizer.register_step_post_hook(after_step)
    assert trainer.run(data, torch.Generator().manual_seed(0)) is True
    taken = int(trainer.optimizer.state_dict()["state"][0]["step"])
    assert taken == calls[0] == 8
    assert trainer.n_done == len(record["losses"]) == 8
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("ema", [False, True])
def test_trainer_ctrl_c_while_recording_the_checked_losses_keeps_them(ema):
    # a SIGINT as the losses of a check are handed on: they are recorded in full before
    # the KeyboardInterrupt, so n_done still counts every step the weights took
    data = torch.randn(100, 1, generator=torch.Generator().manual_seed(0))
    trainer, record = _trainer(30, ema=ema, check_every=5)

    def on_losses(values):
        if not record["losses"]:
            signal.raise_signal(signal.SIGINT)
        record["losses"].extend(values)

    trainer.on_losses = on_losses
    assert trainer.run(data, torch.Generator().manual_seed(0)) is True
    taken = int(trainer.optimizer.state_dict()["state"][0]["step"])
    assert trainer.n_done == len(record["losses"]) == taken == 5
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_deferred_raises_at_the_end_of_the_block_and_restores_the_handler():
    from hrflow.training import _sigint_deferred

    with pytest.raises(KeyboardInterrupt):
        with _sigint_deferred():
            signal.raise_signal(signal.SIGINT)
            reached_end = True
    assert reached_end
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        for _ in range(1000):
            pass
