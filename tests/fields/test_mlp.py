"""Tests of :class:`hrflow.fields.HierarchicalMLP` and the time embedding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hrflow.fields import FIELDS, HierarchicalField, HierarchicalMLP, SinusoidalEmbedding


def _inputs(depth, n, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    zs = [torch.randn((n, d), generator=g, dtype=dtype) for _ in range(depth)]
    ts = [torch.rand((n,), generator=g, dtype=dtype) for _ in range(depth)]
    return zs, ts


def _field(depth, d, seed=0, **kw):
    """A small field whose parameters are redrawn from a seeded generator (no global seed)."""
    kw = {"hidden_size": 16, "n_layers": 2, "embedding_dim": 8, **kw}
    field = HierarchicalMLP(depth, d, **kw)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p.shape[-1], 1)))
    return field


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 3])
def test_output_shape(depth, d):
    field = _field(depth, d)
    zs, ts = _inputs(depth, 5, d)
    out = field(zs, ts)
    assert out.shape == (5, d)
    assert out.dtype == torch.float32
    assert field.depth == depth and field.event_shape == (d,)
    # a stacked (depth, n, d) tensor works as well
    torch.testing.assert_close(field(torch.stack(zs), torch.stack(ts)), out, rtol=0, atol=0)


def test_registry():
    assert FIELDS["mlp"] is HierarchicalMLP
    assert issubclass(HierarchicalMLP, HierarchicalField)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_forward_equals_head_of_encodings(depth):
    field = _field(depth, 2).double()
    zs, ts = _inputs(depth, 7, 2, dtype=torch.float64)
    encodings = [field.encode(k, zs[k], ts[k]) for k in range(depth)]
    torch.testing.assert_close(field(zs, ts), field.head(encodings), rtol=0, atol=0)


@pytest.mark.parametrize("depth", [2, 3])
def test_encoding_reuse(depth):
    """Changing only the innermost state leaves every outer encoding unchanged.

    So a sampler may keep outer encodings across inner steps: the head of the
    reused encodings plus a fresh innermost one equals a full forward pass.
    """
    field = _field(depth, 3).double()
    zs, ts = _inputs(depth, 6, 3, dtype=torch.float64)
    zs2, ts2 = _inputs(depth, 6, 3, seed=1, dtype=torch.float64)
    new_zs = zs[:-1] + [zs2[-1]]
    new_ts = ts[:-1] + [ts2[-1]]
    old_enc = [field.encode(k, zs[k], ts[k]) for k in range(depth)]
    new_enc = [field.encode(k, new_zs[k], new_ts[k]) for k in range(depth)]
    for k in range(depth - 1):
        torch.testing.assert_close(new_enc[k], old_enc[k], rtol=0, atol=0)
    assert (new_enc[-1] - old_enc[-1]).abs().max() > 1e-3
    reused = field.head(old_enc[:-1] + [field.encode(depth - 1, new_zs[-1], new_ts[-1])])
    torch.testing.assert_close(reused, field(new_zs, new_ts), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_output_depends_on_every_level_state_and_time(depth):
    field = _field(depth, 2).double()
    zs, ts = _inputs(depth, 4, 2, dtype=torch.float64)
    base = field(zs, ts)
    for k in range(depth):
        zk = [z.clone() for z in zs]
        zk[k] = zk[k] + 0.5
        assert (field(zk, ts) - base).abs().max() > 1e-6, f"state of level {k} ignored"
        tk = [t.clone() for t in ts]
        tk[k] = tk[k] * 0.5
        assert (field(zs, tk) - base).abs().max() > 1e-6, f"time of level {k} ignored"


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_gradients_reach_every_level(depth):
    field = _field(depth, 2)
    zs, ts = _inputs(depth, 8, 2)
    field(zs, ts).square().sum().backward()
    for name, p in field.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    # one encoder per level, each with its own parameters
    for mods in (field.space, field.time, field.first):
        assert len(mods) == depth


def test_float64():
    field = _field(2, 3).double()
    zs, ts = _inputs(2, 5, 3, dtype=torch.float64)
    out = field(zs, ts)
    assert out.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in field.parameters())
    # float64 and float32 agree to float32 precision
    out32 = _field(2, 3)([z.float() for z in zs], [t.float() for t in ts])
    torch.testing.assert_close(out.float(), out32, rtol=1e-4, atol=1e-5)


def test_parameter_count_grows_with_depth():
    counts = [sum(p.numel() for p in _field(depth, 3).parameters()) for depth in (1, 2, 3, 4)]
    assert all(a < b for a, b in zip(counts, counts[1:]))
    # each extra level adds exactly one encoder (space, time, first-layer block)
    e, h, d = 8, 16, 3
    per_level = (d * e + e) + (e * e + e) + 2 * e * h
    assert np.diff(counts).tolist() == [per_level] * 3


@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_n_layers(n_layers):
    field = _field(1, 2, n_layers=n_layers)
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in field.trunk)
    assert n_linear == n_layers
    zs, ts = _inputs(1, 3, 2)
    assert field(zs, ts).shape == (3, 2)


def test_bad_arguments():
    field = _field(2, 2)
    zs, ts = _inputs(2, 3, 2)
    with pytest.raises(ValueError, match="depth 2"):
        field(zs[:1], ts[:1])
    with pytest.raises(ValueError, match="depth 2"):
        field(zs, ts[:1])
    with pytest.raises(ValueError, match="n_layers"):
        HierarchicalMLP(1, 2, n_layers=0)
    with pytest.raises(TypeError, match="n_layers"):
        HierarchicalMLP(1, 2, n_layers=2.0)
    with pytest.raises(ValueError, match="depth"):
        HierarchicalMLP(0, 2)
    with pytest.raises(TypeError, match="depth"):
        HierarchicalMLP(1.5, 2)
    assert HierarchicalMLP(np.int64(2), 2, hidden_size=4, embedding_dim=2).depth == 2


@pytest.mark.parametrize("dim", [2, 8, 32])
def test_sinusoidal_embedding(dim):
    emb = SinusoidalEmbedding(dim)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    out = emb.double()(t)
    assert out.shape == (11, dim)
    assert out.dtype == torch.float64
    half = dim // 2
    # sin^2 + cos^2 = 1 per frequency; value at t = 0 is [0, ..., 0, 1, ..., 1]
    torch.testing.assert_close(out[:, :half] ** 2 + out[:, half:] ** 2, torch.ones(11, half,
                               dtype=torch.float64))
    torch.testing.assert_close(out[0], torch.cat([torch.zeros(half), torch.ones(half)]).double())
    # first frequency is 1: sin(1000 t)
    torch.testing.assert_close(out[:, 0], torch.sin(1000 * t))
    if half > 1:
        # the frequencies are stored in float32 (relative error ~1e-7, times 1000 t)
        w1 = math.exp(-math.log(10000.0) / half)
        torch.testing.assert_close(out[:, 1], torch.sin(1000 * w1 * t), rtol=0, atol=1e-4)


@pytest.mark.parametrize("dim", [0, 1, 3, -2])
def test_sinusoidal_embedding_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        SinusoidalEmbedding(dim)


@pytest.mark.parametrize("dim", [4.0, "4", None])
def test_sinusoidal_embedding_non_int_dim(dim):
    with pytest.raises(TypeError, match="dim"):
        SinusoidalEmbedding(dim)
