"""Tests of :class:`hrflow.fields.HierarchicalUNet`."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hrflow.divergence import divergence_exact
from hrflow.fields import FIELDS, HierarchicalField, HierarchicalUNet, n_parameters
from hrflow.fields.unet import unet_resolutions

F64 = torch.float64

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.usefixtures("one_torch_thread")]


def _field(depth, shape=(1, 8, 8), seed=0, **kw):
    """A small U-Net in float64 whose parameters are redrawn from a seeded generator.

    Redrawing also replaces the zero initialisation of the last convolutions, so
    that every input reaches the output.
    """
    kw = {"base_channels": 8, "channel_mult": (1, 2), "embedding_dim": 8, "norm_groups": 4, **kw}
    field = HierarchicalUNet(depth, shape, **kw).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in field.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            scale = 0.1 if p.dim() == 1 else 1.0 / math.sqrt(fan_in)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g, dtype=F64))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=F64))
    return field.eval()


def _inputs(depth, n, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    zs = [torch.randn((n, *shape), generator=g, dtype=F64) for _ in range(depth)]
    ts = [torch.rand((n,), generator=g, dtype=F64) for _ in range(depth)]
    return zs, ts


def test_registry():
    assert FIELDS["unet"] is HierarchicalUNet
    assert issubclass(HierarchicalUNet, HierarchicalField)


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 4, 4), (2, 7, 5)])
def test_output_shape(depth, shape):
    field = _field(depth, shape)
    zs, ts = _inputs(depth, 3, shape)
    out = field(zs, ts)
    assert out.shape == (3, *shape) and out.dtype == F64
    assert torch.isfinite(out).all()
    assert field.depth == depth and field.event_shape == shape
    torch.testing.assert_close(field(torch.stack(zs), torch.stack(ts)), out, rtol=0, atol=0)


def test_float32_default_and_untrained_output_is_zero():
    field = HierarchicalUNet(2, (1, 8, 8), base_channels=8)
    zs = [torch.randn(2, 1, 8, 8) for _ in range(2)]
    out = field(zs, [torch.rand(2), torch.rand(2)])
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output convolution


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_forward_equals_head_of_encodings(depth):
    field = _field(depth)
    zs, ts = _inputs(depth, 4)
    encodings = [field.encode(k, zs[k], ts[k]) for k in range(depth)]
    torch.testing.assert_close(field(zs, ts), field.head(encodings), rtol=0, atol=0)


@pytest.mark.parametrize("depth", [2, 3])
def test_encoding_reuse(depth):
    """Outer encodings do not depend on the innermost state: a sampler may keep them."""
    field = _field(depth)
    zs, ts = _inputs(depth, 4)
    zs2, ts2 = _inputs(depth, 4, seed=1)
    new_zs, new_ts = zs[:-1] + [zs2[-1]], ts[:-1] + [ts2[-1]]
    reused = field.head(
        [field.encode(k, zs[k], ts[k]) for k in range(depth - 1)]
        + [field.encode(depth - 1, new_zs[-1], new_ts[-1])]
    )
    torch.testing.assert_close(reused, field(new_zs, new_ts), rtol=0, atol=0)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_input_is_a_convolution_of_the_channel_concatenation(depth):
    """The summed per-level input convolutions equal one convolution of the concatenated states."""
    field = _field(depth, (2, 5, 6))
    zs, ts = _inputs(depth, 3, (2, 5, 6))
    summed = sum(field.encode(k, zs[k], ts[k])[0] for k in range(depth))
    weight = torch.cat([conv.weight for conv in field.inputs], dim=1)  # (base, D * C, 3, 3)
    concat = F.conv2d(torch.cat(zs, dim=1), weight, padding=1)
    torch.testing.assert_close(summed, concat, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_output_depends_on_every_level_state_and_time(depth):
    field = _field(depth)
    zs, ts = _inputs(depth, 3)
    base = field(zs, ts)
    g = torch.Generator().manual_seed(5)
    for k in range(depth):
        zk = [z.clone() for z in zs]
        zk[k] = zk[k] + 0.5 * torch.randn(zk[k].shape, generator=g, dtype=F64)
        assert (field(zk, ts) - base).abs().max() > 1e-4, f"state of level {k} is ignored"
        tk = [t.clone() for t in ts]
        tk[k] = (tk[k] + 0.3) % 1
        assert (field(zs, tk) - base).abs().max() > 1e-4, f"time of level {k} is ignored"


@pytest.mark.parametrize("attention", [(), (4,), (8, 4)])
def test_rows_are_independent(attention):
    """Row i of the output depends only on row i of the inputs (needed by the divergences)."""
    depth = 2
    field = _field(depth, attention_resolutions=attention)
    zs, ts = _inputs(depth, 5)
    full = field(zs, ts)
    perm = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(field([z[perm] for z in zs], [t[perm] for t in ts]), full[perm],
                               rtol=1e-10, atol=1e-12)
    one = field([z[2:3] for z in zs], [t[2:3] for t in ts])
    torch.testing.assert_close(one, full[2:3], rtol=1e-10, atol=1e-12)


def test_exact_divergence_matches_jacobian_trace():
    field = _field(2, (1, 3, 3), attention_resolutions=(2,))
    zs, ts = _inputs(2, 2, (1, 3, 3))
    enc0 = field.encode(0, zs[0], ts[0])

    def fn(v):
        return field.head([enc0, field.encode(1, v, ts[1])])

    _, div = divergence_exact(fn, zs[1])
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v, i=i: field.head([(enc0[0][i : i + 1], enc0[1][i : i + 1]),
                                       field.encode(1, v, ts[1][i : i + 1])]).reshape(-1),
            zs[1][i : i + 1],
        ).reshape(9, 9)
        torch.testing.assert_close(div[i], torch.trace(jac), rtol=1e-9, atol=1e-10)


def test_attention_blocks_and_resolutions():
    plain = HierarchicalUNet(1, (1, 8, 8), base_channels=8)
    attn = HierarchicalUNet(1, (1, 8, 8), base_channels=8, attention_resolutions=(4,))
    assert attn.resolutions == [(8, 8), (4, 4)]
    n_attn = sum(type(m).__name__ == "_Attention" for m in attn.modules())
    # level 1 (4x4): 1 down block + 2 up blocks + the middle block
    assert n_attn == 4
    assert not any(type(m).__name__ == "_Attention" for m in plain.modules())
    assert n_parameters(attn) > n_parameters(plain)
    assert unet_resolutions(28, 28, 3) == [(28, 28), (14, 14), (7, 7)]


def test_dropout_only_in_training_mode():
    field = _field(1, dropout=0.5)
    zs, ts = _inputs(1, 3)
    field.eval()
    torch.testing.assert_close(field(zs, ts), field(zs, ts), rtol=0, atol=0)
    field.train()  # two independent dropout masks (p = 0.5 on hundreds of units) differ
    assert (field(zs, ts) - field(zs, ts)).abs().max() > 0


def test_n_parameters():
    lin = torch.nn.Linear(3, 2)
    assert n_parameters(lin) == 8
    lin.bias.requires_grad_(False)
    assert n_parameters(lin) == 6 and n_parameters(lin, trainable_only=False) == 8
    field = HierarchicalUNet(2, (1, 8, 8), base_channels=8)
    assert n_parameters(field) == sum(p.numel() for p in field.parameters())
    # each extra level adds an input convolution (8 * 1 * 3 * 3) and a time MLP
    deeper = HierarchicalUNet(3, (1, 8, 8), base_channels=8)
    emb, cond = 32, 32
    assert n_parameters(deeper) - n_parameters(field) == 72 + emb * cond + cond + cond * cond + cond
    with pytest.raises(TypeError, match="module"):
        n_parameters("field")


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"event_shape": (8, 8)}, ValueError, "event_shape"),
        ({"event_shape": 64}, TypeError, "event_shape"),
        ({"event_shape": (1, 0, 8)}, ValueError, "event_shape"),
        ({"base_channels": 0}, ValueError, "base_channels"),
        ({"base_channels": 2.5}, TypeError, "base_channels"),
        ({"channel_mult": ()}, ValueError, "channel_mult"),
        ({"channel_mult": 2}, TypeError, "channel_mult"),
        ({"channel_mult": (1, 0)}, ValueError, "channel_mult"),
        ({"n_res_blocks": 0}, ValueError, "n_res_blocks"),
        ({"attention_resolutions": (3,)}, ValueError, "attention_resolutions"),
        ({"attention_resolutions": "4"}, TypeError, "attention_resolutions"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"embedding_dim": 7}, ValueError, "embedding dim"),
        ({"depth": 0}, ValueError, "depth"),
        ({"n_heads": 3, "attention_resolutions": (4,)}, ValueError, "n_heads"),
    ],
)
def test_bad_parameters(kwargs, exc, match):
    args = {"depth": 2, "event_shape": (1, 8, 8), "base_channels": 8, **kwargs}
    with pytest.raises(exc, match=match):
        HierarchicalUNet(**args)


def test_bad_state_shape():
    field = HierarchicalUNet(1, (1, 8, 8), base_channels=8)
    with pytest.raises(ValueError, match="z must have shape"):
        field.encode(0, torch.zeros(2, 64), torch.zeros(2))


@pytest.mark.parametrize("depth", [2, 3])
def test_unet_gradients_reach_every_level(depth):
    """Each level's own time embedding and input layer is used (not level 0's for all)."""
    field = HierarchicalUNet(depth, (1, 8, 8), base_channels=8, channel_mult=(1, 2),
                             embedding_dim=8, norm_groups=4).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # redraw every parameter: the zero-initialised convolutions block gradients
        for p in field.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    zs = [torch.randn((3, 1, 8, 8), generator=g, dtype=torch.float64) for _ in range(depth)]
    ts = [torch.rand((3,), generator=g, dtype=torch.float64) for _ in range(depth)]
    field(zs, ts).square().sum().backward()
    for k in range(depth):
        for modules in (field.time, field.inputs):
            for name, p in modules[k].named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"level {k}: {name}"

