"""Tests of :mod:`hrflow._compat`: a torch that cannot exchange arrays with NumPy is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hrflow._compat import check_torch_numpy


def test_the_installed_pair_passes():
    check_torch_numpy()


def test_a_torch_built_against_numpy_1_next_to_numpy_2_is_refused(monkeypatch):
    # what torch < 2.3 raises next to NumPy 2 (seen with torch 2.1.0 and numpy 2.0.2)
    def no_numpy(array):
        raise RuntimeError("Numpy is not available")

    monkeypatch.setattr(torch, "from_numpy", no_numpy)
    with pytest.raises(ImportError, match=rf"torch .* NumPy {np.__version__}.*'numpy<2'"):
        check_torch_numpy()


def test_other_errors_are_not_disguised(monkeypatch):
    def broken(array):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "from_numpy", broken)
    with pytest.raises(RuntimeError, match="something else"):
        check_torch_numpy()
