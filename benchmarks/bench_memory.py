"""Peak memory (RSS) of scoring and sampling 10^6 two-dimensional points (issue 7).

Each measurement runs in a fresh Python process (peak RSS is a lifetime maximum),
which fits a small HRF2 model (hidden 32, 2 trunk layers, 200 iterations) on the
six-Gaussians data, draws 10^6 test points (16 MB as float64) and then either

- ``score``: ``score_samples`` of the 10^6 points (Algorithm 3, rk4 with
  ``--ode-steps`` steps, ``--n-draws`` draws, exact divergence), or
- ``sample``: ``sample(10**6, steps=(8, 2))``,

with the given ``chunk_size``. It reports the peak RSS before the call (the
interpreter, torch, the model and the data) and after it: the difference is
what the call itself needs, bounded by ``chunk_size`` and not by the number of
points. Peak RSS comes from :func:`resource.getrusage` (stdlib; KiB on Linux,
bytes on macOS).

Run:  python benchmarks/bench_memory.py [--n-points 1000000] [--chunk-sizes 1024 8192 65536]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def worker(args) -> dict:
    import numpy as np
    import torch

    from hrflow import HRFEstimator
    from hrflow.datasets import load_dataset

    torch.set_num_threads(args.threads)
    rss_import = peak_rss_mib()
    X = load_dataset("six_gaussians", n_samples=20_000, random_state=0)
    est = HRFEstimator(
        depth=2, hidden_size=32, n_layers=2, embedding_dim=16, n_iter=200, batch_size=256,
        learning_rate=3e-3, n_draws=args.n_draws, ode_solver="rk4", ode_steps=args.ode_steps,
        chunk_size=args.chunk_size, device="cpu", random_state=0,
    ).fit(X)
    X_test = np.random.default_rng(1).normal(size=(args.n_points, 2)) * 2.0
    what = args.what[0]
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    if what == "score":
        out = est.score_samples(X_test)
        finite = bool(np.isfinite(out).all())
    else:
        out = est.sample(args.n_points, steps=(8, 2), random_state=0)
        finite = bool(np.isfinite(out).all())
    seconds = time.perf_counter() - t0
    rss_after = peak_rss_mib()
    return {
        "what": what,
        "n_points": args.n_points,
        "chunk_size": args.chunk_size,
        "peak_rss_after_import_mib": round(rss_import, 1),
        "peak_rss_before_mib": round(rss_before, 1),
        "peak_rss_after_mib": round(rss_after, 1),
        "call_overhead_mib": round(rss_after - rss_before, 1),
        "seconds": round(seconds, 1),
        "finite": finite,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-points", type=int, default=1_000_000)
    p.add_argument("--chunk-sizes", type=int, nargs="+", default=[1024, 8192, 65536])
    p.add_argument("--what", nargs="+", default=["score", "sample"], choices=["score", "sample"])
    p.add_argument("--ode-steps", type=int, default=4)
    p.add_argument("--n-draws", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--chunk-size", type=int, default=8192, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    print(f"# {platform.platform()}, python {platform.python_version()}")
    print(f"# {args.n_points} points in 2-D, rk4 x {args.ode_steps} steps, {args.n_draws} draw(s), "
          f"{args.threads} thread(s)")
    print(f"{'call':>7} {'chunk':>7} {'before':>9} {'after':>9} {'call':>9} {'time':>7}")
    print(f"{'':>7} {'':>7} {'MiB':>9} {'MiB':>9} {'MiB':>9} {'s':>7}")
    for what in args.what:
        for chunk in args.chunk_sizes:
            cmd = [sys.executable, __file__, "--worker", "--what", what, "--chunk-size", str(chunk),
                   "--n-points", str(args.n_points), "--ode-steps", str(args.ode_steps),
                   "--n-draws", str(args.n_draws), "--threads", str(args.threads)]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            assert res["what"] == what
            print(f"{what:>7} {chunk:>7} {res['peak_rss_before_mib']:>9.0f} "
                  f"{res['peak_rss_after_mib']:>9.0f} {res['call_overhead_mib']:>9.0f} "
                  f"{res['seconds']:>7.1f}" + ("" if res["finite"] else "  NON-FINITE"))


if __name__ == "__main__":
    main()
