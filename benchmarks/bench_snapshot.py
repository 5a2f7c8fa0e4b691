"""Cost of the divergence snapshot of training, relative to a training iteration.

Every ``check_every`` (25) iterations the training loop copies the weights, the
optimizer state and the EMA weights (:func:`hrflow.training.training_state`),
so that a NaN loss can be rolled back. This script fits a digits U-Net
(``field="unet"``, 8x8 images from scikit-learn, EMA on) for a few iterations,
times a warm training iteration (from ``fit_time_`` of a warm-started fit) and
one snapshot of the fitted estimator's real state, and reports the snapshot's
share of training time, ``snapshot / (25 * iteration)``, and its size (the extra
memory it holds, on the model's device).

Run:  python benchmarks/bench_snapshot.py [--channels 32 64] [--batch-size 128] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from sklearn.datasets import load_digits

from hrflow import HRFEstimator
from hrflow.training import training_state


def state_bytes(state) -> int:
    """Bytes of the tensors in a (nested) state dict."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-iter", type=int, default=10, help="timed warm iterations")
    parser.add_argument("--repeat", type=int, default=10, help="timed snapshots")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="channels 16, 3 iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.channels, args.n_iter, args.repeat = [16], 3, 3
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; digits 8x8, HRF2 U-Net, EMA on, batch {args.batch_size}")
    X = load_digits().data
    print("| unet_channels | parameters | iteration ms | snapshot ms | snapshot MiB "
          "| share of training (check_every 25) |")
    print("|---|---|---|---|---|---|")
    for channels in args.channels:
        est = HRFEstimator(depth=2, field="unet", image_shape=(1, 8, 8), unet_channels=channels,
                           n_iter=2, batch_size=args.batch_size, ema_decay=0.999, device="cpu",
                           random_state=0).fit(X)
        est.set_params(warm_start=True, n_iter=args.n_iter).fit(X)  # warm: optimizer state exists
        iteration = est.fit_time_ / args.n_iter
        t0 = time.perf_counter()
        for _ in range(args.repeat):
            state = training_state(est.field_, est.optimizer_, est.ema_field_)
        snapshot = (time.perf_counter() - t0) / args.repeat
        print(f"| {channels} | {est.n_parameters_:,} | {iteration * 1e3:.0f} | {snapshot * 1e3:.1f} | "
              f"{state_bytes(state) / 2**20:.1f} | {snapshot / (25 * iteration):.2%} |", flush=True)


if __name__ == "__main__":
    main()
