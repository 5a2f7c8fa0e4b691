"""Sample quality vs total NFE for depths 1, 2, 3 (issue 2).

For `1to5` (exact 1-D W1) and `six_gaussians` (sliced W2, 50 projections):
fit depth 1, 2 and 3 with the same network (``--hidden-size``, ``--n-layers``)
and training budget for several seeds and sample at equal total NFE. For each
total NFE the split of steps between levels is chosen among *every*
factorisation of the budget
(:func:`hrflow.step_allocation.step_allocations`) on a validation draw; the
table reports the test-set distance of that choice (validation and test are
independent held-out draws). The same protocol is run with the exact field
of the data's Gaussian mixture (:mod:`hrflow.analytic`, spec section 5) in
place of the trained network ("oracle" rows): what each depth can reach at
that NFE with a perfect fit. The noise floor (two held-out draws of the same
size) is printed alongside.

The test score of a chosen split is the mean over ``--test-draws`` independent
pairs (generated sample, held-out draw), which lowers the metric's noise;
``--all-splits`` scores *every* split on the test draws (mean and sd over the
draws), which shows how much the choice on one validation draw is luck. Every
random state (generated samples, sliced-W2 projections) is distinct across seeds,
draws and validation (:func:`states`); runs before this rule shared some across
seeds (seed ``s``, draw ``k`` used ``s + 100 + k``) and validation shared its
projections with test draw 0. The +- of the tables is the sample sd over seeds
(``ddof=1``; runs before it printed the population sd, 0.82 times as large for
three seeds). The
fits of the (seed, depth) cells run in ``--jobs`` processes of ``--threads``
torch threads each (joblib). With ``--model-dir DIR`` each fitted model is saved
there (``HRFEstimator.save``) and reused by a later run with the same data set,
seed, depth, network and training settings, so that a change of the evaluation
(more test points, more draws) needs no refit. The file name records those
settings, not the code: empty DIR after changing hrflow's training.

Run:  python benchmarks/bench_quality.py [--quick] [--seeds 3] [--first-seed 0] [--n-iter 3000]
      [--jobs 2] [--test-draws 1] [--no-oracle | --oracle-only] [--model-dir DIR]
      [--time-sampler u_shaped uniform] [--show-candidates] [--all-splits]
      [--nfes 5 10 20 100]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from joblib import Parallel, delayed

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset, mixture_oracle
from hrflow.metrics import sliced_wasserstein, wasserstein_1d
from hrflow.sampling import nested_euler
from hrflow.sources import StandardNormal
from hrflow.step_allocation import step_allocations
from hrflow.time_samplers import TIME_SAMPLERS

DEPTHS = (1, 2, 3)
NFES = (5, 10, 20, 100)


def states(seed, k=None):
    """Random states of seed ``seed``: ``(sample, projections)`` of validation, or of test draw ``k``.

    Disjoint across seeds, draws and validation, and for seed 0 the test states
    of earlier runs (``100 + k`` and ``k``).
    """
    if k is None:
        return 1000 * seed, 1000 * seed + 999
    return 1000 * seed + 100 + k, 1000 * seed + k


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


def evaluate(sample, dataset, depth, n_eval, X_val, X_tests, seed, label=None, nfes=NFES,
             all_splits_label=None):
    """Best split per NFE on X_val, its distance to the X_tests: {nfe: (score, steps)}.

    Candidates are scored with ``len(X_val)`` samples; the chosen one with
    ``n_eval`` samples against each draw in ``X_tests`` (a fresh sample each),
    and the mean is reported. With a ``label`` the validation score of every
    candidate is printed under it; with an ``all_splits_label`` every candidate's
    test scores (mean +- sd over the draws) too.
    """
    val_sample, val_proj = states(seed)

    def test_scores(steps):
        return [metric(dataset, sample(n_eval, steps, states(seed, k)[0]), X_test, states(seed, k)[1])
                for k, X_test in enumerate(X_tests)]

    out = {}
    for nfe in nfes:
        candidates = step_allocations(nfe, depth)
        val = [metric(dataset, sample(len(X_val), s, val_sample), X_val, val_proj) for s in candidates]
        if label is not None:
            print(f"  {label} NFE {nfe} validation: " + ", ".join(
                f"{'x'.join(map(str, s))} {v:.4f}" for s, v in zip(candidates, val)), flush=True)
        steps = candidates[int(np.argmin(val))]
        if all_splits_label is not None:
            every = {s: test_scores(s) for s in candidates}
            print(f"  {all_splits_label} NFE {nfe} test, every split: " + ", ".join(
                f"{'x'.join(map(str, s))} {np.mean(v):.4f} +- {np.std(v, ddof=1) if len(v) > 1 else 0:.4f}"
                for s, v in every.items()), flush=True)
            score = np.mean(every[steps])
        else:
            score = np.mean(test_scores(steps))
        out[nfe] = (float(score), steps)
    return out


def data(dataset, seed, n_eval, n_val, test_draws):
    """Training, test draws, reference draws (noise floor) and validation of one seed."""
    rng = np.random.default_rng(1000 + seed)
    X_train = load_dataset(dataset, n_samples=100_000, random_state=rng)
    X_tests = [load_dataset(dataset, n_samples=n_eval, random_state=rng) for _ in range(test_draws)]
    X_refs = [load_dataset(dataset, n_samples=n_eval, random_state=rng) for _ in range(test_draws)]
    X_val = load_dataset(dataset, n_samples=n_val, random_state=rng)
    return X_train, X_tests, X_refs, X_val


def model_path(args, dataset, seed, depth):
    """Where ``--model-dir`` keeps the fit of one cell (None without it)."""
    if args.model_dir is None:
        return None
    samplers = level_time_samplers(args.time_sampler, depth)
    # uniform at every level (the default) keeps the names of earlier runs
    ts = "" if set(samplers) == {"uniform"} else "_ts" + "-".join(samplers)
    name = (f"{dataset}_seed{seed}_depth{depth}_iter{args.n_iter}_batch{args.batch_size}"
            f"_lr{args.learning_rate:g}_hidden{args.hidden_size}x{args.n_layers}{ts}.hrf")
    return Path(args.model_dir) / name


def level_time_samplers(names, depth):
    """``--time-sampler`` names for a depth-``depth`` model, outermost level first.

    Levels beyond the names given use the last one: ``["u_shaped", "uniform"]``
    is ``("u_shaped",)`` at depth 1 and ``("u_shaped", "uniform", "uniform")``
    at depth 3.
    """
    return tuple(names[:depth]) + (names[-1],) * max(0, depth - len(names))


def fitted_model(dataset, seed, depth, args, X_train):
    """The cell's fitted estimator: loaded from ``--model-dir`` if saved there, else fitted."""
    path = model_path(args, dataset, seed, depth)
    if path is not None and path.exists():
        return HRFEstimator.load(path, device="cpu"), "loaded"
    est = HRFEstimator(depth=depth, hidden_size=args.hidden_size, n_layers=args.n_layers,
                       n_iter=args.n_iter, batch_size=args.batch_size,
                       learning_rate=args.learning_rate,
                       time_sampler=level_time_samplers(args.time_sampler, depth),
                       device="cpu", random_state=seed).fit(X_train)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        est.save(path)
    return est, "fit"


