"""Density estimation: accuracy and speed of score_samples (issue 3).

1. ``1to2``: held-out NLL in bits/dim of depth 1 (RF) and depth 2 (HRF2),
   next to the true differential entropy of the data (0.225 bits) and the
   paper's figures (RF 0.275, HRF2 0.261).
2. Two moons from a standard normal source (2-D): HRF2 and RF bits/dim next to
   scikit-learn's KernelDensity with a cross-validated bandwidth.
3. Speed of score_samples on 10,000 2-D points (trained HRF2 field, Algorithm
   3, one draw, exact divergence, RK4 with 20 steps), its accuracy against a
   dopri5 (1e-8) reference, and, on the same field and the same draws:
   (a) the paper's procedure: scipy ``solve_ivp`` RK45 one point at a time
       with autograd per dimension (timed on a subset, extrapolated);
   (b) flow_matching's ``ODESolver.compute_likelihood`` (RK4, same 20 steps,
       exact divergence; a benchmark-only dependency).
   All three run in this process; ratios are reported.

Run:  python benchmarks/bench_density.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset, mixture_oracle
from hrflow.density import cnf_log_density, standard_normal_log_prob
from hrflow.metrics import bits_per_dim


def fit(X, depth, args, seed=0):
    return HRFEstimator(depth=depth, n_iter=args.n_iter, batch_size=args.batch_size,
                        learning_rate=args.learning_rate, n_draws=args.n_draws, device="cpu",
                        random_state=seed).fit(X)


def part_1to2(args):
    rng = np.random.default_rng(0)
    X = load_dataset("1to2", n_samples=100_000, random_state=rng)
    X_test = load_dataset("1to2", n_samples=args.n_test, random_state=rng)
    true_bpd = float(np.mean(bits_per_dim(mixture_oracle("1to2").log_prob(X_test), 1)))
    print(f"\n1to2 ({args.n_test} held-out points): true entropy of these points "
          f"{true_bpd:.4f} bits/dim (spec: 0.225)")
    print("| model | NLL bits/dim | minus truth | paper |")
    print("|---|---|---|---|")
    for depth, paper in ((1, 0.275), (2, 0.261)):
        est = fit(X, depth, args)
        t0 = time.perf_counter()
        bpd = float(np.mean(bits_per_dim(est.score_samples(X_test), 1)))
        dt = time.perf_counter() - t0
        label = "RF (depth 1)" if depth == 1 else "HRF2"
        print(f"| {label} | {bpd:.4f} | {bpd - true_bpd:+.4f} | {paper} |   (score {dt:.1f} s)",
              flush=True)


def part_moons(args):
    rng = np.random.default_rng(1)
    X = load_dataset("moons", n_samples=100_000, random_state=rng)
    X_test = load_dataset("moons", n_samples=args.n_test, random_state=rng)
    print(f"\nmoons from N(0, I) ({args.n_test} held-out points), bits/dim")
    print("| model | NLL bits/dim |")
    print("|---|---|")
    sub = X[: args.n_kde]
    grid = GridSearchCV(KernelDensity(), {"bandwidth": np.geomspace(0.02, 0.5, 12)}, cv=3)
    grid.fit(sub)
    kde_bpd = float(np.mean(bits_per_dim(grid.best_estimator_.score_samples(X_test), 2)))
    print(f"| KernelDensity (bandwidth {grid.best_params_['bandwidth']:.3f} by 3-fold CV on "
          f"{len(sub)} points) | {kde_bpd:.4f} |")
    ests = {}
    for depth in (1, 2):
        est = fit(X, depth, args)
        ests[depth] = est
        bpd = float(np.mean(bits_per_dim(est.score_samples(X_test), 2)))
        label = "RF (depth 1)" if depth == 1 else "HRF2"
        print(f"| {label} | {bpd:.4f} |", flush=True)
    return ests[2], X_test


def paper_procedure(field, endpoints, contexts, n_steps_unused=None):
    """scipy solve_ivp RK45, one point at a time, autograd per dimension."""
    out = []
    d = endpoints.shape[1]
    for e, c in zip(endpoints, contexts):
        c_t = torch.as_tensor(c[None])
        enc0 = field.encode(0, c_t, torch.zeros(1))

        def rhs(tau, y, enc0=enc0):
            v = torch.as_tensor(y[:d][None], dtype=torch.float32).requires_grad_(True)
            f = field.head([enc0, field.encode(1, v, torch.full((1,), tau))])
            div = sum(torch.autograd.grad(f[0, i], v, retain_graph=True)[0][0, i]
                      for i in range(d))
            return np.concatenate([f[0].detach().numpy(), [div.item()]])

        sol = solve_ivp(rhs, (1.0, 0.0), np.concatenate([e, [0.0]]), method="RK45",
                        rtol=1e-5, atol=1e-5)
        z0, l0 = sol.y[:d, -1], sol.y[d, -1]
        out.append(-0.5 * z0 @ z0 - 0.5 * d * math.log(2 * math.pi) + l0)
    return np.array(out)


def part_speed(est, X_test, args):
    from flow_matching.solver import ODESolver
    from flow_matching.utils import ModelWrapper

    field = est.field_
    n = min(args.n_speed, len(X_test))
    X = X_test[:n]
    Z = torch.as_tensor((X - est.mean_) / est.scale_, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x0 = est.source_.sample(1, g)  # one common source draw, as score_samples(n_draws=1)
    endpoints = Z - x0
    ctx = x0.expand_as(Z)
    enc_ctx = [(ctx, torch.zeros(n))]
    print(f"\nspeed: score {n} 2-D points, HRF2, Algorithm 3, one draw, exact divergence "
          f"(threads {torch.get_num_threads()})")

    def ours(solver="rk4", steps=20, atol=1e-5, rtol=1e-5):
        return cnf_log_density(field, endpoints, enc_ctx, base_log_prob=standard_normal_log_prob,
                               divergence="exact", solver=solver, n_steps=steps, atol=atol,
                               rtol=rtol).numpy()

    t0 = time.perf_counter()
    lp = ours()
    t_ours = time.perf_counter() - t0
    ref = ours("dopri5", atol=1e-8, rtol=1e-8)
    err = np.abs(lp - ref)
    t0 = time.perf_counter()
    est.log_density(X, n_draws=1)
    t_est = time.perf_counter() - t0
    print(f"  hrflow cnf_log_density (RK4, 20 steps): {t_ours:7.2f} s  {n / t_ours:9.0f} "
          f"points/s; |error| vs dopri5 1e-8: mean {err.mean():.1e}, max {err.max():.1e} nats")
    print(f"  HRFEstimator.score_samples (n_draws=1): {t_est:7.2f} s  {n / t_est:9.0f} points/s")

    # (b) flow_matching on the same field and draw
    class Velocity(ModelWrapper):
        def forward(self, x, t, **extras):
            tt = t.reshape(()).expand(x.shape[0]).to(x.dtype)
            c = ctx[: x.shape[0]]
            return field.head([field.encode(0, c, torch.zeros(x.shape[0])),
                               field.encode(1, x, tt)])

    solver = ODESolver(velocity_model=Velocity(field))
    t0 = time.perf_counter()
    _, lp_fm = solver.compute_likelihood(
        x_1=endpoints, log_p0=standard_normal_log_prob, step_size=0.05, method="rk4",
        exact_divergence=True)
    t_fm = time.perf_counter() - t0
    lp_fm = lp_fm.detach().numpy()
    print(f"  flow_matching compute_likelihood (RK4, 20 steps, exact div): {t_fm:7.2f} s "
          f"{n / t_fm:9.0f} points/s; |diff| to dopri5 ref: mean "
          f"{np.abs(lp_fm - ref).mean():.1e}")

    m = args.n_paper
    t0 = time.perf_counter()
    lp_paper = paper_procedure(field, endpoints[:m].numpy(), ctx[:m].numpy())
    t_paper = (time.perf_counter() - t0) * n / m
    print(f"  paper procedure (solve_ivp RK45 1e-5, per point; {m} points timed, extrapolated): "
          f"{t_paper:7.1f} s  {n / t_paper:9.1f} points/s; |diff| to dopri5 ref: mean "
          f"{np.abs(lp_paper - ref[:m]).mean():.1e}")
    print(f"  ratios: hrflow is {t_paper / t_ours:.0f}x faster than the paper's procedure and "
          f"{t_fm / t_ours:.2f}x the speed of flow_matching (same field, same points)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n-iter", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--n-draws", type=int, default=4)
    parser.add_argument("--n-test", type=int, default=20_000)
    parser.add_argument("--n-kde", type=int, default=20_000)
    parser.add_argument("--n-speed", type=int, default=10_000)
    parser.add_argument("--n-paper", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", nargs="+", default=["1to2", "moons", "speed"])
    args = parser.parse_args(argv)
    if args.quick:
        args.n_iter, args.n_test, args.n_kde, args.n_speed, args.n_paper = 100, 2000, 2000, 1000, 5
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads {args.threads}; "
          f"n_iter={args.n_iter}, batch={args.batch_size}, lr={args.learning_rate}, "
          f"n_draws={args.n_draws}")
    if "1to2" in args.parts:
        part_1to2(args)
    if "moons" in args.parts or "speed" in args.parts:
        est, X_test = part_moons(args)
        if "speed" in args.parts:
            part_speed(est, X_test, args)


if __name__ == "__main__":
    main()
