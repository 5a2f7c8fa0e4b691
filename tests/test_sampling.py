"""Tests of the nested Euler sampler (spec section 3, paper Algorithm 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hrflow.fields import HierarchicalField, HierarchicalMLP
from hrflow.sampling import INNER_SOLVERS, check_steps, default_steps, nested_euler, nfe
from hrflow.sources import EmpiricalSource, StandardNormal

F64 = torch.float64


# ------------------------------------------------------------------ test fields
class Counting(HierarchicalField):
    """Wraps a field and counts (and records the times of) every encode and head call."""

    def __init__(self, inner: HierarchicalField):
        super().__init__(inner.depth, inner.event_shape)
        self.inner = inner
        self.encodes = [0] * inner.depth
        self.times: list[set] = [set() for _ in range(inner.depth)]
        self.heads = 0

    def encode(self, level, z, t):
        self.encodes[level] += 1
        self.times[level].update(t.tolist())
        return self.inner.encode(level, z, t)

    def head(self, encodings):
        self.heads += 1
        return self.inner.head(encodings)


class Constant(HierarchicalField):
    """``f = c`` everywhere."""

    def __init__(self, depth, c):
        c = torch.as_tensor(c, dtype=F64)
        super().__init__(depth, c.shape)
        self.c = c

    def head(self, encodings):
        z = encodings[-1][0]
        return self.c.to(z.dtype).expand_as(z)


class Decay(HierarchicalField):
    """Depth-1 field ``f(z, t) = -z + t``: ``z(1) = z0 / e + (1 - 1/e) - (1 - 2/e)``."""

    def __init__(self, d):
        super().__init__(1, (d,))

    def head(self, encodings):
        z, t = encodings[0]
        return -z + t.unsqueeze(1)


class Smooth(HierarchicalField):
    """A smooth nonlinear field of every level's state and time (fixed random weights)."""

    def __init__(self, depth, d, seed=0):
        super().__init__(depth, (d,))
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn((depth, d, d), generator=g, dtype=F64) / math.sqrt(d)

    def head(self, encodings):
        h = 0.0
        for k, (z, t) in enumerate(encodings):
            h = h + z @ self.w[k].to(z.dtype) + torch.sin((k + 1) * t).unsqueeze(1)
        return torch.tanh(h) - 0.5 * encodings[-1][0]


def _decay_exact(z0):
    return z0 / math.e + 1 / math.e


def _mlp(depth, d, seed=0):
    field = HierarchicalMLP(depth, d, hidden_size=16, n_layers=2, embedding_dim=8)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in field.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p.shape[-1], 1)))
    return field.double()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ steps
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_none_gives_default_steps(depth):
    steps = check_steps(None, depth)
    assert steps == default_steps(depth)
    assert len(steps) == depth
    assert all(isinstance(s, int) and s >= 1 for s in steps)


def test_default_steps_values():
    assert default_steps(1) == (100,)
    assert default_steps(2) == (20, 5)
    assert nfe(default_steps(2)) == 100


def test_check_steps_accepts():
    assert check_steps(7, 1) == (7,)
    assert check_steps([3, 2], 2) == (3, 2)
    assert check_steps((np.int64(3), np.int32(2)), 2) == (3, 2)
    assert all(type(s) is int for s in check_steps((np.int64(3), np.int32(2)), 2))
    assert check_steps(range(1, 4), 3) == (1, 2, 3)


@pytest.mark.parametrize(
    "steps, depth",
    [
        ((5,), 2),  # too short
        ((5, 5, 5), 2),  # too long
        (5, 2),  # a bare int is only for depth 1
        ((), 1),
        ((0,), 1),
        (0, 1),
        ((5, 0), 2),
        ((-3, 5), 2),
        (-1, 1),
    ],
)
def test_check_steps_value_errors(steps, depth):
    with pytest.raises(ValueError, match="steps"):
        check_steps(steps, depth)


@pytest.mark.parametrize(
    "steps, depth",
    [
        (2.5, 1),
        (5.0, 1),
        ((2.0, 3), 2),
        ((2, 2.5), 2),
        ((True, 3), 2),
        (True, 1),
        ("ab", 2),
        ((None,), 1),
        (object(), 1),
    ],
)
def test_check_steps_type_errors(steps, depth):
    with pytest.raises(TypeError, match="steps"):
        check_steps(steps, depth)


# ------------------------------------------------------------------ nested_euler
@pytest.mark.parametrize("depth, steps", [(1, (4,)), (2, (3, 2)), (3, (2, 2, 3))])
def test_output_shape_and_dtype(depth, steps):
    field = _mlp(depth, 3)
    with torch.no_grad():
        x = nested_euler(field, 5, steps, StandardNormal((3,)), _gen(), dtype=F64)
    assert x.shape == (5, 3)
    assert x.dtype == F64
    assert torch.isfinite(x).all()
    with torch.no_grad():
        x32 = nested_euler(_mlp(depth, 3).float(), 5, steps, StandardNormal((3,)), _gen())
    assert x32.dtype == torch.float32
    torch.testing.assert_close(x32.double(), x, rtol=1e-4, atol=1e-4)