def run_cell(dataset, seed, depth, args, oracle):
    """Fit one (seed, depth) cell and evaluate it (and, if asked, its exact field)."""
    torch.set_num_threads(args.threads)
    X_train, X_tests, _, X_val = data(dataset, seed, args.n_eval, args.n_val, args.test_draws)
    trained, exact, fit_s, how, size = None, None, 0.0, "fit", ""

    def scores(sample, label):
        return evaluate(sample, dataset, depth, args.n_eval, X_val, X_tests, seed,
                        label=label if args.show_candidates else None, nfes=args.nfes,
                        all_splits_label=label if args.all_splits else None)

    t0 = time.perf_counter()
    if not args.oracle_only:
        est, how = fitted_model(dataset, seed, depth, args, X_train)
        fit_s = time.perf_counter() - t0
        size = f" ({est.n_parameters_:,} parameters)"
        t0 = time.perf_counter()

        def sample(n, steps, rs):
            return est.sample(n, steps=steps, random_state=rs)

        trained = scores(sample, f"{dataset} seed {seed} depth {depth}")
    if oracle:
        exact = scores(oracle_sampler(dataset, depth), f"{dataset} exact depth {depth}")
    print(f"  {dataset} seed {seed} depth {depth}: {how} {fit_s:.0f} s{size}, "
          f"evaluation {time.perf_counter() - t0:.0f} s", flush=True)
    return seed, depth, trained, exact


