"""Throughput of training and sampling (issue 2).

Measures, in one process:

* training iterations/s of HRFEstimator.fit (depth 1, 2, 3);
* samples/s of nested Euler at steps=(20, 5) for 100k 2-D samples (HRF2);
* the ratio of sampling time to the pure cost of its field evaluations
  (prod(steps) plain ``field(zs, ts)`` calls on pre-made inputs of the same
  batch): the sampler's overhead (target < 1.2x);
* the saving of encoding reuse: the same sampler with a wrapper field whose
  encodings cannot be reused (every innermost step re-encodes all levels).

Run:  python benchmarks/bench_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import torch

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset
from hrflow.fields.base import HierarchicalField
from hrflow.sampling import nested_euler


class NoReuse(HierarchicalField):
    """Wraps a field so that every innermost step evaluates all encoders again."""

    def __init__(self, inner):
        super().__init__(inner.depth, inner.event_shape)
        self.inner = inner

    def head(self, encodings):
        zs = [z for z, _ in encodings]
        ts = [t for _, t in encodings]
        return self.inner(zs, ts)


def best_of(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_samples = 10_000 if args.quick else 100_000
    n_iter = 50 if args.quick else 300
    repeat = 1 if args.quick else 3
    steps = (20, 5)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}")

    X = load_dataset("six_gaussians", n_samples=20_000, random_state=0)
    print("\ntraining (batch 1024, hidden 128 x 3, six_gaussians)")
    ests = {}
    for depth in (1, 2, 3):
        est = HRFEstimator(depth=depth, n_iter=n_iter, batch_size=1024, device="cpu",
                           random_state=0).fit(X)
        ests[depth] = est
        print(f"  depth {depth}: {est.n_iter_ / est.fit_time_:8.1f} it/s")

    est = ests[2]
    field = est.field_
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    nfe = math.prod(steps)
    with torch.no_grad():
        t_sample = best_of(lambda: nested_euler(field, n_samples, steps, est.source_, gen()),
                           repeat)
        zs = [torch.randn(n_samples, 2) for _ in range(2)]
        ts = [torch.rand(n_samples) for _ in range(2)]

        def pure():
            for _ in range(nfe):
                field(zs, ts)

        t_pure = best_of(pure, repeat)
        no_reuse = NoReuse(field)
        t_noreuse = best_of(
            lambda: nested_euler(no_reuse, n_samples, steps, est.source_, gen()), repeat)
        t_est = best_of(lambda: est.sample(n_samples, steps=steps, random_state=0), repeat)

    print(f"\nsampling HRF2, steps={steps} (NFE {nfe}), n={n_samples}, best of {repeat}")
    print(f"  nested_euler (encoding reuse):      {t_sample:7.3f} s  "
          f"{n_samples / t_sample:10.0f} samples/s")
    print(f"  HRFEstimator.sample (chunk 8192):   {t_est:7.3f} s  "
          f"{n_samples / t_est:10.0f} samples/s")
    print(f"  {nfe} plain field calls (pure cost):  {t_pure:7.3f} s")
    print(f"  nested_euler without reuse:         {t_noreuse:7.3f} s")
    print(f"  ratio sampler / pure field cost:    {t_sample / t_pure:7.3f}")
    print(f"  ratio without reuse / pure cost:    {t_noreuse / t_pure:7.3f}")
    print(f"  saving of encoding reuse:           {1 - t_sample / t_noreuse:7.1%}")


if __name__ == "__main__":
    main()
