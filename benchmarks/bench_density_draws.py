"""Spread of a data set's mean log-likelihood: draws shared by the rows vs per row.

A model's mean log-likelihood over a test set is a Monte Carlo estimate (the
source draws of Algorithm 3 at depth >= 2, and Hutchinson probes above 16
features). ``density_draws="shared"`` (the default of ``score_samples``) gives
every row the same draws, so their errors are correlated and the mean keeps
them; ``"per_row"`` gives each row its own, so the mean averages them out. This
script fits one model on a built-in data set and scores ``--rows`` held-out
points under ``--states`` random states in each mode, and prints the mean over
the states and their sample sd (the spread a user sees from one call).

Run:  python benchmarks/bench_density_draws.py [--dataset six_gaussians] [--depth 2]
      [--n-iter 2000] [--rows 2000] [--states 12]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="six_gaussians")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--n-iter", type=int, default=2000)
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--states", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{args.threads} thread(s)", flush=True)
    rng = np.random.default_rng(0)
    X = load_dataset(args.dataset, n_samples=args.n_train, random_state=rng)
    X_test = load_dataset(args.dataset, n_samples=args.rows, random_state=rng)
    start = time.perf_counter()
    est = HRFEstimator(depth=args.depth, n_iter=args.n_iter, device="cpu", random_state=0).fit(X)
    print(f"{args.dataset}: depth {args.depth}, {args.n_iter} iterations, fit "
          f"{time.perf_counter() - start:.0f} s; n_draws {est.n_draws}, {args.rows} test rows, "
          f"{args.states} random states")
    print("| draws | mean log-likelihood (nats) | sd over states |")
    print("|---|---|---|")
    for draws in ("shared", "per_row"):
        means = [est.log_density(X_test, draws=draws, random_state=s).mean() for s in range(args.states)]
        print(f"| {draws} | {np.mean(means):.4f} | {np.std(means, ddof=1):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
