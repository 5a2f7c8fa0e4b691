"""Root conftest.

* keeps `python -m hrflow`'s entry module out of doctest collection;
* runs torch on one thread during tests (set HRFLOW_TEST_THREADS to change):
  the tests use small batches, for which a second OpenMP thread mostly waits,
  and on a loaded 2-core machine two threads per process run 3-15x slower.
"""

import os

import pytest
import torch

collect_ignore = ["hrflow/__main__.py"]


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("HRFLOW_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(before)
