"""HRFEstimator on images: field="unet", layouts, quantised data, bits/dim, EMA, clipping.

Tiny configurations on 8x8 digits (sklearn's load_digits, 17 grey levels) so
that every test runs in about a second on one CPU thread.
"""

from __future__ import annotations

import math
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hrflow import HRFEstimator
from hrflow._validation import standardization
from hrflow.analytic import MixtureOracle
from hrflow.ema import ema_decay_at, ema_update
from hrflow.fields import HierarchicalUNet, n_parameters
from hrflow.images import (
    ReshapedSource,
    channel_standardization,
    check_quantized,
    dequantize,
    split_image_layout,
)
from hrflow.metrics import bits_per_dim
from hrflow.sources import GaussianMixtureSource, StandardNormal

N_BINS = 17
D = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits().data[:60]  # (60, 64), integers 0..16


def _est(**kw):
    params = dict(
        depth=2, field="unet", n_bins=N_BINS, unet_channels=8, embedding_dim=8, n_iter=3,
        batch_size=16, steps=(2, 2), n_draws=1, ode_steps=2, dtype="float64", random_state=0,
        image_shape=(1, 8, 8),
    )
    params.update(kw)
    return HRFEstimator(**params)


def _flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


# ------------------------------------------------------------------ layouts
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_fit_and_sample_in_the_layout_fit_received(digits, depth):
    steps = (2,) * depth
    flat = _est(depth=depth, steps=steps, image_shape=(1, 8, 8)).fit(digits)
    assert isinstance(flat.field_, HierarchicalUNet) and flat.field_.event_shape == (1, 8, 8)
    assert flat.image_shape_ == (1, 8, 8) and flat.input_ndim_ == 2
    assert flat.n_features_in_ == D
    assert flat.sample(5).shape == (5, D)
    four = _est(depth=depth, steps=steps, image_shape=None).fit(digits.reshape(-1, 1, 8, 8))
    assert four.image_shape_ == (1, 8, 8) and four.input_ndim_ == 4 and four.n_features_in_ == D
    X, path = four.sample(5, return_path=True)
    assert X.shape == (5, 1, 8, 8) and path.shape == (3, 5, 1, 8, 8)
    # the two layouts hold the same numbers: same model, same draws
    np.testing.assert_array_equal(X.reshape(5, D), flat.sample(5))
    assert np.all(np.isfinite(X))


def test_scoring_accepts_both_layouts(digits):
    est = _est(image_shape=(1, 8, 8)).fit(digits)
    a = est.score_samples(digits[:4])
    b = est.score_samples(digits[:4].reshape(4, 1, 8, 8))
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="images of shape"):
        est.score_samples(digits[:4].reshape(4, 1, 4, 16))


def test_continuous_images_are_standardised_per_channel():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2, 3, 3)) * np.array([1.0, 5.0])[None, :, None, None] + 3.0
    est = _est(n_bins=None, n_iter=2, image_shape=None).fit(X)
    mean, scale = est.mean_.reshape(2, 9), est.scale_.reshape(2, 9)
    np.testing.assert_allclose(mean, np.repeat(X.mean(axis=(0, 2, 3))[:, None], 9, axis=1))
    np.testing.assert_allclose(scale, np.repeat(X.std(axis=(0, 2, 3))[:, None], 9, axis=1))
    assert est.sample(3).shape == (3, 2, 3, 3)
    assert np.all(np.isfinite(est.score_samples(X[:3])))


def test_pipeline_with_flat_rows(digits):
    pipe = make_pipeline(StandardScaler(), _est(n_bins=None, image_shape=(1, 8, 8)))
    pipe.fit(digits)
    assert pipe.score_samples(digits[:3]).shape == (3,)
    assert pipe[-1].sample(2).shape == (2, D)


def test_mlp_field_on_image_layouts(digits):
    """Any field takes images: the MLP sees flat rows, sample returns fit's layout."""
    est = _est(field="mlp", hidden_size=16, n_layers=1, image_shape=None).fit(digits.reshape(-1, 1, 8, 8))
    assert est.field_.event_shape == (D,) and est.image_shape_ == (1, 8, 8)
    assert est.sample(3).shape == (3, 1, 8, 8)
    assert est.score_samples(digits[:2]).shape == (2,)


