"""Images: depth 1 (rectified flow) vs depth 2 (HRF2) on scikit-learn's digits (issue 4).

`sklearn.datasets.load_digits`: 1797 images of 8x8 pixels with 17 grey levels,
split 80/20 (stratified, fixed seed) into train and test. Both depths use the
same U-Net (`field="unet"`; depth 2 adds one input convolution and one time
MLP) and the same training budget: `n_bins=17` dequantisation, AdamW with
warm-up and cosine decay, gradient clipping and EMA weights.

Reported on the held-out test images:

- bits/dim: the discrete bound of spec section 4 (one dequantisation draw per
  image), Algorithm 3 with Hutchinson divergence (one Rademacher probe per
  draw) and an RK4 solve. Depth 1 averages the logs of its probe draws (an
  unbiased log-determinant); depth 2 combines its source draws by log-mean-exp
  (consistent; biased towards *more* bits by Jensen at finite draws). Each image
  gets its own source draws and probes (``--draws per_row``, the default here),
  so the +- (a standard error over test images) covers the Monte Carlo noise;
  ``--draws shared`` gives all images the same ones, as ``score_samples`` does
  by default, and the +- then misses their shared error.
- sample quality at equal total NFE (4, 10, 20, 50), with an MLP classifier
  trained on the real training digits: the Frechet distance between its hidden
  features of generated and test images ("FD", like FID; lower is better),
  the mean confidence (max class probability) of its predictions on samples,
  and the class balance of those predictions (entropy / log 10; 1 = all ten
  digits equally often). Samples are rounded down to integers in [0, 16]
  first, as the data. For depth 2 every split (K0, K1) of the NFE is shown;
  `*` marks the split chosen on an independent sample draw scored against
  the *training* images (no test data in the choice).
- "real" rows: the same scores for the training images against the test
  images (the floor of FD at these sample sizes).

A grid of samples (depth 1 vs depth 2 at 10 and 50 NFE, same seeds) is saved
as a PNG.

Run:  python benchmarks/bench_digits.py [--quick] [--n-iter 2500] [--threads 1]
      [--draws per_row]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from hrflow import HRFEstimator

N_BINS = 17
#: depth -> total NFE -> candidate steps, outermost first
ALLOCATIONS = {
    1: {4: [(4,)], 10: [(10,)], 20: [(20,)], 50: [(50,)]},
    2: {4: [(2, 2), (4, 1)], 10: [(5, 2), (10, 1), (2, 5)], 20: [(5, 4), (10, 2), (20, 1)],
        50: [(10, 5), (25, 2), (50, 1)]},
}


# ---------------------------------------------------------------- metrics
def classifier(X_train, y_train, seed=0):
    """MLP classifier on real digits scaled to [0, 1]; its hidden layer gives the features."""
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=seed)
    return clf.fit(X_train / 16.0, y_train)


def hidden_features(clf, X):
    """ReLU activations of the classifier's hidden layer, shape (n, 128)."""
    return np.maximum(X / 16.0 @ clf.coefs_[0] + clf.intercepts_[0], 0.0)


def _psd_sqrt(S):
    w, V = np.linalg.eigh(S)
    return (V * np.sqrt(np.clip(w, 0, None))) @ V.T


def frechet_distance(A, B):
    """Frechet distance between Gaussians fitted to the rows of A and B.

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)``, through
    symmetric eigendecompositions (stable for the singular covariances of
    dead ReLU units).
    """
    mu_a, mu_b = A.mean(axis=0), B.mean(axis=0)
    cov_a, cov_b = np.cov(A, rowvar=False), np.cov(B, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ cov_b @ root_a), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def quality(clf, X, reference_features):
    """FD to the reference features, mean confidence and class balance of predictions on X."""
    proba = clf.predict_proba(X / 16.0)
    counts = np.bincount(proba.argmax(axis=1), minlength=10) / len(X)
    nz = counts[counts > 0]
    balance = float(-(nz * np.log(nz)).sum() / math.log(10))
    return frechet_distance(hidden_features(clf, X), reference_features), float(proba.max(1).mean()), balance


def to_integers(S):
    return np.clip(np.floor(S), 0, N_BINS - 1)


