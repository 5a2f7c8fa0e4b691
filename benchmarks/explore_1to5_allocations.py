"""Exploratory single-seed run: depth 1 vs depth 2 on 1to5 at several step splits.

Usage: python benchmarks/explore_1to5_allocations.py N_ITER BATCH LR HIDDEN
(e.g. ``4000 4096 2e-3 128``). An early exploration; benchmarks/README.md does not
quote it (its tables come from bench_quality.py).
"""

import sys
import time

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset

SPLITS = {
    1: [(5,), (10,), (20,), (100,)],
    2: [(1, 5), (2, 5), (5, 2), (1, 10), (4, 5), (2, 10), (20, 5), (10, 10), (5, 20)],
}


def main():
    torch.set_num_threads(1)
    n_iter, batch, lr, hidden = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    rng = np.random.default_rng(0)
    X_train = load_dataset("1to5", 100_000, rng)
    X_test = load_dataset("1to5", 20_000, rng)
    for depth, splits in SPLITS.items():
        t0 = time.time()
        est = HRFEstimator(depth=depth, n_iter=n_iter, batch_size=batch, learning_rate=lr,
                           hidden_size=hidden, random_state=0).fit(X_train)
        fit_s = time.time() - t0
        res = {s: round(float(wasserstein_distance(
            est.sample(20_000, steps=s, random_state=1)[:, 0], X_test[:, 0])), 4) for s in splits}
        print(depth, f"fit {fit_s:.1f}s", res, flush=True)


if __name__ == "__main__":
    main()
