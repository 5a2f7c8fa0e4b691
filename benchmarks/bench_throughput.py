"""Throughput of training and sampling (issue 2).

Measures, in one process:

* training iterations/s of HRFEstimator.fit (depth 1, 2, 3);
* samples/s of nested Euler at steps=(20, 5) for 100k 2-D samples (HRF2);
* the sampler's overhead (target < 1.2x): the time of nested Euler divided by
  the pure cost of the same field work on pre-made inputs of the same batch
  (normal states, times on the sampler's grid),
  for the sampler as shipped (the outer encoding computed once per outer step:
  ``K0`` location encodings, ``K0 K1`` velocity encodings and heads) and for a
  wrapper field whose encodings cannot be reused (``K0 K1`` full
  ``field(zs, ts)`` calls against the same number of plain calls);
* the saving of encoding reuse: the two samplers against each other.

Every variant is run once untimed (warm-up), then ``repeat`` rounds time each
variant once, in a rotating order, so that a change of machine load hits all
of them alike; the minimum and the median over rounds are printed. Sampling is
timed in CPU time of this process (``time.process_time``: the work done, less
sensitive than wall time to other jobs on a shared machine; with several torch
threads it adds up their times).

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


def interleaved(fns, repeat):
    """{name: sorted CPU times}: one untimed call each, then ``repeat`` rotating rounds."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.process_time()
            fns[name]()
            times[name].append(time.process_time() - t0)
    return {name: sorted(v) for name, v in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n_samples = 10_000 if args.quick else 100_000
    n_iter = 50 if args.quick else 300
    repeat = 3 if args.quick else 5
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
    # the sampler's inputs: states drawn once, times on its grid (one value per call: the
    # cost of the time embedding's sin/cos depends on its arguments)
    zs = [torch.randn(n_samples, 2) for _ in range(2)]
    grid = [[torch.full((n_samples,), j / k) for j in range(k)] for k in steps]

    def pure_plain():  # the field work of the sampler without reuse
        for t0 in grid[0]:
            for t1 in grid[1]:
                field(zs, [t0, t1])

    def pure_reuse():  # the field work of the sampler as shipped
        for t0 in grid[0]:
            outer = field.encode(0, zs[0], t0)
            for t1 in grid[1]:
                field.head([outer, field.encode(1, zs[1], t1)])

    no_reuse = NoReuse(field)
    with torch.no_grad():
        times = interleaved({
            "sampler": lambda: nested_euler(field, n_samples, steps, est.source_, gen()),
            "pure (reuse)": pure_reuse,
            "sampler without reuse": lambda: nested_euler(no_reuse, n_samples, steps,
                                                          est.source_, gen()),
            "pure (plain calls)": pure_plain,
            "HRFEstimator.sample": lambda: est.sample(n_samples, steps=steps, random_state=0),
        }, repeat)
    best = {k: v[0] for k, v in times.items()}
    med = {k: v[len(v) // 2] for k, v in times.items()}

    print(f"\nsampling HRF2, steps={steps} (NFE {nfe}), n={n_samples}; "
          f"CPU time, min and median of {repeat} interleaved rounds")
    for name, label in [("sampler", "nested_euler (encoding reuse)"),
                        ("pure (reuse)", "its field work alone (pure cost)"),
                        ("sampler without reuse", "nested_euler without reuse"),
                        ("pure (plain calls)", f"its field work: {nfe} plain calls"),
                        ("HRFEstimator.sample", "HRFEstimator.sample (chunk 8192)")]:
        print(f"  {label + ':':36s} {best[name]:7.3f} s  {med[name]:7.3f} s  "
              f"{n_samples / best[name]:10.0f} samples/s")
    print(f"  ratio sampler / pure field cost:    {best['sampler'] / best['pure (reuse)']:7.3f}  "
          f"(median {med['sampler'] / med['pure (reuse)']:.3f})")
    print(f"  ratio without reuse / pure cost:    "
          f"{best['sampler without reuse'] / best['pure (plain calls)']:7.3f}  "
          f"(median {med['sampler without reuse'] / med['pure (plain calls)']:.3f})")
    print(f"  saving of encoding reuse:           "
          f"{1 - best['sampler'] / best['sampler without reuse']:7.1%}  "
          f"(median {1 - med['sampler'] / med['sampler without reuse']:.1%})")


if __name__ == "__main__":
    main()
