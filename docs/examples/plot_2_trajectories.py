"""
========================================================
Sampling paths of rectified flow and HRF2, 1-D and 2-D
========================================================

Rectified flow (RF, depth 1) integrates an ordinary differential equation: two of
its paths can never cross, so paths that must swap sides bend. HRF2 (depth 2) draws
a fresh velocity from the learned velocity distribution at every location step: its
location paths are a *random* ODE, they may cross, and each step heads straight for
a plausible data point, so a few location steps suffice (the paper uses 2 to 5).
This example draws both with ``sample(..., return_path=True)``, which returns the
location state after every outer step.
"""

# %%
# One dimension: ``1to2``
# -----------------------
# Two narrow Gaussians at :math:`\pm 1` from a standard normal source.
import os

import matplotlib.pyplot as plt
import numpy as np

from hrflow import HRFEstimator
from hrflow.datasets import make_1to2, make_six_gaussians

QUICK = os.environ.get("HRFLOW_QUICK", "0") not in ("", "0")
budget = dict(n_iter=1200, batch_size=512, hidden_size=64, learning_rate=3e-3) if QUICK else dict(
    n_iter=5000, batch_size=1024, hidden_size=128, learning_rate=2e-3
)

X1 = make_1to2(n_samples=20_000, random_state=0)
rf_1d = HRFEstimator(depth=1, random_state=0, **budget).fit(X1)
hrf_1d = HRFEstimator(depth=2, random_state=0, **budget).fit(X1)

# RF: 100 Euler steps, close to its exact ODE paths. HRF2: 5 location steps,
# each with 20 velocity steps (the same 100 NFE).
n_paths = 400
rf_steps, hrf_steps = (100,), (5, 20)
_, path_rf = rf_1d.sample(n_paths, steps=rf_steps, random_state=1, return_path=True)
_, path_hrf = hrf_1d.sample(n_paths, steps=hrf_steps, random_state=1, return_path=True)
print("path arrays (outer steps + 1, samples, features):", path_rf.shape, path_hrf.shape)


def plot_paths_1d(ax, path, title):
    t = np.linspace(0, 1, path.shape[0])
    ax.plot(t, path[:, :60, 0], lw=0.8, alpha=0.7)
    ax.set_title(title)
    ax.set_xlabel("time t")


# %%
# The RF paths fan out smoothly, never cross, and bend late towards the two
# clusters; the HRF2 paths are piecewise straight, pick a cluster from the first
# step and cross each other freely.
fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
plot_paths_1d(axes[0], path_rf, f"RF, steps={rf_steps}")
plot_paths_1d(axes[1], path_hrf, f"HRF2, steps={hrf_steps}")
axes[0].set_ylabel("location x")
fig.tight_layout()
plt.show()


# %%
# In one dimension two ODE paths that swap order would have to meet, so the
# fraction of pairs of paths whose order at :math:`t = 1` differs from their order
# at :math:`t = 0` is 0 for RF; for HRF2 it is large.
def crossing_fraction(path):
    start, end = path[0, :, 0], path[-1, :, 0]
    before = np.sign(start[:, None] - start[None, :])
    after = np.sign(end[:, None] - end[None, :])
    return float(np.mean(before != after))


for name, path in [("RF  ", path_rf), ("HRF2", path_hrf)]:
    print(f"{name}: fraction of crossing pairs {crossing_fraction(path):.3f}")

# %%
# Each location segment of HRF2 is straight, but every location step draws a
# *fresh* velocity, which may aim at another cluster: a path can kink between
# segments. With one location step the path is a single straight line, and with
# the exact field it would already land on the data (at :math:`t = 0` the velocity
# distribution is the data distribution shifted by :math:`-x_0`). With many
# location steps the independent draws average out and the paths look like the
# mean flow of RF again, with some jitter. HRF2 is therefore sampled with few
# location steps and more velocity steps (see
# :ref:`sphx_glr_auto_examples_plot_3_nfe_budget.py`).
_, path_many = hrf_1d.sample(n_paths, steps=(50, 2), random_state=1, return_path=True)
fig, ax = plt.subplots(figsize=(5, 4))
plot_paths_1d(ax, path_many, "HRF2, steps=(50, 2)")
ax.set_ylabel("location x")
fig.tight_layout()
plt.show()

# %%
# Two dimensions: six Gaussians
# -----------------------------
# The paper's ``2D 1to6`` data set (standardised). RF paths first head for the
# centre and then bend towards the six clusters; HRF2 paths are a few straight
# segments from the source draw to a cluster, and they cross.
X2 = make_six_gaussians(n_samples=20_000, random_state=0)
rf_2d = HRFEstimator(depth=1, random_state=0, **budget).fit(X2)
hrf_2d = HRFEstimator(depth=2, random_state=0, **budget).fit(X2)

_, path_rf2 = rf_2d.sample(n_paths, steps=rf_steps, random_state=2, return_path=True)
_, path_hrf2 = hrf_2d.sample(n_paths, steps=hrf_steps, random_state=2, return_path=True)

fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
panels = [(axes[0], path_rf2, f"RF, steps={rf_steps}"), (axes[1], path_hrf2, f"HRF2, steps={hrf_steps}")]
for ax, path, name in panels:
    ax.scatter(*X2[:2000].T, s=2, color="0.8", label="data")
    ax.plot(path[:, :80, 0], path[:, :80, 1], lw=0.6, alpha=0.8)
    ax.scatter(*path[0, :80].T, s=6, color="k", label="source draws")
    ax.set_title(name)
    ax.set_aspect("equal")
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()
plt.show()
