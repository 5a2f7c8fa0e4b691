"""Hypothesis strategies shared by the oracle tests (imported, not collected)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from hrflow.analytic import MixtureOracle


@st.composite
def mixtures(draw, max_components=3, max_features=3):
    """Random mixtures: covariances SPD with eigenvalues in [0.05, 2]."""
    m = draw(st.integers(1, max_components))
    d = draw(st.integers(1, max_features))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    weights = np.array(draw(st.lists(st.floats(0.05, 1.0), min_size=m, max_size=m)))
    means = np.array(
        draw(st.lists(st.floats(-3.0, 3.0), min_size=m * d, max_size=m * d))
    ).reshape(m, d)
    eig = np.array(draw(st.lists(st.floats(0.05, 2.0), min_size=m * d, max_size=m * d))).reshape(m, d)
    q, _ = np.linalg.qr(rng.standard_normal((m, d, d)))
    covs = np.einsum("mij,mj,mkj->mik", q, eig, q)
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))
    return MixtureOracle(weights, means, covs)
