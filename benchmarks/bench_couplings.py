"""Couplings and training techniques (issue 5): where they help few-step sampling.

1. 8 Gaussians -> moons (the paper's source and target, sliced W2 with 50
   projections against held-out data): RF and OT-RF (depth 1, independent and
   mini-batch OT coupling), HRF2, HRF2 with the location level coupled
   (``coupling="ot_location"``, HOTCFM2) and HRF2 with the velocity level
   coupled within groups of 16 rows sharing a location state
   (``coupling="ot_velocity"``), at NFE 1, 2, 5, 10, 100. Every model has the same
   network, batch and iterations. For HRF2 the split of each NFE budget over
   the two levels is chosen by ``tune_steps`` on a validation draw; the table
   reports the test-set distance of that choice (validation and test are
   independent held-out draws).
2. ``1to5`` (exact 1-D W1): HRF2 with the default training (uniform times,
   L2 loss) vs ``time_sampler="u_shaped"``, ``loss="pseudo_huber"`` (default
   constant ``0.00054 sqrt(d)``) and both, at NFE 1, 2, 5, 10 (splits by
   ``tune_steps`` on a validation draw).
3. ``tune_steps`` vs the exhaustive grid: for the HRF2 models of part 1, the
   test distance of the split that ``tune_steps`` picked on the validation
   draw, next to the best split of the whole grid judged on the test set
   itself (an oracle choice), and the default ``(20, 5)`` at NFE 100.

Run:  python benchmarks/bench_couplings.py [--quick] [--seeds 3] [--n-iter 2000]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hrflow import HRFEstimator
from hrflow.datasets import eight_gaussians_source, load_dataset
from hrflow.metrics import sliced_wasserstein, wasserstein_1d
from hrflow.step_allocation import step_allocations

NFES = (1, 2, 5, 10, 100)
MOONS_MODELS = [  # label, depth, coupling
    ("RF", 1, "independent"),
    ("OT-RF", 1, "ot_location"),
    ("HRF2", 2, "independent"),
    ("HRF2 + ot_location", 2, "ot_location"),
    ("HRF2 + ot_velocity", 2, "ot_velocity"),
]
GROUP_SIZE = 16  # coupling_group_size of "ot_velocity": 16 groups per batch of 256
TECHNIQUES = [  # label, estimator parameters
    ("HRF2 default (uniform, l2)", {}),
    ("HRF2 u_shaped", {"time_sampler": "u_shaped"}),
    ("HRF2 pseudo_huber", {"loss": "pseudo_huber"}),
    ("HRF2 u_shaped + pseudo_huber", {"time_sampler": "u_shaped", "loss": "pseudo_huber"}),
]
TECH_NFES = (1, 2, 5, 10)


def cell(values, picks=None):
    v = np.asarray(values, dtype=float)
    out = f"{v.mean():.3f} +- {v.std():.3f}"
    if picks:
        out += " (" + ",".join("x".join(map(str, s)) for s in picks) + ")"
    return out


def steps_for(est, nfe, X_val, n_eval, seed, criterion):
    if est.depth == 1:
        return (nfe,)
    est.tune_steps(X_val, nfe=nfe, criterion=criterion, n_samples=n_eval, random_state=seed)
    return est.steps_


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 60 iterations: a smoke run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--n-iter", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--n-eval", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", nargs="+", default=["moons", "techniques"],
                        choices=["moons", "techniques"])
    parser.add_argument("--models", nargs="+", default=None,
                        help="moons: only the models with these labels (default: all)")
    args = parser.parse_args(argv)
    moons_models = [m for m in MOONS_MODELS if args.models is None or m[0] in args.models]
    if args.quick:
        args.seeds, args.n_iter, args.n_eval, args.n_train = 1, 60, 1000, 5000
    torch.set_num_threads(args.threads)
    common = dict(n_iter=args.n_iter, batch_size=args.batch_size, learning_rate=args.learning_rate,
                  device="cpu")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}; n_iter={args.n_iter}, batch={args.batch_size}, "
          f"lr={args.learning_rate}, n_train={args.n_train}, seeds={args.seeds}, "
          f"n_eval={args.n_eval}", flush=True)
    t_all = time.perf_counter()

    if "moons" in args.parts:
        res = {m[0]: {n: [] for n in NFES} for m in moons_models}
        picks = {m[0]: {n: [] for n in NFES} for m in moons_models}
        fit_s = {m[0]: [] for m in moons_models}
        grid_rows = {n: {"tuned": [], "oracle": [], "oracle_pick": [], "default": []} for n in (10, 100)}
        floors = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(2000 + seed)
            X_train = load_dataset("moons", args.n_train, random_state=rng)
            X_val = load_dataset("moons", args.n_eval, random_state=rng)
            X_test = load_dataset("moons", args.n_eval, random_state=rng)
            X_ref = load_dataset("moons", args.n_eval, random_state=rng)
            floors.append(sliced_wasserstein(X_ref, X_test, random_state=seed))
            for label, depth, coupling in moons_models:
                t0 = time.perf_counter()
                est = HRFEstimator(depth=depth, source=eight_gaussians_source(), coupling=coupling,
                                   coupling_group_size=GROUP_SIZE, random_state=seed,
                                   **common).fit(X_train)
                fit_s[label].append(time.perf_counter() - t0)
                for nfe in NFES:
                    steps = steps_for(est, nfe, X_val, args.n_eval, seed, "sliced_wasserstein")
                    X_gen = est.sample(args.n_eval, steps=steps, random_state=seed + 100)
                    res[label][nfe].append(sliced_wasserstein(X_gen, X_test, random_state=seed))
                    picks[label][nfe].append(steps)
                    if label == "HRF2" and nfe in grid_rows:
                        grid = step_allocations(nfe, 2)
                        test = [sliced_wasserstein(est.sample(args.n_eval, steps=s,
                                                              random_state=seed + 100),
                                                   X_test, random_state=seed) for s in grid]
                        row = grid_rows[nfe]
                        row["tuned"].append(res[label][nfe][-1])
                        row["oracle"].append(min(test))
                        row["oracle_pick"].append(grid[int(np.argmin(test))])
                        if nfe == 100:
                            row["default"].append(test[grid.index((20, 5))])
                print(f"  moons seed {seed} {label}: fit {fit_s[label][-1]:.0f} s", flush=True)
        print(f"\n8 Gaussians -> moons: sliced W2 (50 projections) to held-out data, mean +- sd over "
              f"{args.seeds} seeds; HRF2 splits chosen by tune_steps on a validation draw "
              f"(noise floor: two held-out draws, {np.mean(floors):.3f})")
        print("| model | fit s | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
        print("|---|---|" + "---|" * len(NFES))
        for label, depth, _ in moons_models:
            cells = [cell(res[label][n], picks[label][n] if depth > 1 else None) for n in NFES]
            print(f"| {label} | {np.mean(fit_s[label]):.0f} | " + " | ".join(cells) + " |")
        if "HRF2" in res:
            print("\ntune_steps vs the exhaustive grid (HRF2, moons, test-set sliced W2)")
            print("| NFE | tune_steps (validation pick) | best of grid on test (oracle pick) | "
                  "default (20, 5) |")
            print("|---|---|---|---|")
        for nfe, row in grid_rows.items() if "HRF2" in res else ():
            default = cell(row["default"]) if row["default"] else "-"
            print(f"| {nfe} | {cell(row['tuned'], picks['HRF2'][nfe])} | "
                  f"{cell(row['oracle'], row['oracle_pick'])} | {default} |")
        print(flush=True)

    if "techniques" in args.parts:
        res = {t[0]: {n: [] for n in TECH_NFES} for t in TECHNIQUES}
        picks = {t[0]: {n: [] for n in TECH_NFES} for t in TECHNIQUES}
        floors = []
        for seed in range(args.seeds):
            rng = np.random.default_rng(3000 + seed)
            X_train = load_dataset("1to5", args.n_train, random_state=rng)
            X_val = load_dataset("1to5", args.n_eval, random_state=rng)
            X_test = load_dataset("1to5", args.n_eval, random_state=rng)
            X_ref = load_dataset("1to5", args.n_eval, random_state=rng)
            floors.append(wasserstein_1d(X_ref, X_test))
            for label, params in TECHNIQUES:
                t0 = time.perf_counter()
                est = HRFEstimator(depth=2, random_state=seed, **common, **params).fit(X_train)
                for nfe in TECH_NFES:
                    steps = steps_for(est, nfe, X_val, args.n_eval, seed, "wasserstein")
                    X_gen = est.sample(args.n_eval, steps=steps, random_state=seed + 100)
                    res[label][nfe].append(wasserstein_1d(X_gen, X_test))
                    picks[label][nfe].append(steps)
                print(f"  1to5 seed {seed} {label}: fit {time.perf_counter() - t0:.0f} s", flush=True)
        print(f"\n1to5: W1 to held-out data, mean +- sd over {args.seeds} seeds; splits by tune_steps "
              f"(noise floor {np.mean(floors):.4f})")
        print("| training | " + " | ".join(f"NFE {n}" for n in TECH_NFES) + " |")
        print("|---|" + "---|" * len(TECH_NFES))
        for label, _ in TECHNIQUES:
            print(f"| {label} | " + " | ".join(cell(res[label][n], picks[label][n])
                                               for n in TECH_NFES) + " |")
        print(flush=True)
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