@pytest.mark.parametrize("kind", ["array", "callable", "source"])
def test_user_sources_feed_the_image_field(digits, kind):
    """Sources given in user units on flat rows (or as image Sources) are reshaped for the U-Net."""
    rows = digits[:10]
    source = {
        "array": rows,
        "callable": lambda n, rng: rows[rng.integers(0, 10, n)],
        "source": ReshapedSource(StandardNormal((D,)), (1, 8, 8)),
    }[kind]
    est = _est(source=source, n_iter=2).fit(digits)
    assert est.source_.event_shape == (1, 8, 8)
    X = est.sample(4)
    assert X.shape == (4, D) and np.all(np.isfinite(X))


# ------------------------------------------------------------ determinism
def test_determinism_and_pickle(digits):
    a = _est(ema_decay=0.9, grad_clip=1.0).fit(digits)
    b = _est(ema_decay=0.9, grad_clip=1.0).fit(digits)
    torch.testing.assert_close(_flat_params(a.field_), _flat_params(b.field_), rtol=0, atol=0)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    np.testing.assert_array_equal(a.sample(4), b.sample(4))
    np.testing.assert_array_equal(a.sample(4, random_state=3), a.sample(4, random_state=3))
    assert not np.array_equal(a.sample(4, random_state=3), a.sample(4, random_state=4))
    c = pickle.loads(pickle.dumps(a))
    np.testing.assert_array_equal(c.sample(4), a.sample(4))
    np.testing.assert_array_equal(c.score_samples(digits[:3]), a.score_samples(digits[:3]))
    torch.testing.assert_close(_flat_params(c.ema_field_), _flat_params(a.ema_field_), rtol=0, atol=0)


def test_parameters_survive_clone():
    est = _est(unet_channel_mult=(1, 2, 2), unet_attention=(4,), image_shape=(1, 8, 8))
    params = clone(est).get_params()
    assert params["unet_channel_mult"] == (1, 2, 2) and params["unet_attention"] == (4,)
    assert params["image_shape"] == (1, 8, 8) and params["n_bins"] == N_BINS


def test_unet_size_parameters_reach_the_field(digits):
    est = _est(unet_channels=4, unet_channel_mult=(1, 2, 2), unet_res_blocks=2, unet_attention=(2,),
               unet_dropout=0.1, n_iter=1).fit(digits)
    field = est.field_
    assert field.config["base_channels"] == 4 and field.config["channel_mult"] == (1, 2, 2)
    assert field.config["n_res_blocks"] == 2 and field.config["attention_resolutions"] == (2,)
    assert field.config["dropout"] == 0.1 and field.resolutions == [(8, 8), (4, 4), (2, 2)]
    assert est.n_parameters_ == n_parameters(field)


# ------------------------------------------------------------- densities
def test_untrained_depth1_density_is_the_exact_gaussian(digits):
    """An untrained U-Net outputs 0, so at depth 1 the model is the source N(0, I) itself.

    In user units (bins of width 1) the dequantised point y = x + u has the
    density of z = 2 y / n_bins - 1 under N(0, I) divided by (n_bins / 2)^d.
    """
    est = _est(depth=1, steps=(2,), n_iter=0, ode_steps=1).fit(digits)
    X = digits[:3]
    u = np.random.default_rng(1).uniform(size=X.shape)
    z = 2 * (X + u) / N_BINS - 1
    expected = norm.logpdf(z).sum(axis=1) - D * math.log(N_BINS / 2)
    got = est.log_density(X + u, dequantize=False)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # bits/dim: the same number through hrflow.metrics.bits_per_dim of the model-space density
    np.testing.assert_allclose(
        bits_per_dim(got + D * math.log(N_BINS / 2), D, N_BINS), -expected / (D * math.log(2)), rtol=1e-12
    )
    # averaged over dequantisation noise: E_u of the closed form (z is uniform on each bin)
    lo, width = 2 * X / N_BINS - 1, 2 / N_BINS
    mean_sq = (lo + width / 2) ** 2 + width**2 / 12
    exact = (0.5 * mean_sq.sum(axis=1) + 0.5 * D * math.log(2 * math.pi) + D * math.log(N_BINS / 2))
    bpd = est.bits_per_dim(X, n_dequant=20, random_state=0)
    # Monte Carlo: one draw's bits/dim has sd ~0.005 here, 20 draws ~0.0011 (tolerance: 5 sd)
    np.testing.assert_allclose(bpd, exact / (D * math.log(2)), atol=6e-3)