# ------------------------------------------------------------------- grid
def save_grid(panels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, images) in zip(axes, panels):
        n = int(math.sqrt(len(images)))
        tiles = np.pad(images[: n * n].reshape(n * n, 8, 8), ((0, 0), (1, 1), (1, 1)))  # 1-pixel gaps
        grid = tiles.reshape(n, n, 10, 10).transpose(0, 2, 1, 3).reshape(10 * n, 10 * n)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=N_BINS - 1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget (a few minutes)")
    parser.add_argument("--n-iter", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--n-samples", type=int, default=1000)
    parser.add_argument("--n-test-bpd", type=int, default=None, help="test images scored (default all)")
    parser.add_argument("--bpd-draws", type=int, default=4, help="source draws of depth 2's density")
    parser.add_argument("--ode-steps", type=int, default=10, help="RK4 steps of the density ODE")
    parser.add_argument("--draws", choices=["per_row", "shared"], default="per_row",
                        help="density draws per test image or shared by all (hrflow.density)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (1 on a shared machine: oversubscription is slow)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, default=None,
                        help="sample grid (default docs/_static/digits_samples.png; "
                             "benchmarks/out/digits_samples_quick.png with --quick)")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    if args.quick:
        args.n_iter, args.n_samples, args.n_test_bpd, args.batch_size = 60, 200, 40, 64
        args.bpd_draws, args.ode_steps = 2, 4
        for depth in ALLOCATIONS:
            ALLOCATIONS[depth] = {k: v for k, v in ALLOCATIONS[depth].items() if k in (4, 10)}
    if args.png is None:
        args.png = root / ("benchmarks/out/digits_samples_quick.png" if args.quick
                           else "docs/_static/digits_samples.png")
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy/scikit-learn BLAS as well (the classifier)

    digits = load_digits()
    X_train, X_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, stratify=digits.target, random_state=args.seed
    )
    n_bpd = len(X_test) if args.n_test_bpd is None else min(args.n_test_bpd, len(X_test))
    print(f"machine: {platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"digits train {len(X_train)}, test {len(X_test)} (bits/dim on {n_bpd}); n_iter={args.n_iter}, "
          f"batch={args.batch_size}, lr={args.learning_rate}, channels={args.channels}, "
          f"ema={args.ema_decay}, samples={args.n_samples}")
    t0 = time.perf_counter()
    clf = classifier(X_train, y_train, args.seed)
    test_feat, train_feat = hidden_features(clf, X_test), hidden_features(clf, X_train)
    print(f"classifier: test accuracy {clf.score(X_test / 16.0, y_test):.3f}")
    real = quality(clf, X_train, test_feat)
    print(f"real train vs test: FD {real[0]:.2f}, confidence {real[1]:.3f}, balance {real[2]:.3f} "
          f"({time.perf_counter() - t0:.0f} s)")

    rows, panels, fits, chosen_steps = [], [], {}, {}
    for depth in (1, 2):
        est = HRFEstimator(
            depth=depth, field="unet", image_shape=(1, 8, 8), n_bins=N_BINS,
            unet_channels=args.channels, unet_channel_mult=(1, 2), unet_res_blocks=1,
            n_iter=args.n_iter, batch_size=args.batch_size, learning_rate=args.learning_rate,
            warmup_iter=min(200, args.n_iter // 10), grad_clip=1.0, ema_decay=args.ema_decay,
            ode_steps=args.ode_steps, chunk_size=1024, random_state=args.seed,
        )
        t = time.perf_counter()
        est.fit(X_train)
        fit_s = time.perf_counter() - t
        t = time.perf_counter()
        n_draws, combine = (1, "mean") if depth == 1 else (args.bpd_draws, "logmeanexp")
        bpd = est.bits_per_dim(X_test[:n_bpd], random_state=args.seed + 1, n_draws=n_draws,
                               combine=combine, draws=args.draws)
        bpd_s = time.perf_counter() - t
        fits[depth] = est
        print(f"depth {depth}: {est.n_parameters_} parameters, fit {fit_s:.0f} s (final loss "
              f"{np.mean(est.loss_curve_[-50:]):.4f}), test bits/dim ({args.draws} draws) {bpd.mean():.4f} "
              f"+- {bpd.std(ddof=1) / math.sqrt(len(bpd)):.4f} ({bpd_s:.0f} s)")
        for nfe, candidates in ALLOCATIONS[depth].items():
            val = {}
            for steps in candidates:
                S_val = to_integers(est.sample(args.n_samples, steps=steps, random_state=args.seed + 100))
                val[steps] = quality(clf, S_val, train_feat)[0]
            chosen = chosen_steps[depth, nfe] = min(val, key=val.get)
            for steps in candidates:
                t = time.perf_counter()
                S = to_integers(est.sample(args.n_samples, steps=steps, random_state=args.seed + 7))
                fd, conf, bal = quality(clf, S, test_feat)
                mark = "*" if steps == chosen and len(candidates) > 1 else ""
                rows.append((depth, nfe, f"{steps}{mark}", fd, conf, bal, float(bpd.mean())))
                print(f"  depth {depth} NFE {nfe:3d} steps {str(steps) + mark:9s} FD {fd:7.2f} "
                      f"conf {conf:.3f} balance {bal:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)

    for nfe in (10, 50):
        for depth in (1, 2):
            if nfe not in ALLOCATIONS[depth]:
                continue
            steps = chosen_steps[depth, nfe]
            S = to_integers(fits[depth].sample(64, steps=steps, random_state=args.seed + 11))
            panels.append((f"depth {depth}, NFE {nfe} {steps}", S))
    if panels:
        panels.append(("real (test)", X_test[:64]))
        save_grid(panels, args.png)
        print(f"sample grid: {args.png}")

    print("\n| depth | NFE | steps | FD (lower better) | confidence | class balance | test bits/dim |")
    print("|---|---|---|---|---|---|---|")
    print(f"| real | - | train vs test | {real[0]:.2f} | {real[1]:.3f} | {real[2]:.3f} | - |")
    for depth, nfe, steps, fd, conf, bal, bpd in sorted(rows, key=lambda r: (r[1], r[0])):
        print(f"| {depth} | {nfe} | {steps} | {fd:.2f} | {conf:.3f} | {bal:.3f} | {bpd:.3f} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
