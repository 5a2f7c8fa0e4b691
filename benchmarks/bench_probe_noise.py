"""Noise of Hutchinson log-densities, per row and averaged over a data set.

By default ``score_samples`` draws its random numbers once per call and shares
them by all rows (``density_draws="shared"``, common random numbers,
:mod:`hrflow.density`): a row's score does not depend on the other rows, but the
Hutchinson probe noise of different rows is correlated, so averaging over rows
(a data set's mean log-likelihood or bits/dim) does not average it away;
``density_draws="per_row"`` draws independent probes per row. This script
measures both: it fits a
small model on scikit-learn's digits (64 features, scaled to [0, 1]), scores
``--rows`` test rows with the exact divergence once and with Hutchinson probes
under ``--seeds`` random states, for each ``n_draws``, and prints

- the per-row standard deviation of the Hutchinson error (nats),
- the mean correlation of the errors of two rows,
- the standard deviation of the row-mean error, and what it would be with
  independent probes per row (per-row sd / sqrt(rows)),
- the same two measured with ``draws="per_row"`` (same states; the exact
  reference uses the same source draws, so the difference is again the
  probes' error alone).

Run:  python benchmarks/bench_probe_noise.py [--depth 1] [--rows 60] [--seeds 12]
      [--n-draws 1 4] [--n-iter 300]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from hrflow import HRFEstimator


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--n-draws", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--n-iter", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{args.threads} thread(s)", flush=True)

    X = load_digits().data / 16.0
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    X_train, X_test = X[idx[:-args.rows]], X[idx[-args.rows:]]
    start = time.perf_counter()
    est = HRFEstimator(depth=args.depth, n_iter=args.n_iter, batch_size=256, ode_steps=8,
                       device="cpu", random_state=0).fit(X_train)
    print(f"fit: depth {args.depth}, {args.n_iter} iterations, {time.perf_counter() - start:.0f} s")
    print("n_draws | shared: per-row sd | row-row corr | sd of row mean | sd if independent "
          "| per_row: per-row sd | row-row corr | sd of row mean")

    def errors(n_draws, draws):
        # same seed, same source draws: the difference is the probes' error alone
        exact = [est.log_density(X_test, divergence="exact", n_draws=n_draws, random_state=s,
                                 draws=draws) for s in range(args.seeds)]
        hutch = [est.log_density(X_test, divergence="hutchinson", n_draws=n_draws, random_state=s,
                                 draws=draws) for s in range(args.seeds)]
        err = np.array(hutch) - np.array(exact)  # (seeds, rows)
        corr = np.corrcoef(err.T)[np.triu_indices(args.rows, 1)].mean()
        return err.std(axis=0, ddof=1).mean(), corr, err.mean(axis=1).std(ddof=1)

    for n_draws in args.n_draws:
        sd, corr, sd_mean = errors(n_draws, "shared")
        sd_r, corr_r, sd_mean_r = errors(n_draws, "per_row")
        print(f"{n_draws:7d} | {sd:18.4f} | {corr:12.2f} | {sd_mean:14.4f} | "
              f"{sd / np.sqrt(args.rows):17.4f} | {sd_r:19.4f} | {corr_r:12.2f} | {sd_mean_r:14.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
