"""Tests of the device and dtype resolution in :mod:`hrflow._device`."""

from __future__ import annotations

import warnings

import pytest
import torch

from hrflow._device import resolve_device


@pytest.mark.parametrize("device", ["xpu", "xpu:0", "hpu", "privateuseone", "vulkan", "meta",
                                    "mkldnn", torch.device("meta")])
def test_unsupported_device_types_are_refused_naming_the_forms(device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that 'mkldnn' is deprecated
        with pytest.raises(ValueError, match=r"'device'.*'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            resolve_device(device)


@pytest.mark.parametrize("device", ["gpu", "cpu:x", ""])
def test_unparsable_devices_are_refused_naming_the_forms(device):
    with pytest.raises(ValueError, match=r"'device'.*'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_a_gpu_is_a_value_error(device):
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device(device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_unavailable_is_a_value_error():
    with pytest.raises(ValueError, match="device='mps'.*not available"):
        resolve_device("mps")


def test_supported_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == expected


def test_device_of_the_wrong_type():
    with pytest.raises(TypeError, match="'device'"):
        resolve_device(3)
