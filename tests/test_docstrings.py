"""Docstrings of the public API carry runnable Examples sections.

Every function or class that a public module of hrflow lists in ``__all__`` (and
that is defined in hrflow) must have a numpydoc ``Examples`` section, a line
``Examples`` followed by a ``--------`` underline, with at least one ``>>>`` line.
The same holds for the methods of :class:`hrflow.HRFEstimator` that users call.
Exception and warning classes are exempt. The examples themselves run as
doctests (``--doctest-modules`` in the pytest ``addopts``), so this test only
checks that they are there.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import pytest

import hrflow

#: methods of HRFEstimator that users call (absent ones are skipped)
ESTIMATOR_METHODS = (
    "fit", "sample", "score_samples", "score", "log_density", "bits_per_dim",
    "save", "load", "reflow", "sample_pairs", "tune_steps",
)

_HEADER = re.compile(r"^\s*Examples\s*\n\s*-{8,}\s*$", re.MULTILINE)
# any numpydoc section header: a title line underlined with dashes
_NEXT_HEADER = re.compile(r"^\s*\S[^\n]*\n\s*-{3,}\s*$", re.MULTILINE)


def _public_modules():
    yield hrflow
    for info in pkgutil.walk_packages(hrflow.__path__, prefix="hrflow."):
        name = info.name
        if name == "hrflow.cli" or any(part.startswith("_") for part in name.split(".")):
            continue
        yield importlib.import_module(name)


def _is_exempt(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, BaseException)


def _collect() -> dict[str, object]:
    """Canonical name (``module.qualname``) -> object, each object once."""
    found: dict[str, object] = {}
    for module in _public_modules():
        for attr in getattr(module, "__all__", ()):
            obj = getattr(module, attr)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not (getattr(obj, "__module__", None) or "").startswith("hrflow"):
                continue
            if _is_exempt(obj):
                continue
            found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    for method in ESTIMATOR_METHODS:
        obj = getattr(hrflow.HRFEstimator, method, None)
        if obj is not None:
            found[f"hrflow.HRFEstimator.{method}"] = obj
    return found


OBJECTS = _collect()


def examples_section(doc: str | None) -> str | None:
    """Text of the numpydoc Examples section of ``doc`` (None if there is none).

    Examples
    --------
    >>> examples_section("Summary.\\n\\nExamples\\n--------\\n>>> 1 + 1\\n2\\n")
    '>>> 1 + 1\\n2'
    >>> examples_section("Summary.\\n\\nReturns\\n-------\\nint\\n") is None
    True
    """
    doc = inspect.cleandoc(doc or "")
    match = _HEADER.search(doc)
    if match is None:
        return None
    rest = doc[match.end():]
    following = _NEXT_HEADER.search(rest)
    return (rest[: following.start()] if following else rest).strip("\n")


def test_the_walk_finds_the_public_api():
    assert "hrflow.estimator.HRFEstimator" in OBJECTS
    assert "hrflow.HRFEstimator.fit" in OBJECTS
    assert "hrflow.sampling.nested_euler" in OBJECTS
    assert "hrflow.fields.mlp.HierarchicalMLP" in OBJECTS
    assert not any(name.startswith("hrflow.cli.") for name in OBJECTS)
    assert not any(_is_exempt(obj) for obj in OBJECTS.values())


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_docstring_has_examples(name):
    section = examples_section(inspect.getdoc(OBJECTS[name]))
    assert section is not None, f"{name}: no numpydoc 'Examples' section ('Examples' + '--------')"
    assert re.search(r"^\s*>>>", section, re.MULTILINE), f"{name}: its Examples section has no '>>>' line"
