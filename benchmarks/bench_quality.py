"""Sample quality vs total NFE for depths 1, 2, 3 (issue 2).

For `1to5` (exact 1-D W1) and `six_gaussians` (sliced W2, 50 projections):
fit depth 1, 2 and 3 with the same network and training budget for several
seeds and sample at equal total NFE. For each total NFE the split of steps
between levels is chosen among *every* factorisation of the budget
(:func:`hrflow.step_allocation.step_allocations`) on a validation draw; the
table reports the test-set distance of that choice (validation and test are
independent held-out draws). The same protocol is run with the exact field
of the data's Gaussian mixture (:mod:`hrflow.analytic`, spec section 5) in
place of the trained network ("oracle" rows): what each depth can reach at
that NFE with a perfect fit. The noise floor (two held-out draws of the same
size) is printed alongside.

Run:  python benchmarks/bench_quality.py [--quick] [--seeds 3] [--n-iter 3000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset, mixture_oracle
from hrflow.metrics import sliced_wasserstein, wasserstein_1d
from hrflow.sampling import nested_euler
from hrflow.sources import StandardNormal
from hrflow.step_allocation import step_allocations

DEPTHS = (1, 2, 3)
NFES = (5, 10, 20, 100)


def metric(dataset, A, B, seed):
    if dataset == "1to5":
        return wasserstein_1d(A, B)
    return sliced_wasserstein(A, B, n_projections=50, random_state=seed)


def oracle_sampler(dataset, depth):
    """``sample(n, steps, random_state)`` of the exact field, in the data's units."""
    oracle = mixture_oracle(dataset)
    field = oracle.field(depth)
    source = StandardNormal((oracle.means.shape[1],))

    def sample(n, steps, random_state):
        gen = torch.Generator().manual_seed(int(random_state))
        return nested_euler(field, n, steps, source, gen, dtype=torch.float64).numpy()

    return sample


def evaluate(sample, dataset, depth, n_eval, X_val, X_test, seed):
    """Best split per NFE on X_val, its distance to X_test: {nfe: (score, steps)}.

    Candidates are scored with ``len(X_val)`` samples, the chosen one with ``n_eval``.
    """
    out = {}
    for nfe in NFES:
        candidates = step_allocations(nfe, depth)
        val = [metric(dataset, sample(len(X_val), s, seed), X_val, seed) for s in candidates]
        steps = candidates[int(np.argmin(val))]
        out[nfe] = (metric(dataset, sample(n_eval, steps, seed + 100), X_test, seed), steps)
    return out


def table(title, rows):
    print(title)
    print("| model | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    for label, per_nfe in rows:
        cells = []
        for nfe in NFES:
            v = np.array([score for score, _ in per_nfe[nfe]])
            picks = ",".join("x".join(map(str, s)) for _, s in per_nfe[nfe])
            cells.append(f"{v.mean():.4f} +- {v.std():.4f} ({picks})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(flush=True)


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
    parser.add_argument("--n-val", type=int, default=5_000, help="validation points per candidate split")
    parser.add_argument("--no-oracle", action="store_true", help="skip the exact-field rows")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n_iter, args.n_eval, args.n_val = 1, 100, 2000, 1000
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; n_iter={args.n_iter}, batch={args.batch_size}, "
          f"lr={args.learning_rate}, seeds={args.seeds}, n_eval={args.n_eval}, n_val={args.n_val}",
          flush=True)
    for dataset in args.datasets:
        trained = {d: {nfe: [] for nfe in NFES} for d in DEPTHS}
        exact = {d: {nfe: [] for nfe in NFES} for d in DEPTHS}
        floors = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(1000 + seed)
            X_train = load_dataset(dataset, n_samples=100_000, random_state=rng)
            X_test = load_dataset(dataset, n_samples=args.n_eval, random_state=rng)
            X_ref = load_dataset(dataset, n_samples=args.n_eval, random_state=rng)
            X_val = load_dataset(dataset, n_samples=args.n_val, random_state=rng)
            floors.append(metric(dataset, X_ref, X_test, seed))
            for depth in DEPTHS:
                t0 = time.perf_counter()
                est = HRFEstimator(depth=depth, n_iter=args.n_iter, batch_size=args.batch_size,
                                   learning_rate=args.learning_rate, device="cpu",
                                   random_state=seed).fit(X_train)
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()

                def sample(n, steps, rs, est=est):
                    return est.sample(n, steps=steps, random_state=rs)

                res = evaluate(sample, dataset, depth, args.n_eval, X_val, X_test, seed)
                for nfe in NFES:
                    trained[depth][nfe].append(res[nfe])
                if not args.no_oracle and seed == 0:  # exact and costly: once
                    res = evaluate(oracle_sampler(dataset, depth), dataset, depth, args.n_eval,
                                   X_val, X_test, seed)
                    for nfe in NFES:
                        exact[depth][nfe].append(res[nfe])
                print(f"  {dataset} seed {seed} depth {depth}: fit {fit_s:.0f} s, "
                      f"evaluation {time.perf_counter() - t0:.0f} s", flush=True)
        name = "W1" if dataset == "1to5" else "sliced W2"
        print(f"\n{dataset}: {name} to held-out data, mean +- sd over {args.seeds} seeds "
              f"(noise floor {np.mean(floors):.4f}); in brackets the split chosen on validation")
        label = {1: "RF (depth 1)", 2: "HRF2", 3: "HRF3"}
        table("trained:", [(label[d], trained[d]) for d in DEPTHS])
        if not args.no_oracle:
            table("exact field (oracle), seed 0 only:", [(label[d] + ", exact", exact[d]) for d in DEPTHS])


if __name__ == "__main__":
    main()