def test_bits_per_dim_averages_uniform_dequantisation_noise():
    """A model that is exactly N(0, I) in the model space ``z = 2 (x + u) / n_bins - 1``.

    With ``n_bins=2``, ``z = x + u - 1`` is uniform on ``[x - 1, x)``: ``E[z^2] = (x - 1/2)^2 + 1/12``
    per value, so the mean over ``u ~ U[0, 1)`` of ``-log N(z; 0, I)`` is closed form (bin
    centres instead of uniform noise would be ``1 / (24 ln 2) = 0.06`` bits lower).
    """
    d = 2
    field = MixtureOracle([1.0], [np.zeros(d)], [np.eye(d)]).field(1)  # zero velocity: N(0, I)
    X = np.array([[0, 1], [1, 1], [0, 0]], dtype=np.float64)
    est = HRFEstimator(depth=1, field=field, n_iter=0, n_bins=2, dtype="float64", ode_steps=10,
                       random_state=0).fit(X)
    expected = ((0.5 * ((X - 0.5) ** 2 + 1 / 12)).sum(1) + 0.5 * d * math.log(2 * math.pi)) / (
        d * math.log(2))
    bpd = est.bits_per_dim(X, n_dequant=1500, random_state=0)
    np.testing.assert_allclose(bpd, expected, rtol=0, atol=0.025)  # Monte Carlo sd about 0.004
    assert not np.allclose(est.log_density(X, random_state=0), est.log_density(X, random_state=1))


def test_bits_per_dim_relations(digits):
    est = _est(n_iter=4, ema_decay=0.9).fit(digits)
    X = digits[:6]
    bpd = est.bits_per_dim(X, random_state=5)
    assert bpd.shape == (6,) and np.all(np.isfinite(bpd)) and np.all(bpd > 0)
    logp = est.log_density(X, random_state=5)  # log p(x + u), user units
    np.testing.assert_allclose(bpd, -logp / (D * math.log(2)), rtol=1e-12)
    np.testing.assert_allclose(bpd, bits_per_dim(logp + D * math.log(N_BINS / 2), D, N_BINS), rtol=1e-12)
    # several dequantisation draws are averaged: the mean of single-draw values
    many = est.bits_per_dim(X, n_dequant=3, random_state=5)
    assert many.shape == (6,) and np.all(np.isfinite(many))
    # the default divergence of an image model is Hutchinson
    np.testing.assert_array_equal(
        est.log_density(X, random_state=2), est.log_density(X, random_state=2, divergence="hutchinson")
    )
    with pytest.raises(ValueError, match="n_dequant"):
        est.bits_per_dim(X, n_dequant=0)


def test_continuous_bits_per_dim(digits):
    est = _est(n_bins=None, image_shape=(1, 8, 8), n_iter=2).fit(digits)
    lp = est.log_density(digits[:3], random_state=1)
    np.testing.assert_allclose(est.bits_per_dim(digits[:3], random_state=1), -lp / (D * math.log(2)))
    with pytest.raises(ValueError, match="n_bins"):
        est.log_density(digits[:3], dequantize=True)


# ------------------------------------------------------------ training options
def test_ema_weights(digits):
    """After one step the EMA is 0.1 * init + 0.9 * trained (decay warm-up, update 0)."""
    init = _est(n_iter=0).fit(digits).field_
    one = _est(n_iter=1, ema_decay=0.999).fit(digits)
    expected = 0.1 * _flat_params(init) + 0.9 * _flat_params(one.field_)
    torch.testing.assert_close(_flat_params(one.ema_field_), expected, rtol=1e-12, atol=1e-15)
    est = _est(n_iter=6, ema_decay=0.5).fit(digits)
    assert not torch.equal(_flat_params(est.ema_field_), _flat_params(est.field_))
    assert _est(n_iter=2).fit(digits).ema_field_ is None


def test_sample_and_score_use_the_ema_weights(digits):
    est = _est(n_iter=6, ema_decay=0.5).fit(digits)
    X, lp = est.sample(3), est.log_density(digits[:3])
    raw = est.field_
    with torch.no_grad():  # wreck the raw weights: nothing the model returns may change
        for p in raw.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(est.sample(3), X)
    np.testing.assert_array_equal(est.log_density(digits[:3]), lp)
    est.ema_field_ = None  # now the (wrecked) raw weights are used
    assert not np.array_equal(est.sample(3), X)


