"""Tests of :mod:`hrflow._random`: draws on the generator's device, results where asked.

A machine without a GPU cannot pair a CPU generator with a CUDA tensor, so the
device handling is checked with a spy on torch's samplers (the draw must be
made on the generator's device while the result lands on the requested one,
here ``meta``), a static check that every generator-driven draw of the package
goes through these helpers, and, where a GPU exists, the real thing.
"""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch

import hrflow
from hrflow import _random

PACKAGE = pathlib.Path(hrflow.__file__).parent
SAMPLERS = ("randn", "rand", "randint")


def _call(name, generator, device=None):
    if name == "randint":
        return _random.randint(0, 7, (3, 2), generator, device=device)
    return getattr(_random, name)((3, 2), generator, device=device, dtype=torch.float64)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_numbers_as_torch_with_the_same_generator(name):
    ours = _call(name, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    if name == "randint":
        theirs = torch.randint(0, 7, (3, 2), generator=g)
    else:
        theirs = getattr(torch, name)((3, 2), generator=g, dtype=torch.float64)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("name", SAMPLERS)
def test_draws_on_the_generator_device_and_returns_on_the_requested_one(name, monkeypatch):
    seen = []
    original = getattr(torch, name)

    def spy(*args, **kwargs):
        seen.append(torch.device(kwargs["device"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, name, spy)
    out = _call(name, torch.Generator(), device="meta")
    assert seen == [torch.device("cpu")]  # where the CPU generator lives
    assert out.device == torch.device("meta")  # where the caller wants the draws


@pytest.mark.parametrize("name", SAMPLERS)
def test_device_defaults_to_the_generator_and_none_uses_the_global_generator(name):
    assert _call(name, torch.Generator()).device == torch.device("cpu")
    torch.manual_seed(5)
    a = _call(name, None)
    torch.manual_seed(5)
    assert torch.equal(a, _call(name, None, device="cpu"))


def _generator_draws_outside_random():
    """``torch.randn/rand/randint(..., generator=...)`` calls outside ``_random.py``."""
    hits = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_random.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SAMPLERS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
                and any(k.arg == "generator" for k in node.keywords)
            ):
                hits.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return hits


def test_every_generator_driven_draw_of_the_package_goes_through_the_helpers():
    assert _generator_draws_outside_random() == []


def test_the_static_check_sees_a_direct_draw(tmp_path, monkeypatch):
    (tmp_path / "bad.py").write_text("import torch\nx = torch.randn(3, generator=g, device=d)\n")
    monkeypatch.setitem(globals(), "PACKAGE", tmp_path)
    assert _generator_draws_outside_random() == ["bad.py:2"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_generator_drives_cuda_draws_in_the_functional_api():
    from hrflow.analytic import paper_mixture
    from hrflow.sampling import nested_euler
    from hrflow.sources import StandardNormal
    from hrflow.time_samplers import sample_times
    from hrflow.training import training_batch

    cuda = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    for kind in ("uniform", "u_shaped", "logit_normal"):
        assert sample_times(kind, 4, gen, device=cuda).device.type == "cuda"
    data = torch.randn(16, 1, device=cuda)
    x1, x0, t = training_batch(data, StandardNormal((1,)), 3, 8, gen, samplers=("uniform",) * 3)
    assert {x1.device.type, x0.device.type, t.device.type} == {"cuda"}
    field = paper_mixture("1to2").field(2).to(cuda)
    x = nested_euler(field, 8, (2, 2), StandardNormal((1,)), gen, device=cuda, dtype=torch.float64)
    assert x.device.type == "cuda"
