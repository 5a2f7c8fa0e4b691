"""Sample quality vs total NFE for depths 1, 2, 3 (issue 2).

For `1to5` (exact 1-D W1) and `six_gaussians` (sliced W2, 50 projections):
fit depth 1, 2 and 3 with the same network and training budget for several
seeds and sample at equal total NFE. For each total NFE, the split of steps
between levels is chosen among a few candidates on a validation draw; the
table reports the test-set distance of that choice (validation and test are
independent held-out draws). The noise floor (two held-out draws of the same
size) is printed alongside.

Run:  python benchmarks/bench_quality.py [--quick] [--seeds 3] [--n-iter 5000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset
from hrflow.metrics import sliced_wasserstein, wasserstein_1d

#: candidate steps per level at each total NFE, outermost first
ALLOCATIONS = {
    1: {5: [(5,)], 10: [(10,)], 20: [(20,)], 100: [(100,)]},
    2: {5: [(1, 5), (5, 1)], 10: [(1, 10), (2, 5), (5, 2)],
        20: [(1, 20), (2, 10), (4, 5), (5, 4)], 100: [(5, 20), (10, 10), (20, 5)]},
    3: {5: [(1, 5, 1), (1, 1, 5)], 10: [(1, 5, 2), (2, 5, 1), (1, 2, 5)],
        20: [(1, 5, 4), (2, 5, 2), (1, 10, 2), (4, 5, 1)],
        100: [(5, 5, 4), (4, 5, 5), (5, 10, 2), (2, 10, 5)]},
}


def metric(dataset, A, B, seed):
    if dataset == "1to5":
        return wasserstein_1d(A, B)
    return sliced_wasserstein(A, B, n_projections=50, random_state=seed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-iter", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-eval", type=int, default=20_000)
    parser.add_argument("--datasets", nargs="+", default=["1to5", "six_gaussians"])
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n_iter, args.n_eval = 1, 100, 2000
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; n_iter={args.n_iter}, batch={args.batch_size}, "
          f"lr={args.learning_rate}, seeds={args.seeds}, n_eval={args.n_eval}")
    for dataset in args.datasets:
        results = {d: {nfe: [] for nfe in ALLOCATIONS[d]} for d in ALLOCATIONS}
        chosen = {d: {nfe: [] for nfe in ALLOCATIONS[d]} for d in ALLOCATIONS}
        floors = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            X_train = load_dataset(dataset, n_samples=100_000, random_state=rng)
            X_test = load_dataset(dataset, n_samples=args.n_eval, random_state=rng)
            X_ref = load_dataset(dataset, n_samples=args.n_eval, random_state=rng)
            X_val = load_dataset(dataset, n_samples=args.n_eval, random_state=rng)
            floors.append(metric(dataset, X_ref, X_test, seed))
            for depth, allocs in ALLOCATIONS.items():
                t0 = time.perf_counter()
                est = HRFEstimator(depth=depth, n_iter=args.n_iter, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, device="cpu",
                                   random_state=seed).fit(X_train)
                fit_s = time.perf_counter() - t0
                for nfe, candidates in allocs.items():
                    val = [metric(dataset, est.sample(args.n_eval, steps=s, random_state=seed),
                                  X_val, seed) for s in candidates]
                    steps = candidates[int(np.argmin(val))]
                    X_gen = est.sample(args.n_eval, steps=steps, random_state=seed + 100)
                    results[depth][nfe].append(metric(dataset, X_gen, X_test, seed))
                    chosen[depth][nfe].append(steps)
                print(f"  {dataset} seed {seed} depth {depth}: fit {fit_s:.0f} s", flush=True)
        name = "W1" if dataset == "1to5" else "sliced W2"
        nfes = sorted(ALLOCATIONS[1])
        print(f"\n{dataset}: {name} to held-out data, mean +- sd over {args.seeds} seeds "
              f"(noise floor {np.mean(floors):.4f})")
        print("| model | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        print("|---|" + "---|" * len(nfes))
        for depth in ALLOCATIONS:
            cells = []
            for nfe in nfes:
                v = np.array(results[depth][nfe])
                picks = ",".join("x".join(map(str, s)) for s in chosen[depth][nfe])
                cells.append(f"{v.mean():.4f} +- {v.std():.4f} ({picks})")
            label = "RF (depth 1)" if depth == 1 else f"HRF{depth}"
            print(f"| {label} | " + " | ".join(cells) + " |")
        print(flush=True)


if __name__ == "__main__":
    main()
