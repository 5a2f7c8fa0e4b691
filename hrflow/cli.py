"""Command line: ``hrflow demo`` (also ``python -m hrflow demo``).

Fits an HRF on a built-in data set with a progress bar, samples, and prints
sample quality against held-out data and the held-out log-likelihood.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["main", "build_parser"]


def _int_in(low: int, high: int | None = None):
    """An argparse ``type``: an int in ``[low, high]`` (argparse names the flag on error)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an int {bound}, got {value}")
        return value

    return parse


def _plot_path(text: str) -> str:
    """An argparse ``type``: a file name in an existing folder (checked before the fit)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name such as x.png")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {str(path.parent)!r} does not exist")
    return text


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except the None of options explained in their help."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hrflow`` command."""
    from .datasets import DATASETS

    parser = argparse.ArgumentParser(
        prog="hrflow", description=__doc__.splitlines()[0].replace("``", "'")
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit, sample and score on a built-in data set",
                          formatter_class=_DefaultsHelp)
    demo.add_argument("--dataset", default="six_gaussians", choices=DATASETS, help="data set")
    demo.add_argument("--depth", type=int, default=2, help="levels: 1 is rectified flow, 2 HRF2")
    demo.add_argument("--n-iter", type=_int_in(0), default=3000, help="training iterations")
    demo.add_argument("--batch-size", type=_int_in(1), default=1024, help="training batch size")
    demo.add_argument("--n-train", type=_int_in(2), default=20000,
                      help="training points (at least 2)")
    demo.add_argument("--n-test", type=_int_in(1), default=5000,
                      help="held-out points and samples (at least 1)")
    demo.add_argument("--steps", type=int, nargs="+", default=None,
                      help="steps per level, outermost first (default: the estimator's)")
    demo.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    # the samples are drawn with seed + 1, which must be a valid random_state too
    demo.add_argument("--seed", type=_int_in(0, 2**32 - 2), default=0, help="random state")
    demo.add_argument("--no-density", action="store_true", help="skip the log-likelihood")
    demo.add_argument("--plot", type=_plot_path, default=None,
                      help="save a scatter plot / histogram (PNG) to this file")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--threads", type=int, default=None,
                      help="torch CPU threads (default: torch's choice; 1 is fastest for the "
                           "small demo networks on a busy machine)")
    return parser


def _quality(X_gen, X_ref, seed):
    from .metrics import sliced_wasserstein, wasserstein_1d

    if X_ref.shape[1] == 1:
        return "W1", wasserstein_1d(X_gen, X_ref)
    return "sliced W2", sliced_wasserstein(X_gen, X_ref, random_state=seed)


def run_demo(args) -> dict:
    """Run the demo described by parsed ``args``; returns the printed figures."""
    from . import HRFEstimator
    from .datasets import eight_gaussians_source, load_dataset, mixture_oracle
    from .metrics import bits_per_dim

    if args.plot:  # fail before the fit, not after it
        _require_matplotlib()
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    X_train = load_dataset(args.dataset, n_samples=args.n_train, random_state=rng)
    X_test = load_dataset(args.dataset, n_samples=args.n_test, random_state=rng)
    X_ref = load_dataset(args.dataset, n_samples=args.n_test, random_state=rng)
    source = eight_gaussians_source() if args.dataset == "moons" else "normal"
    est = HRFEstimator(
        depth=args.depth, source=source, n_iter=args.n_iter, batch_size=args.batch_size,
        steps=tuple(args.steps) if args.steps else None, device=args.device,
        verbose=0 if args.quiet else 1, random_state=args.seed,
    )
    d = X_train.shape[1]
    print(f"hrflow demo: dataset={args.dataset} (d={d}, {args.n_train} train / {args.n_test} "
          f"held-out), depth={args.depth}, n_iter={args.n_iter}, batch={args.batch_size}")
    est.fit(X_train)
    final = f"{np.mean(est.loss_curve_[-50:]):.4f}" if est.loss_curve_ else "none (no iterations)"
    print(f"device: {est.device_}; fit: {est.fit_time_:.1f} s "
          f"({est.n_iter_ / max(est.fit_time_, 1e-9):.0f} it/s); final loss {final}")
    t0 = time.perf_counter()
    X_gen = est.sample(args.n_test, random_state=args.seed + 1)
    t_sample = time.perf_counter() - t0
    steps = est.steps_ if args.steps is None else tuple(args.steps)
    name, value = _quality(X_gen, X_test, args.seed)
    _, floor = _quality(X_ref, X_test, args.seed)
    out = {"quality": value, "quality_floor": floor}
    print(f"sampling: steps={steps} (NFE {int(np.prod(steps))}), {args.n_test} samples in "
          f"{t_sample:.2f} s")
    print(f"{name}(samples, held-out) = {value:.4f}   [two held-out draws: {floor:.4f}]")
    if not args.no_density:
        t0 = time.perf_counter()
        # a data set's mean: independent draws per point average the Monte Carlo error out
        logp = est.log_density(X_test, draws="per_row")
        t_score = time.perf_counter() - t0
        bpd = float(np.mean(bits_per_dim(logp, d)))
        out.update(loglik=float(logp.mean()), bpd=bpd)
        line = (f"held-out log-likelihood {logp.mean():.4f} nats/point, {bpd:.4f} bits/dim "
                f"(Algorithm {est.density_algorithm}, {args.n_test} points in {t_score:.1f} s)")
        try:
            oracle = mixture_oracle(args.dataset)
        except ValueError:
            oracle = None
        if oracle is not None:
            true = oracle.log_prob(X_test)
            line += (f"\n  true density of these points: {true.mean():.4f} nats/point, "
                     f"{float(np.mean(bits_per_dim(true, d))):.4f} bits/dim")
        print(line)
    if args.plot:
        _plot(X_test, X_gen, args)
        print(f"saved {args.plot}")
    return out


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise ValueError(
            "--plot needs matplotlib: python -m pip install matplotlib"
        ) from exc
    return matplotlib


def _plot(X_test, X_gen, args):
    matplotlib = _require_matplotlib()

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    if X_test.shape[1] == 1:
        ax.hist(X_test[:, 0], bins=100, density=True, alpha=0.5, label="held-out")
        ax.hist(X_gen[:, 0], bins=100, density=True, alpha=0.5, label="HRF samples")
    else:
        ax.scatter(*X_test[:, :2].T, s=2, alpha=0.4, label="held-out")
        ax.scatter(*X_gen[:, :2].T, s=2, alpha=0.4, label="HRF samples")
        ax.set_aspect("equal")
    ax.legend()
    ax.set_title(f"{args.dataset}, depth {args.depth}")
    fig.savefig(args.plot, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    """Entry point of the ``hrflow`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        try:
            run_demo(args)
        except (ValueError, TypeError) as exc:
            print(f"hrflow: error: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
