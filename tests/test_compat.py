"""Tests of :mod:`hrflow._compat`: versions hrflow cannot work with are refused at import."""

from __future__ import annotations

import re

import pytest

from hrflow._compat import check_torch_numpy


@pytest.mark.parametrize("torch_version, numpy_version", [
    ("2.1.0", "2.0.0"), ("2.1.0+cu121", "2.0.2"), ("2.2.2", "2.1.0"), ("2.2.0+cpu", "2.4.6"),
])
def test_torch_built_against_numpy_1_is_refused_next_to_numpy_2(torch_version, numpy_version):
    expected = rf"torch {re.escape(torch_version)} .*NumPy {re.escape(numpy_version)}\..*'numpy<2'"
    with pytest.raises(ImportError, match=expected):
        check_torch_numpy(torch_version, numpy_version)


@pytest.mark.parametrize("torch_version, numpy_version", [
    ("2.1.0", "1.24.0"), ("2.2.2", "1.26.4"), ("2.3.0", "2.0.0"), ("2.13.0+cpu", "2.4.6"),
    ("2.3.0a0+git1234", "1.26.4"),
])
def test_working_pairs_pass(torch_version, numpy_version):
    check_torch_numpy(torch_version, numpy_version)


def test_the_installed_pair_passes():
    import numpy
    import torch

    check_torch_numpy(torch.__version__, numpy.__version__)