def test_warm_start_keeps_the_ema(digits):
    est = _est(n_iter=2, ema_decay=0.9, warm_start=True).fit(digits)
    ema = est.ema_field_
    est.fit(digits)
    assert est.ema_field_ is ema and est.n_iter_ == 4
    est.set_params(ema_decay=None).fit(digits)
    assert est.ema_field_ is None


def test_the_ema_field_samples_without_dropout(digits):
    # the EMA copy is only evaluated: in eval mode after fit, so samples with dropout in
    # the U-Net are reproducible, also from a model fitted with n_iter=0
    est = _est(unet_dropout=0.5, ema_decay=0.9).fit(digits)
    assert not est.ema_field_.training
    np.testing.assert_array_equal(est.sample(3, random_state=0), est.sample(3, random_state=0))
    assert not _est(unet_dropout=0.5, ema_decay=0.9, n_iter=0).fit(digits).ema_field_.training


def test_grad_clip_clips(digits, monkeypatch):
    calls = []
    original = torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        total = original(parameters, max_norm, *args, **kwargs)
        grads = [p.grad.norm() for p in parameters if p.grad is not None]
        after = torch.linalg.vector_norm(torch.stack(grads))
        calls.append((float(total), float(after), max_norm))
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    _est(n_iter=3, grad_clip=1e-3).fit(digits)
    assert len(calls) == 3
    for before, after, max_norm in calls:
        assert max_norm == 1e-3 and before > max_norm
        assert after == pytest.approx(max_norm, rel=1e-6)
    calls.clear()
    _est(n_iter=3).fit(digits)
    assert calls == []


def test_tiny_grad_clip_freezes_adam(digits):
    """Clipped to 1e-12, gradients fall below Adam's eps: the weights barely move."""
    init = _flat_params(_est(n_iter=0).fit(digits).field_)
    free = _flat_params(_est(n_iter=1, learning_rate=1e-2).fit(digits).field_)
    clipped = _flat_params(_est(n_iter=1, learning_rate=1e-2, grad_clip=1e-12).fit(digits).field_)
    assert (free - init).abs().max() > 5e-3
    assert (clipped - init).abs().max() < 1e-5


def test_memory_bounded_by_chunk_size(digits):
    est = _est(chunk_size=4).fit(digits)
    sizes = []
    head = est.field_.head

    def spy(encodings):
        sizes.append(encodings[0][0].shape[0])
        return head(encodings)

    est.field_.head = spy
    assert est.sample(10).shape == (10, D)
    assert max(sizes) == 4
    sizes.clear()
    assert est.score_samples(digits[:9]).shape == (9,)
    assert max(sizes) == 4


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, X_shape, match",
    [
        ({"image_shape": None}, (60, 64), "image_shape"),  # unet without an image shape
        ({"image_shape": (1, 8, 7)}, (60, 64), "image_shape"),
        ({"image_shape": (1, 8, 8)}, (60, 1, 8, 8), None),  # consistent: fine
        ({"image_shape": (1, 4, 16)}, (60, 1, 8, 8), "image_shape"),
        ({"image_shape": (1, 8)}, (60, 64), "image_shape"),
        ({"unet_attention": (3,)}, (60, 64), "unet_attention"),
        ({"unet_channel_mult": ()}, (60, 64), "unet_channel_mult"),
    ],
)
def test_bad_image_parameters(digits, kwargs, X_shape, match):
    params = {"image_shape": None if len(X_shape) == 4 else (1, 8, 8), **kwargs}
    est = _est(n_iter=1, **params)
    X = digits.reshape(X_shape)
    if match is None:
        est.fit(X)
        return
    with pytest.raises(ValueError, match=match):
        est.fit(X)
    assert not hasattr(est, "field_")


def test_bad_quantised_data(digits):
    with pytest.raises(ValueError, match="n_bins=17"):
        _est(image_shape=(1, 8, 8)).fit(digits + 0.5)
    with pytest.raises(ValueError, match="n_bins=17"):
        _est(image_shape=(1, 8, 8)).fit(digits * 2)
    est = _est(image_shape=(1, 8, 8), n_iter=1).fit(digits)
    with pytest.raises(ValueError, match="n_bins=17"):
        est.score_samples(digits[:2] + 0.5)
    assert np.all(np.isfinite(est.log_density(digits[:2] + 0.5, dequantize=False)))


