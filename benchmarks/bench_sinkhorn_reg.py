"""How much of the optimal-transport gain the Sinkhorn pairing keeps, by ``reg``.

For batches of ``--batch`` source draws ``N(0, I)`` and targets ``N(shift, I)``
in ``--dim`` dimensions, pair them independently (identity), by
:func:`hrflow.coupling.ot_pairing` with ``method="sinkhorn"`` at each ``reg``
(relative to the batch's largest squared distance, the estimator's
``coupling_reg``), and exactly (``method="exact"``); print the mean squared
distance of each pairing (:func:`hrflow.coupling.pairing_cost`) averaged over
``--repeats`` batches, the share of the exact pairing's gain over the
independent one that it keeps, and the mean time of one pairing (one thread).

Run:  python benchmarks/bench_sinkhorn_reg.py [--batch 256] [--dim 2] [--shift 3]
      [--regs 0.2 0.05 0.02 0.01 0.005 0.001] [--repeats 20]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hrflow.coupling import ot_pairing, pairing_cost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=2)
    parser.add_argument("--shift", type=float, default=3.0)
    parser.add_argument("--regs", type=float, nargs="+", default=[0.2, 0.05, 0.02, 0.01, 0.005, 0.001])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"# {platform.machine()}, torch {torch.__version__}; batch {args.batch}, dim {args.dim}, "
          f"shift {args.shift}, {args.repeats} batches", flush=True)

    gen = torch.Generator().manual_seed(0)
    names = ["independent", "exact", *(f"sinkhorn {r:g}" for r in args.regs)]
    costs, seconds = {k: [] for k in names}, {k: [] for k in names}
    ot_pairing(torch.zeros(2, args.dim), torch.ones(2, args.dim), "exact")  # import POT untimed
    for _ in range(args.repeats):
        x0 = torch.randn(args.batch, args.dim, generator=gen, dtype=torch.float64)
        x1 = torch.randn(args.batch, args.dim, generator=gen, dtype=torch.float64) + args.shift
        for name in names:
            start = time.perf_counter()
            if name == "independent":
                perm = torch.arange(args.batch)
            elif name == "exact":
                perm = ot_pairing(x0, x1, "exact")
            else:
                perm = ot_pairing(x0, x1, "sinkhorn", reg=float(name.split()[1]), generator=gen)
            seconds[name].append(time.perf_counter() - start)
            costs[name].append(pairing_cost(x0, x1, perm))
    indep, exact = np.mean(costs["independent"]), np.mean(costs["exact"])
    print("| pairing | mean squared distance | share of the exact pairing's gain | ms per pairing |")
    print("|---|---|---|---|")
    for name in names:
        share = (indep - np.mean(costs[name])) / (indep - exact)
        print(f"| {name} | {np.mean(costs[name]):.2f} | {share:.0%} | {1000 * np.mean(seconds[name]):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
