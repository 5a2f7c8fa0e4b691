"""Torch threads under joblib: GridSearchCV(n_jobs=2) must not oversubscribe the cores.

HRFEstimator never calls ``torch.set_num_threads``: torch's intra-op pool follows
the environment (``OMP_NUM_THREADS``, read when torch is imported). joblib's
default ``loky`` backend starts its worker processes with ``OMP_NUM_THREADS`` (and
the MKL/OpenBLAS variables) set to ``cpu_count() // n_jobs`` unless the parent
already sets them, so in ``GridSearchCV(n_jobs=2)`` each worker's torch uses half
the cores. The test reads ``torch.get_num_threads()`` inside the workers through
a scorer and compares it with joblib's rule; a plain fit in the parent keeps the
parent's thread count.
"""

from __future__ import annotations

import os

import joblib
import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV

from hrflow import HRFEstimator

TINY = dict(n_iter=3, batch_size=16, hidden_size=8, n_layers=1, embedding_dim=4, n_draws=1,
            ode_steps=2, steps=(2, 2), device="cpu", random_state=0)


def _expected_worker_threads(n_jobs: int) -> int:
    # joblib's LokyBackend._prepare_worker_env: the parent's value if set, else cpu_count // n_jobs
    return int(os.environ.get("OMP_NUM_THREADS", max(joblib.cpu_count() // n_jobs, 1)))


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).normal(size=(60, 2))


def test_grid_search_n_jobs_2_runs_with_limited_torch_threads(X):
    # a lambda is shipped to the workers by value (cloudpickle); it reports their thread count
    scorer = lambda est, X, y=None: float(torch.get_num_threads())  # noqa: E731
    search = GridSearchCV(HRFEstimator(**TINY), {"hidden_size": [4, 8]}, cv=2, n_jobs=2,
                          scoring=scorer, refit=False)
    search.fit(X)
    threads = search.cv_results_["split0_test_score"].tolist() + \
        search.cv_results_["split1_test_score"].tolist()
    assert set(threads) == {float(_expected_worker_threads(2))}


def test_grid_search_n_jobs_2_gives_the_serial_result(X):
    grid = {"hidden_size": [4, 8]}
    parallel = GridSearchCV(HRFEstimator(**TINY), grid, cv=2, n_jobs=2).fit(X)
    serial = GridSearchCV(HRFEstimator(**TINY), grid, cv=2, n_jobs=1).fit(X)
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], rtol=1e-5)
    assert parallel.best_params_ == serial.best_params_
    assert np.isfinite(parallel.best_estimator_.score(X))


def test_fit_leaves_the_thread_count_alone(X):
    before = torch.get_num_threads()
    HRFEstimator(**TINY).fit(X).score_samples(X[:3])
    assert torch.get_num_threads() == before