# ------------------------------------------------------------ module helpers
def test_image_helpers():
    X = np.arange(24.0).reshape(2, 2, 2, 3)
    rows, shape = split_image_layout(X)
    assert shape == (2, 2, 3) and np.array_equal(rows, X.reshape(2, 12))
    mean, scale = channel_standardization(rows, shape)
    np.testing.assert_allclose(mean[:6], X[:, 0].mean())
    np.testing.assert_allclose(scale[6:], X[:, 1].std())
    check_quantized(np.array([[0, 16]]), 17)
    with pytest.raises(ValueError, match="n_bins=17"):
        check_quantized(np.array([[-1.0]]), 17)
    g = torch.Generator().manual_seed(0)
    y = dequantize(torch.zeros(20000, dtype=torch.float64), 2.0, g)
    assert 0 <= y.min() and y.max() < 2 and abs(y.mean().item() - 1.0) < 0.02
    src = ReshapedSource(StandardNormal((12,)), (3, 2, 2))
    x = src.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(src.log_prob(x), StandardNormal((3, 2, 2)).log_prob(x))
    with pytest.raises(ValueError, match="size"):
        ReshapedSource(StandardNormal((12,)), (5,))


def _two_rank_run(shards, fn):
    """``fn(shard, allreduce)`` on two threads joined by an allreduce(array, op)."""
    slots, barrier = [None, None], threading.Barrier(2)

    def allreduce(rank, array, op):
        slots[rank] = array
        barrier.wait()
        out = np.sum(slots, axis=0) if op == "sum" else np.max(slots, axis=0)
        barrier.wait()  # both have read the slots before they are reused
        return out

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(lambda r: fn(shards[r], lambda a, op: allreduce(r, a, op)), (0, 1)))


def test_channel_standardization_pools_the_statistics_of_all_processes():
    # two "ranks" (threads) with different shards, joined by an allreduce(array, op) as
    # hrflow.distributed.allreduce_numpy: both get the statistics of all the images
    rng = np.random.default_rng(0)
    shape = (2, 3, 4)
    shards = [rng.normal(loc, 1.0 + loc, size=(n, 24)) for loc, n in ((0.0, 5), (3.0, 9))]
    results = _two_rank_run(shards, lambda x, red: channel_standardization(x, shape, allreduce=red))
    mean, scale = channel_standardization(np.concatenate(shards), shape)
    for got_mean, got_scale in results:
        np.testing.assert_allclose(got_mean, mean, rtol=1e-13)
        np.testing.assert_allclose(got_scale, scale, rtol=1e-13)
    # one value per channel, repeated over its 12 pixels
    assert np.all(mean[:12] == mean[0]) and np.all(mean[12:] == mean[12]) and mean[0] != mean[12]
    # without an allreduce each rank has its own shard's statistics
    assert not np.allclose(channel_standardization(shards[1], shape)[0], mean)


def test_the_constant_channel_decision_counts_the_values_of_every_rank():
    """A channel constant up to rounding gets scale 1 on every rank, as in one process.

    Its spread (about 11 eps around 1) is above the rounding bound ``n eps |mean|`` of
    each shard's own count (5 and 9 values) but below that of all 14: with the shard's
    count the ranks would keep that noise as the channel's scale.
    """
    eps = np.finfo(np.float64).eps
    noise = 1.0 + eps * np.array([-11.0, 11.0, -11.0, 11.0, -11.0, 11.0, -11.0,
                                  11.0, -11.0, 11.0, -11.0, 11.0, -11.0, 11.0])
    other = np.random.default_rng(1).normal(size=14)
    X = np.column_stack([noise, other])  # images of shape (2, 1, 1): one pixel per channel
    shards = [X[:5], X[5:]]
    std = X[:, 0].std()
    assert 9 * eps < std < 14 * eps  # the band where the count decides
    _, scale = channel_standardization(X, (2, 1, 1))
    assert scale[0] == 1.0  # one process: constant
    for _, got_scale in _two_rank_run(
            shards, lambda x, red: channel_standardization(x, (2, 1, 1), allreduce=red)):
        assert got_scale[0] == 1.0
        np.testing.assert_allclose(got_scale, scale, rtol=1e-13)
    # the tabular path: the pooled count comes back with the statistics
    for _, _, n_rows in _two_rank_run(
            shards, lambda x, red: standardization(x, allreduce=red, return_count=True)):
        assert n_rows == 14