def test_image_event_shape():
    field = Constant(2, torch.full((2, 3, 3), 0.5))
    x, path = nested_euler(field, 4, (3, 2), StandardNormal((2, 3, 3)), _gen(), return_path=True)
    assert x.shape == (4, 2, 3, 3)
    assert path.shape == (4, 4, 2, 3, 3)


@pytest.mark.parametrize("steps", [(7,), (4, 3), (3, 2, 4), (2, 1, 3, 2)])
def test_call_counts_show_encoding_reuse(steps):
    """Exactly prod(steps) head calls, and level k is encoded prod(steps[:k+1]) times."""
    depth = len(steps)
    field = Counting(_mlp(depth, 2))
    with torch.no_grad():
        nested_euler(field, 3, steps, StandardNormal((2,)), _gen(), dtype=F64)
    assert field.heads == math.prod(steps) == nfe(steps)
    assert field.encodes == [math.prod(steps[: k + 1]) for k in range(depth)]
    # every level runs on its own uniform grid j / K_k
    for k in range(depth):
        expected = {j / steps[k] for j in range(steps[k])}
        assert field.times[k] == expected


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_outer_encodings_reused_with_ode_inner_solver(solver):
    steps = (3, 4)
    field = Counting(Smooth(2, 2))
    nested_euler(field, 3, steps, StandardNormal((2,)), _gen(), dtype=F64, inner_solver=solver)
    assert field.encodes[0] == steps[0]
    assert field.encodes[1] == field.heads
    if solver == "rk4":
        assert field.heads >= 4 * steps[0] * steps[1]


def test_states_follow_the_field_device_when_none_is_given():
    """A CPU generator may drive a field elsewhere (``meta`` stands in for a GPU)."""
    field = HierarchicalMLP(2, 1, hidden_size=8, n_layers=1, embedding_dim=4).to("meta")
    x = nested_euler(field, 5, (2, 2), StandardNormal((1,)), torch.Generator().manual_seed(0))
    assert x.device.type == "meta" and x.shape == (5, 1)