def table(title, rows, nfes=NFES):
    print(title)
    print("| model | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for label, per_nfe in rows:
        cells = []
        for nfe in nfes:
            v = np.array([score for score, _ in per_nfe[nfe]])
            picks = ",".join("x".join(map(str, s)) for _, s in per_nfe[nfe])
            sd = v.std(ddof=1) if len(v) > 1 else 0.0  # sample sd over seeds
            cells.append(f"{v.mean():.4f} +- {sd:.4f} ({picks})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run are FIRST_SEED, ..., FIRST_SEED + SEEDS - 1")
    parser.add_argument("--n-iter", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--hidden-size", type=int, default=128, help="HRFEstimator hidden_size")
    parser.add_argument("--n-layers", type=int, default=3, help="HRFEstimator n_layers")
    parser.add_argument("--time-sampler", nargs="+", default=["uniform"], choices=TIME_SAMPLERS,
                        help="HRFEstimator time_sampler per level, outermost first; deeper "
                             "levels repeat the last name")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-eval", type=int, default=20_000)
    parser.add_argument("--datasets", nargs="+", default=["1to5", "six_gaussians"])
    parser.add_argument("--n-val", type=int, default=5_000, help="validation points per candidate split")
    parser.add_argument("--no-oracle", action="store_true", help="skip the exact-field rows")
    parser.add_argument("--nfes", type=int, nargs="+", default=list(NFES),
                        help="total NFE budgets to compare")
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS), choices=DEPTHS)
    parser.add_argument("--oracle-only", action="store_true",
                        help="only the exact-field rows (seed 0), no training")
    parser.add_argument("--jobs", type=int, default=1, help="(seed, depth) fits run in parallel")
    parser.add_argument("--test-draws", type=int, default=1,
                        help="independent (sample, held-out) pairs averaged per test score")
    parser.add_argument("--show-candidates", action="store_true",
                        help="print the validation score of every split, not only the chosen one")
    parser.add_argument("--all-splits", action="store_true",
                        help="score every split on the test draws too (costly: every split "
                             "at n_eval points per draw)")
    parser.add_argument("--model-dir", default=None,
                        help="save each fit here and reuse a saved one with the same settings")
    args = parser.parse_args(argv)
    if args.oracle_only and args.no_oracle:
        parser.error("--oracle-only and --no-oracle exclude each other")
    if args.first_seed < 0:
        parser.error("--first-seed must be >= 0")
    if min(args.nfes) < 1:
        parser.error("--nfes must be positive integers")
    if args.quick:
        args.seeds, args.n_iter, args.n_eval, args.n_val = 1, 100, 2000, 1000
    torch.set_num_threads(args.threads)
    training = ("exact fields only, seed 0" if args.oracle_only else
                f"n_iter={args.n_iter}, batch={args.batch_size}, lr={args.learning_rate}, "
                f"hidden={args.hidden_size}x{args.n_layers}, "
                f"time_sampler={' '.join(args.time_sampler)}, "
                f"seeds={args.first_seed}..{args.first_seed + args.seeds - 1}")
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; {training}, n_eval={args.n_eval}, n_val={args.n_val}, "
          f"test_draws={args.test_draws}, jobs={args.jobs}",
          flush=True)
    for dataset in args.datasets:
        trained = {d: {nfe: [] for nfe in args.nfes} for d in DEPTHS}
        exact = {d: {nfe: [] for nfe in args.nfes} for d in DEPTHS}
        seeds = [0] if args.oracle_only else range(args.first_seed, args.first_seed + args.seeds)
        floors = []
        for seed in seeds:
            _, X_tests, X_refs, _ = data(dataset, seed, args.n_eval, args.n_val, args.test_draws)
            floors.append(np.mean([metric(dataset, R, T, states(seed, k)[1])
                                   for k, (R, T) in enumerate(zip(X_refs, X_tests))]))
        cells = [(seed, depth) for seed in seeds for depth in args.depths]
        # the exact field is costly and deterministic given the data: seed 0 only
        results = Parallel(n_jobs=args.jobs)(
            delayed(run_cell)(dataset, seed, depth, args, not args.no_oracle and seed == 0)
            for seed, depth in cells)
        for _seed, depth, res, res_exact in sorted(results, key=lambda r: (r[0], r[1])):
            for nfe in args.nfes:
                if res is not None:
                    trained[depth][nfe].append(res[nfe])
                if res_exact is not None:
                    exact[depth][nfe].append(res_exact[nfe])
        name = "W1" if dataset == "1to5" else "sliced W2"
        print(f"\n{dataset}: {name} to held-out data, mean +- sd over {len(seeds)} seeds "
              f"(noise floor {np.mean(floors):.4f}); in brackets the split chosen on validation")
        label = {1: "RF (depth 1)", 2: "HRF2", 3: "HRF3"}
        if not args.oracle_only:
            table("trained:", [(label[d], trained[d]) for d in args.depths], args.nfes)
        if not args.no_oracle:
            table("exact field (oracle), seed 0 only:",
                  [(label[d] + ", exact", exact[d]) for d in args.depths], args.nfes)


if __name__ == "__main__":
    main()