def test_ema_helpers():
    assert ema_decay_at(0.9999, 0) == pytest.approx(0.1)
    assert ema_decay_at(0.5, 100) == 0.5
    a, b = torch.nn.Linear(2, 2).double(), torch.nn.Linear(2, 2).double()
    wa, wb = _flat_params(a).clone(), _flat_params(b)
    ema_update(a, b, 0.25)
    torch.testing.assert_close(_flat_params(a), 0.25 * wa + 0.75 * wb, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="decay"):
        ema_decay_at(1.0, 0)


def test_ema_update_is_one_lerp_per_tensor_and_copies_buffers():
    """The fused update equals ``lerp_`` tensor by tensor, bit for bit, on a UNet's 100+ tensors."""
    torch.manual_seed(0)
    model = HierarchicalUNet(2, (1, 8, 8))
    ema = HierarchicalUNet(2, (1, 8, 8))
    expected = [e.detach().clone().lerp_(p.detach(), 1 - 0.99)
                for e, p in zip(ema.parameters(), model.parameters())]
    ema_update(ema, model, 0.99)
    assert len(expected) > 100
    assert all(torch.equal(e, x) for e, x in zip(ema.parameters(), expected))
    a = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    b = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    b.train()(torch.randn(8, 2))  # moves b's running statistics
    ema_update(a, b, 0.5)
    assert all(torch.equal(x, y) for x, y in zip(a.buffers(), b.buffers()))
    with pytest.raises(ValueError, match="same parameters"):
        ema_update(a, torch.nn.Linear(2, 2), 0.5)


def test_quantised_samples_stay_in_the_data_range(digits):
    """An under-trained model draws far outside [0, n_bins); ``sample`` clips to the bins."""
    est = _est(n_iter=2).fit(digits)
    X, path = est.sample(200, random_state=0, return_path=True)
    assert X.min() >= 0.0 and X.max() < N_BINS
    assert set(np.unique(np.floor(X))) <= set(range(N_BINS))
    assert (path[-1] < 0).any() or (path[-1] >= N_BINS).any()  # what clipping removed
    inside = (path[-1] >= 0) & (path[-1] < N_BINS)
    np.testing.assert_array_equal(X[inside], path[-1][inside])  # the rest is untouched


def test_sample_pairs_and_later_set_params_agree_with_the_fitted_bins(digits):
    est = _est(n_iter=2).fit(digits)
    X = est.sample(100, random_state=0)
    np.testing.assert_array_equal(est.sample_pairs(100, random_state=0)[1], X)
    # the clipping follows the fitted model, not a parameter changed after fit
    np.testing.assert_array_equal(est.set_params(n_bins=2).sample(100, random_state=0), X)
    np.testing.assert_array_equal(est.set_params(n_bins=None).sample(100, random_state=0), X)


def test_check_quantized_refuses_the_value_n_bins():
    check_quantized(np.array([[0.0, 16.0]]), 17)
    with pytest.raises(ValueError, match=r"n_bins=17.*\[0, 16\]"):
        check_quantized(np.array([[0.0, 17.0]]), 17)
    with pytest.raises(ValueError, match="n_bins=4"):
        HRFEstimator(n_bins=4, n_iter=1, batch_size=2, hidden_size=8, n_layers=1, device="cpu",
                     random_state=0).fit(np.array([[0.0, 1.0], [3.0, 4.0]]))


def test_an_image_shaped_source_object_is_standardised_like_the_data():
    """A Source of event shape (C, H, W) in user units is moved to the model space: scale and shift."""
    images = 3.0 + 5.0 * np.random.default_rng(0).normal(size=(12, 1, 4, 4))
    src = StandardNormal((1, 4, 4))
    est = HRFEstimator(depth=1, field="unet", unet_channels=8, embedding_dim=8, n_iter=0,
                       source=src, steps=(2,), dtype="float64", random_state=0,
                       device="cpu").fit(images)
    assert not np.allclose(est.scale_, 1.0)
    z = est.source_.sample(6, torch.Generator().manual_seed(1), dtype=torch.float64)
    x = src.sample(6, torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(z.numpy().reshape(6, -1) * est.scale_ + est.mean_,
                               x.numpy().reshape(6, -1), rtol=1e-12, atol=1e-12)


def test_reshaped_source_log_prob_keeps_the_feature_order():
    base = GaussianMixtureSource([1.0], [[0.0, 1.0, 2.0, 3.0]], [np.diag([1.0, 2.0, 3.0, 4.0])])
    src = ReshapedSource(base, (1, 2, 2))
    x = src.sample(5, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(src.log_prob(x), base.log_prob(x.reshape(5, 4)), rtol=0, atol=0)