def test_same_seed_same_samples_different_seed_differs():
    field = _mlp(2, 2)
    src = StandardNormal((2,))
    with torch.no_grad():
        a = nested_euler(field, 6, (3, 2), src, _gen(1), dtype=F64)
        b = nested_euler(field, 6, (3, 2), src, _gen(1), dtype=F64)
        c = nested_euler(field, 6, (3, 2), src, _gen(2), dtype=F64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().min() > 0


@pytest.mark.parametrize("depth, steps", [(1, (5,)), (2, (4, 3)), (3, (3, 2, 2))])
def test_return_path(depth, steps):
    field = _mlp(depth, 2)
    src = StandardNormal((2,))
    with torch.no_grad():
        x, path = nested_euler(field, 5, steps, src, _gen(3), dtype=F64, return_path=True)
        x_plain = nested_euler(field, 5, steps, src, _gen(3), dtype=F64)
    assert path.shape == (steps[0] + 1, 5, 2)
    # the source is the first draw from the generator
    torch.testing.assert_close(path[0], src.sample(5, _gen(3), dtype=F64), rtol=0, atol=0)
    torch.testing.assert_close(path[-1], x, rtol=0, atol=0)
    torch.testing.assert_close(x_plain, x, rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_return_path_depth_one_ode_solver(solver):
    src = StandardNormal((2,))
    x, path = nested_euler(Decay(2), 4, (8,), src, _gen(), dtype=F64, inner_solver=solver,
                           return_path=True)
    assert path.shape == (9, 4, 2)
    z0 = src.sample(4, _gen(), dtype=F64)
    torch.testing.assert_close(path[0], z0, rtol=0, atol=0)
    torch.testing.assert_close(path[-1], x, rtol=0, atol=0)
    # z(1/2) of dz/dt = -z + t is z0 e^{-1/2} + 1/2 - 1 + e^{-1/2}
    s = math.exp(-0.5)
    torch.testing.assert_close(path[4], z0 * s - 0.5 + s, rtol=0, atol=1e-5)


def test_constant_field_depth_one_is_exact():
    c = torch.tensor([0.5, -2.0, 3.0], dtype=F64)
    src = StandardNormal((3,))
    x, path = nested_euler(Constant(1, c), 10, (7,), src, _gen(), dtype=F64, return_path=True)
    x0 = src.sample(10, _gen(), dtype=F64)
    torch.testing.assert_close(x, x0 + c, rtol=0, atol=1e-14)
    for j in range(8):
        torch.testing.assert_close(path[j], x0 + j * c / 7, rtol=0, atol=1e-14)


def test_constant_field_empirical_source():
    points = np.array([[0.0, 1.0], [5.0, -5.0]])
    c = torch.tensor([1.0, 2.0], dtype=F64)
    x = nested_euler(Constant(1, c), 50, (3,), EmpiricalSource(points), _gen(), dtype=F64)
    moved = (x - c).numpy()
    assert np.isin(moved.round(12).view([("", moved.dtype)] * 2),
                   points.view([("", points.dtype)] * 2)).all()


@pytest.mark.parametrize("steps", [(4, 3), (2, 5), (3, 2, 2)])
def test_constant_field_deeper_levels(steps):
    """Constant innermost field c at depth D.

    Each inner level ends at its fresh N(0, I) start plus the mean of the next
    level's endpoints, so the sample is ``x0 + c + noise`` with per-coordinate
    variance ``1 + 1/K_0 + 1/(K_0 K_1) + ...`` (sum over inner levels) for a
    standard normal source. 20,000 samples: mean and variance within 5 standard
    errors.
    """
    depth = len(steps)
    c = torch.tensor([1.5, -0.5], dtype=F64)
    n = 20_000
    x = nested_euler(Constant(depth, c), n, steps, StandardNormal((2,)), _gen(11), dtype=F64)
    var = 1.0 + sum(1.0 / math.prod(steps[:k]) for k in range(1, depth))
    mean_se = math.sqrt(var / n)
    var_se = var * math.sqrt(2.0 / n)
    torch.testing.assert_close(x.mean(0), c, rtol=0, atol=5 * mean_se)
    torch.testing.assert_close(x.var(0), torch.full((2,), var, dtype=F64), rtol=0, atol=5 * var_se)
    # the coordinates stay independent
    cov = torch.cov(x.T)[0, 1].item()
    assert abs(cov) < 5 * var / math.sqrt(n)


def test_depth_two_constant_field_exact_given_draws():
    """With a constant field the sample is x0 + c + mean_j v0_j, where the draws are
    the source and then one N(0, I) per location step, in order."""
    c = torch.tensor([0.25, -1.0], dtype=F64)
    n, k0 = 6, 4
    x = nested_euler(Constant(2, c), n, (k0, 3), StandardNormal((2,)), _gen(5), dtype=F64)
    g = _gen(5)
    x0 = torch.randn((n, 2), generator=g, dtype=F64)
    v0 = torch.stack([torch.randn((n, 2), generator=g, dtype=F64) for _ in range(k0)])
    torch.testing.assert_close(x, x0 + c + v0.mean(0), rtol=0, atol=1e-13)


def test_decay_field_euler_error():
    """Depth 1, dz/dt = -z + t: Euler with K steps has error O(1/K) against the exact flow."""
    src = StandardNormal((2,))
    z0 = src.sample(8, _gen(), dtype=F64)
    exact = _decay_exact(z0)
    errs = []
    for k in (50, 100, 200):
        x = nested_euler(Decay(2), 8, (k,), src, _gen(), dtype=F64)
        errs.append((x - exact).abs().max().item())
    assert errs[0] < 0.02
    assert errs[1] == pytest.approx(errs[0] / 2, rel=0.05)
    assert errs[2] == pytest.approx(errs[1] / 2, rel=0.05)


@pytest.mark.parametrize("solver, atol", [("rk4", 1e-7), ("dopri5", 1e-5), ("midpoint", 1e-3)])
def test_inner_solver_depth_one_exact(solver, atol):
    src = StandardNormal((2,))
    x = nested_euler(Decay(2), 8, (20,), src, _gen(), dtype=F64, inner_solver=solver,
                     atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(x, _decay_exact(src.sample(8, _gen(), dtype=F64)), rtol=0, atol=atol)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
@pytest.mark.parametrize("depth", [1, 2])
def test_inner_solvers_agree_with_fine_euler(solver, depth):
    """On a smooth field the ODE inner solvers match Euler with many inner steps;
    the same seed gives the same fresh draws for every solver."""
    field = Smooth(depth, 2, seed=4)
    src = StandardNormal((2,))
    outer = (3,) * (depth - 1)
    with torch.no_grad():
        fine = nested_euler(field, 16, outer + (2000,), src, _gen(8), dtype=F64)
        coarse = nested_euler(field, 16, outer + (4,), src, _gen(8), dtype=F64)
        ode = nested_euler(field, 16, outer + (20,), src, _gen(8), dtype=F64,
                           inner_solver=solver, atol=1e-9, rtol=1e-9)
    err = (ode - fine).abs().max().item()
    assert err < 2e-3
    # and the ODE solution is much closer than coarse Euler
    assert err < 0.1 * (coarse - fine).abs().max().item()


@pytest.mark.parametrize("solver", ["Euler", "rk45", "", None])
def test_invalid_inner_solver(solver):
    with pytest.raises(ValueError, match="inner_solver"):
        nested_euler(Constant(1, [1.0]), 2, (2,), StandardNormal((1,)), _gen(), inner_solver=solver)


def test_inner_solvers_listed():
    assert INNER_SOLVERS[0] == "euler"
    assert {"rk4", "dopri5"} <= set(INNER_SOLVERS)


def test_bad_steps_in_nested_euler():
    with pytest.raises(ValueError, match="steps"):
        nested_euler(Constant(2, [1.0]), 2, (2,), StandardNormal((1,)), _gen())
    with pytest.raises(TypeError, match="steps"):
        nested_euler(Constant(1, [1.0]), 2, (2.5,), StandardNormal((1,)), _gen())
