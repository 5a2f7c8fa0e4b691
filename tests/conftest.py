"""Shared pytest configuration: hypothesis profiles and the ``--device`` option.

Hypothesis profiles (pick one with the environment variable
``HYPOTHESIS_PROFILE``, default ``"ci"``):

- ``"ci"``: no deadline, derandomised (the same examples on every run, so a
  failure is reproducible from the log alone), a modest number of examples.
- ``"dev"``: no deadline, random examples and more of them, for hunting bugs
  locally (``HYPOTHESIS_PROFILE=dev python -m pytest``).

Tests that set ``max_examples`` themselves keep their own value.

``--device`` (default ``"cpu"``) selects where the estimator tests run, e.g.
``python -m pytest --device cuda``; tests read it through the ``device``
fixture.

``one_torch_thread`` runs a test module on one torch intra-op thread: the
modules of small models and many small ops (ODE steps, per-dimension backward
passes, batched linear algebra) opt in with
``pytestmark = pytest.mark.usefixtures("one_torch_thread")``. On a small, busy
machine torch's threads mostly wait on each other there, and one thread also
removes their run-to-run variation. (The root ``conftest.py`` sets the thread
count of the whole session from ``HRFLOW_TEST_THREADS``, default 1; these
modules run on one thread whatever it says.)

``training_pairs`` records what every training iteration hands to the
hierarchy math: a list that fills with ``(x1, x0, t, z)`` (inputs and states of
each :func:`hrflow.hierarchy.training_pair` call, detached copies);
``sample_times_calls`` the ``kind`` of every
:func:`hrflow.time_samplers.sample_times` call of training; ``failing_loss`` is a
function ``failing_loss(at, failure)`` that makes training's regression loss
fail on call ``at`` (0-based): ``"nan"`` returns a NaN loss, ``"interrupt"``
raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=25,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=100,
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        action="store",
        default="cpu",
        help="torch device the estimator tests run on: 'cpu' (default), 'cuda', 'cuda:1', ...",
    )


@pytest.fixture(scope="session")
def device(request) -> str:
    """The device given by ``--device`` (default ``"cpu"``)."""
    return request.config.getoption("--device")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for the whole module; the previous count is restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def training_pairs(monkeypatch):
    """List of ``(x1, x0, t, z)`` of every ``hierarchy.training_pair`` call in the test."""
    from hrflow import hierarchy

    seen = []
    original = hierarchy.training_pair

    def spy(x1, x0, t):
        z, target = original(x1, x0, t)
        seen.append(tuple(a.detach().clone() for a in (x1, x0, t, z)))
        return z, target

    monkeypatch.setattr(hierarchy, "training_pair", spy)
    return seen


@pytest.fixture
def sample_times_calls(monkeypatch):
    """List of the ``kind`` of every ``sample_times`` call made by training in the test."""
    from hrflow import training

    calls = []
    real = training.sample_times

    def spy(kind, *args, **kwargs):
        calls.append(kind)
        return real(kind, *args, **kwargs)

    monkeypatch.setattr(training, "sample_times", spy)
    return calls


@pytest.fixture
def failing_loss(monkeypatch):
    """``failing_loss(at, failure)``: training's loss fails on call ``at`` (0-based)."""
    from hrflow import training

    real = training.regression_loss

    def patch(at, failure):
        if failure not in ("nan", "interrupt"):
            raise ValueError(f"failure must be 'nan' or 'interrupt', got {failure!r}")
        count = [0]

        def loss(*args, **kwargs):
            value = real(*args, **kwargs)
            count[0] += 1
            if count[0] - 1 != at:
                return value
            if failure == "interrupt":
                raise KeyboardInterrupt
            return value * float("nan")

        monkeypatch.setattr(training, "regression_loss", loss)

    return patch
