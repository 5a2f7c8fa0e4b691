"""Error of trained fields against the exact field of their data's mixture, by time.

For each saved model (``HRFEstimator.save``, e.g. from ``bench_quality.py
--model-dir``) of a Gaussian-mixture data set, draw training states of the
model's own depth (spec section 2: data from the mixture, fresh sources, uniform
times), evaluate the trained field and the exact one (:mod:`hrflow.analytic`,
in the model's standardised space) and print the mean squared difference per
sample:

- by bins of the outermost time ``t`` (all inner times uniform);
- with the outermost time set to ``t = 0``, by bins of the innermost time, the
  states the ``1 x K`` sampler of a depth-2 model queries (depth >= 2 only).

Run:  python benchmarks/bench_field_error.py six_gaussians MODEL.hrf [MODEL.hrf ...]
      [--n-points 100000]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

from hrflow import HRFEstimator
from hrflow.datasets import mixture_oracle
from hrflow.hierarchy import training_pair

EDGES = np.array([0.0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98, 1.0])


def field_errors(est, dataset, n_points):
    """Rows ``(label, per-bin errors, overall error)`` of one model.

    The exact field is that of a standard normal source and the independent
    coupling, so other models are refused. The data, sources and times are
    drawn once; the ``t = 0`` row reuses them with the outer time set to 0.
    """
    if not isinstance(est.source, str) or est.coupling != "independent" or est.coupled_:
        raise ValueError(f"the exact field needs source='normal' and the independent coupling "
                         f"without reflow; got source={est.source!r}, coupling={est.coupling!r}, "
                         f"coupled_={est.coupled_}")
    depth = est.depth
    oracle = mixture_oracle(dataset).shifted(est.mean_, est.scale_)
    # the field sample() uses: the EMA copy if the model kept one (a loaded model is ours
    # to convert to float64 in place)
    field = est.field_ if getattr(est, "ema_field_", None) is None else est.ema_field_
    exact, field = oracle.field(depth), field.double()
    gen = torch.Generator().manual_seed(123)
    x1 = torch.as_tensor(oracle.sample(n_points, random_state=5))
    x0 = torch.randn(depth, *x1.shape, generator=gen, dtype=torch.float64)
    t = torch.rand(depth, n_points, generator=gen, dtype=torch.float64)
    rows = [("by outer t", t, t[0])]
    if depth > 1:
        t_zero = torch.cat([torch.zeros_like(t[:1]), t[1:]])
        rows.append(("t = 0, by inner time", t_zero, t[-1]))
    out = []
    for label, times, binned_by in rows:
        z, _ = training_pair(x1, x0, times)
        with torch.no_grad():
            err = ((field(list(z), list(times)) - exact(list(z), list(times))) ** 2).sum(dim=-1)
        bins = np.digitize(binned_by.numpy(), EDGES[1:-1])
        err = err.numpy()
        out.append((label, [float(err[bins == k].mean()) for k in range(len(EDGES) - 1)],
                    float(err.mean())))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="data set the models were fitted on (a mixture)")
    parser.add_argument("models", nargs="+", help="saved HRFEstimator files")
    parser.add_argument("--n-points", type=int, default=100_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads 1; "
          f"{args.n_points} training states per model")
    bins = " | ".join(f"{lo:g}-{hi:g}" for lo, hi in zip(EDGES[:-1], EDGES[1:]))
    for path in args.models:
        est = HRFEstimator.load(path, device="cpu")
        print(f"\n{path} (depth {est.depth})")
        print(f"| states | {bins} | all |")
        print("|---|" + "---|" * len(EDGES))
        for label, per_bin, overall in field_errors(est, args.dataset, args.n_points):
            print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in per_bin) + f" | {overall:.4f} |")


if __name__ == "__main__":
    main()
