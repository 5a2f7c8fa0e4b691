"""
===========================================================
Sample quality against NFE, and how to split the steps
===========================================================

The cost of sampling is the number of function evaluations (NFE): one network call
per innermost step for the whole batch. With ``steps=(K0, K1)`` HRF2 takes ``K0``
location steps, each with ``K1`` velocity steps, so NFE = ``K0 * K1``; rectified
flow with ``steps=(K,)`` costs ``K``.

This example measures the 1-Wasserstein distance (W1) between generated samples and
held-out data on ``1to2`` for every split of a budget between the two levels (a
heat map), and compares the best split of HRF2 with rectified flow at the same
total NFE. The split is chosen on a validation draw and reported on a separate
test draw. The held-out draws are large (100,000 exact points each) so that the
distances measure the models rather than the noise of the reference.
"""

# %%
# Fit RF and HRF2 with the same budget
# ------------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np

from hrflow import HRFEstimator
from hrflow.datasets import make_1to2
from hrflow.metrics import wasserstein_1d

QUICK = os.environ.get("HRFLOW_QUICK", "0") not in ("", "0")
budget = dict(n_iter=2000, batch_size=512, hidden_size=64, learning_rate=3e-3) if QUICK else dict(
    n_iter=8000, batch_size=1024, hidden_size=128, learning_rate=2e-3
)
n_eval = 10_000 if QUICK else 20_000  # generated samples per measurement
grid = [1, 2, 4, 8] if QUICK else [1, 2, 4, 8, 16]  # steps tried at each level

X_train = make_1to2(n_samples=20_000 if QUICK else 100_000, random_state=0)
X_val = make_1to2(n_samples=100_000, random_state=1)
X_test = make_1to2(n_samples=100_000, random_state=2)

rf = HRFEstimator(depth=1, random_state=0, **budget).fit(X_train)
hrf2 = HRFEstimator(depth=2, random_state=0, **budget).fit(X_train)

# %%
# Every split of the steps
# ------------------------
# Rows: location steps ``K0``; columns: velocity steps ``K1``. Each cell is the
# W1 distance of ``n_eval`` samples to the validation draw.
w1 = np.array([
    [wasserstein_1d(hrf2.sample(n_eval, steps=(k0, k1), random_state=10), X_val) for k1 in grid]
    for k0 in grid
])
floor = wasserstein_1d(make_1to2(n_samples=n_eval, random_state=3), X_val)

fig, ax = plt.subplots(figsize=(6, 5))
image = ax.imshow(np.log10(w1), cmap="viridis_r", origin="lower")
for i, k0 in enumerate(grid):
    for j, k1 in enumerate(grid):
        ax.text(j, i, f"{w1[i, j]:.3f}\nNFE {k0 * k1}", ha="center", va="center", fontsize=7,
                color="w" if w1[i, j] > np.median(w1) else "k")
ax.set_xticks(range(len(grid)), grid)
ax.set_yticks(range(len(grid)), grid)
ax.set_xlabel("velocity steps K1")
ax.set_ylabel("location steps K0")
ax.set_title(f"HRF2: W1 to held-out data (two exact draws: {floor:.3f})")
fig.colorbar(image, ax=ax, label="log10 W1")
fig.tight_layout()
plt.show()

# %%
# Each anti-diagonal of the map is one budget. Velocity steps matter most: with
# one velocity step the velocity level cannot turn its Gaussian into the two
# modes of :math:`p(v \mid x, t)`. Location steps matter less: at :math:`t = 0`
# the velocity distribution is the data distribution shifted by :math:`-x_0`, so
# with an exact velocity level a single location step would already be exact
# (with the exact field, steps ``(1, K)`` give the very samples of ``K`` RF
# steps); how many a trained model needs depends on how well its velocity level
# is trained.
#
# Quality against total NFE
# -------------------------
# For each budget, the split with the best validation score is evaluated on the
# test draw, with fresh samples.
budgets = [k0 * k1 for k0 in grid for k1 in grid]
budgets = sorted(set(budgets))
rf_w1, hrf_w1, chosen = [], [], []
for nfe in budgets:
    rf_w1.append(wasserstein_1d(rf.sample(n_eval, steps=(nfe,), random_state=20), X_test))
    splits = [(i, j) for i in range(len(grid)) for j in range(len(grid)) if grid[i] * grid[j] == nfe]
    i, j = min(splits, key=lambda ij: w1[ij])
    chosen.append((grid[i], grid[j]))
    hrf_w1.append(wasserstein_1d(hrf2.sample(n_eval, steps=chosen[-1], random_state=20), X_test))
test_floor = wasserstein_1d(make_1to2(n_samples=n_eval, random_state=4), X_test)

fig, ax = plt.subplots(figsize=(6, 4))
ax.loglog(budgets, rf_w1, "o-", label="RF, steps=(NFE,)")
ax.loglog(budgets, hrf_w1, "s-", label="HRF2, best split")
for nfe, value, split in zip(budgets, hrf_w1, chosen):
    ax.annotate(str(split), (nfe, value), textcoords="offset points", xytext=(0, -12), ha="center",
                fontsize=7)
ax.axhline(test_floor, color="k", ls=":", label="two exact draws")
ax.set_xlabel("total NFE")
ax.set_ylabel("W1 to held-out data")
ax.legend()
fig.tight_layout()
plt.show()

for nfe, a, b, split in zip(budgets, rf_w1, hrf_w1, chosen):
    print(f"NFE {nfe:4d}: RF {a:.4f}   HRF2 {b:.4f} with steps={split}")

# %%
# With a handful of evaluations neither model is good, and both approach the
# floor set by two exact draws as the budget grows. In between, a well-trained
# HRF2 with a good split reaches a given quality with fewer evaluations: with the
# full budget of this example (``HRFLOW_QUICK`` unset) we measured W1 = 0.010 for
# HRF2 against 0.027 for RF at 16 NFE, and 0.029 against 0.047 at 8 NFE. With
# the reduced budget of quick mode both models are undertrained and close to each
# other. The best split depends on the data and on how well each level is
# trained, so measure it on held-out data as done here.

# %%
# One call: ``tune_steps``
# ------------------------
# :meth:`hrflow.HRFEstimator.tune_steps` runs this search for one budget: it
# scores every split of ``nfe`` against held-out data with common random numbers
# and stores the best as the default ``steps`` of :meth:`~hrflow.HRFEstimator.sample`.
hrf2.tune_steps(X_val[:n_eval], nfe=16, criterion="wasserstein", random_state=30)
for steps, score, rank in zip(hrf2.tune_results_["steps"], hrf2.tune_results_["score"],
                              hrf2.tune_results_["rank"]):
    print(f"steps={steps}: W1 {score:.4f} (rank {rank})")
print("default steps now:", hrf2.steps_)
