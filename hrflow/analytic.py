"""Exact answers for Gaussian-mixture data (spec section 5).

For data ``p1 = sum_m pi_m N(mu_m, S_m)`` in ``R^d`` and the standard normal
source ``N(0, I)`` at every level, everything HRF needs is closed form. Given
the component ``m``, the vector of all training draws

    w = (x1, x0^(0), ..., x0^(D-1))  ~  N((mu_m, 0, ..., 0), blockdiag(S_m, I, ..., I))

is Gaussian, and both the states ``z_k = (1 - t_k) x0^(k) + t_k y_k`` and the
regression target ``y_D = x1 - sum_k x0^(k)`` are linear in it:
``z = A(t) w`` and ``y_D = B w``. Conditioning on ``z`` is therefore
linear-Gaussian conditioning inside each component (:func:`hierarchy_moments`
gives the joint moments of ``(z, y_D)``, :func:`condition_mixture` conditions),
and the exact optimal field ``E[y_D | z, t]`` is the posterior-weighted sum of
the per-component conditional means (:func:`optimal_field`).

Depth 1 gives the velocity distribution of Theorem 1 (``z = x_t``, target
``v = x1 - x0``) and, as the normaliser of the conditioning, the marginal
``p_t = sum_m pi_m N(t mu_m, t^2 S_m + (1 - t)^2 I)``.

The torch functions are batched, differentiable and work in the dtype they are
given (use float64); :class:`MixtureOracle` wraps them in a numpy API and
:class:`OracleField` is the exact field as a
:class:`~hrflow.fields.base.HierarchicalField`.

No jitter is added anywhere: in the coordinates ``(y_0, ..., y_D)`` the state
map reads ``z_k = y_k - (1 - t_k) y_{k+1}``, an upper bidiagonal matrix with
unit diagonal, so ``A(t)`` has full row rank for every ``t`` in ``[0, 1]^D`` and
``A Sigma_m A^T`` is positive definite whenever the ``S_m`` are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.utils import check_random_state

from .datasets import mixture_oracle
from .fields.base import HierarchicalField

__all__ = [
    "hierarchy_design",
    "mixture_blocks",
    "hierarchy_moments",
    "condition_mixture",
    "hierarchy_posterior",
    "optimal_field",
    "MixtureOracle",
    "OracleField",
    "paper_mixture",
]

_LOG_2PI = math.log(2 * math.pi)


# ---------------------------------------------------------------------------
# pure torch functions
# ---------------------------------------------------------------------------


def _level_coefficients(t: torch.Tensor) -> torch.Tensor:
    """Scalar coefficients ``a`` of the state map, ``A = a kron I_d``: (D, n) -> (n, D, D + 1)."""
    depth = t.shape[0]
    opts = {"dtype": t.dtype, "device": t.device}
    # z_k = t_k * (x1 - x0^(0) - ... - x0^(k-1)) + (1 - t_k) * x0^(k)
    shared = torch.zeros(depth, depth + 1, **opts)
    shared[:, 0] = 1.0
    own = torch.zeros(depth, depth + 1, **opts)
    for k in range(depth):
        shared[k, 1 : k + 1] = -1.0
        own[k, k + 1] = 1.0
    tt = t.T.unsqueeze(-1)  # (n, D, 1)
    return tt * shared + (1 - tt) * own


def _check_times(t: torch.Tensor) -> None:
    if t.dim() != 2:
        raise ValueError(f"t must have shape (D, n), got {tuple(t.shape)}")


def hierarchy_design(t: torch.Tensor, n_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear maps from the draws ``w`` to the states and to the target.

    With ``w = (x1, x0^(0), ..., x0^(D-1))`` stacked into a vector of length
    ``(D + 1) d``, the states of one example are ``z = A w`` (stacked
    ``(z_0, ..., z_{D-1})``) and the regression target is ``y_D = B w``.

    Parameters
    ----------
    t : torch.Tensor of shape (D, n)
        Time of every level and example, outermost level first.
    n_features : int
        Data dimension ``d``.

    Returns
    -------
    A : torch.Tensor of shape (n, D * d, (D + 1) * d)
        Per-example state map; block ``(k, 0)`` is ``t_k I``, blocks
        ``(k, j + 1)`` are ``-t_k I`` for ``j < k`` and ``(1 - t_k) I`` for ``j = k``.
    B : torch.Tensor of shape (d, (D + 1) * d)
        Target map ``[I, -I, ..., -I]``.

    See Also
    --------
    hierarchy_moments : the moments of ``(z, y_D)`` these maps imply.

    Examples
    --------
    Depth 1 is rectified flow: ``z = t x1 + (1 - t) x0`` and ``v = x1 - x0``.

    >>> import torch
    >>> A, B = hierarchy_design(torch.tensor([[0.25]], dtype=torch.float64), 1)
    >>> A.tolist(), B.tolist()
    ([[[0.25, 0.75]]], [[1.0, -1.0]])
    """
    _check_times(t)
    depth, n = t.shape
    d = int(n_features)
    a = _level_coefficients(t)
    eye = torch.eye(d, dtype=t.dtype, device=t.device)
    A = torch.einsum("nij,ab->niajb", a, eye).reshape(n, depth * d, (depth + 1) * d)
    b = torch.full((1, depth + 1), -1.0, dtype=t.dtype, device=t.device)
    b[0, 0] = 1.0
    return A, torch.kron(b, eye)


def mixture_blocks(
    means: torch.Tensor, covariances: torch.Tensor, depth: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-component mean and covariance of ``w = (x1, x0^(0), ..., x0^(D-1))``.

    Parameters
    ----------
    means : torch.Tensor of shape (M, d)
    covariances : torch.Tensor of shape (M, d, d)
    depth : int

    Returns
    -------
    mean_w : torch.Tensor of shape (M, (D + 1) * d)
        ``(mu_m, 0, ..., 0)``.
    cov_w : torch.Tensor of shape (M, (D + 1) * d, (D + 1) * d)
        ``blockdiag(S_m, I, ..., I)``.

    Examples
    --------
    >>> import torch
    >>> m, S = mixture_blocks(torch.tensor([[2.0]]), torch.tensor([[[0.5]]]), 2)
    >>> m.tolist(), S[0].diagonal().tolist()
    ([[2.0, 0.0, 0.0]], [0.5, 1.0, 1.0])
    """
    n_comp, d = means.shape
    q = (depth + 1) * d
    mean_w = torch.zeros(n_comp, q, dtype=means.dtype, device=means.device)
    mean_w[:, :d] = means
    cov_w = torch.eye(q, dtype=means.dtype, device=means.device).repeat(n_comp, 1, 1)
    cov_w[:, :d, :d] = covariances
    return mean_w, cov_w


def hierarchy_moments(t: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor):
    """Per-component joint moments of the states ``z`` and the target ``y_D``.

    Given component ``m`` of the data, ``z = A w`` and ``y_D = B w`` with
    ``w ~ N(mean_w, cov_w)`` (:func:`hierarchy_design`, :func:`mixture_blocks`).
    Because ``A = a kron I_d`` and ``cov_w = blockdiag(S_m, I, ..., I)``, the
    moments are assembled blockwise without forming ``A``.

    Parameters
    ----------
    t : torch.Tensor of shape (D, n)
        Times, outermost level first.
    means : torch.Tensor of shape (M, d)
    covariances : torch.Tensor of shape (M, d, d)

    Returns
    -------
    mean_z : torch.Tensor of shape (n, M, D * d)
        ``A mean_w``.
    mean_y : torch.Tensor of shape (1, M, d)
        ``B mean_w = mu_m``.
    cov_zz : torch.Tensor of shape (n, M, D * d, D * d)
        ``A cov_w A^T``.
    cov_zy : torch.Tensor of shape (n, M, D * d, d)
        ``A cov_w B^T``.
    cov_yy : torch.Tensor of shape (M, d, d)
        ``B cov_w B^T = S_m + D I``.

    Examples
    --------
    Depth 1 at time ``t``: ``Var[x_t] = t^2 S + (1 - t)^2``.

    >>> import torch
    >>> f64 = torch.float64
    >>> mz, my, czz, czy, cyy = hierarchy_moments(torch.tensor([[0.5]], dtype=f64),
    ...     torch.tensor([[2.0]], dtype=f64), torch.tensor([[[3.0]]], dtype=f64))
    >>> mz.item(), czz.item(), czy.item(), cyy.item()
    (1.0, 1.0, 1.0, 4.0)
    """
    _check_times(t)
    depth, n = t.shape
    n_comp, d = means.shape
    a = _level_coefficients(t)
    a_data, a_noise = a[..., 0], a[..., 1:]  # (n, D), (n, D, D)
    eye = torch.eye(d, dtype=t.dtype, device=t.device)
    mean_z = (a_data[:, None, :, None] * means[None, :, None, :]).reshape(n, n_comp, depth * d)
    noise_zz = torch.einsum("nkj,nlj->nkl", a_noise, a_noise)
    cov_zz = torch.einsum("nk,nl,mij->nmkilj", a_data, a_data, covariances) + torch.einsum(
        "nkl,ij->nkilj", noise_zz, eye
    ).unsqueeze(1)
    noise_zy = -a_noise.sum(-1)  # the target takes -x0^(j) from every level
    cov_zy = torch.einsum("nk,mij->nmkij", a_data, covariances) + torch.einsum(
        "nk,ij->nkij", noise_zy, eye
    ).unsqueeze(1)
    cov_zz = cov_zz.reshape(n, n_comp, depth * d, depth * d)
    cov_zy = cov_zy.reshape(n, n_comp, depth * d, d)
    cov_yy = covariances + depth * eye
    return mean_z, means.unsqueeze(0), cov_zz, cov_zy, cov_yy


def condition_mixture(
    z: torch.Tensor,
    log_weights: torch.Tensor,
    mean_z: torch.Tensor,
    mean_y: torch.Tensor,
    cov_zz: torch.Tensor,
    cov_zy: torch.Tensor,
    cov_yy: torch.Tensor | None = None,
):
    """Condition a jointly Gaussian mixture ``(z, y)`` on ``z``.

    Within component ``m``, ``y | z`` is Gaussian with mean
    ``mean_y + cov_yz cov_zz^{-1} (z - mean_z)`` and covariance
    ``cov_yy - cov_yz cov_zz^{-1} cov_zy``; the posterior weights are
    proportional to ``pi_m N(z; mean_z, cov_zz)``. One Cholesky factorisation
    per row and component; differentiable.

    Parameters
    ----------
    z : torch.Tensor of shape (n, p)
        Observations.
    log_weights : torch.Tensor of shape (M,)
        Log mixture weights (normalised).
    mean_z : torch.Tensor of shape (n, M, p)
        Leading dimensions broadcast, here and below (e.g. ``(1, M, p)``).
    mean_y : torch.Tensor of shape (n, M, r)
    cov_zz : torch.Tensor of shape (n, M, p, p)
        Symmetric positive definite.
    cov_zy : torch.Tensor of shape (n, M, p, r)
    cov_yy : torch.Tensor of shape (n, M, r, r) or None, default=None
        Needed only for the conditional covariances.

    Returns
    -------
    log_post : torch.Tensor of shape (n, M)
        Normalised log posterior weights of the components.
    cond_means : torch.Tensor of shape (n, M, r)
    cond_covs : torch.Tensor of shape (n, M, r, r) or None
        ``None`` when ``cov_yy`` is None.
    log_evidence : torch.Tensor of shape (n,)
        ``log p(z)``.

    See Also
    --------
    hierarchy_moments : the moments of HRF's states and target.

    Examples
    --------
    Observe ``z = x + e`` for independent ``x, e ~ N(0, 1)``: ``E[x | z = 2] = 1``, variance 1/2.

    >>> import torch
    >>> one = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    >>> lp, m, c, ev = condition_mixture(torch.tensor([[2.0]], dtype=torch.float64),
    ...     torch.zeros(1, dtype=torch.float64), 0 * one[0], 0 * one[0], 2 * one, one, one)
    >>> round(m.item(), 12), round(c.item(), 12)
    (1.0, 0.5)
    """
    p = z.shape[-1]
    chol = torch.linalg.cholesky(cov_zz)
    resid = (z.unsqueeze(1) - mean_z).unsqueeze(-1)  # (n, M, p, 1)
    white = torch.linalg.solve_triangular(chol, resid, upper=False)  # L^{-1} (z - mean_z)
    half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_norm = -0.5 * (white.squeeze(-1) ** 2).sum(-1) - half_logdet - 0.5 * p * _LOG_2PI
    log_joint = log_weights + log_norm  # (n, M)
    log_evidence = torch.logsumexp(log_joint, dim=1)
    log_post = log_joint - log_evidence.unsqueeze(1)
    # gain = L^{-1} cov_zy: cov_yz cov_zz^{-1} (z - mean_z) = gain^T white
    gain = torch.linalg.solve_triangular(chol, cov_zy, upper=False)  # (n, M, p, r)
    gain_t = gain.transpose(-1, -2)
    cond_means = mean_y + (gain_t @ white).squeeze(-1)
    cond_covs = None
    if cov_yy is not None:
        cond_covs = cov_yy - gain_t @ gain
        cond_covs = 0.5 * (cond_covs + cond_covs.transpose(-1, -2))
    return log_post, cond_means, cond_covs, log_evidence


def hierarchy_posterior(
    z: torch.Tensor,
    t: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
    *,
    return_cov: bool = True,
):
    """Distribution of the target ``y_D`` given the states of all levels.

    For data ``sum_m pi_m N(mu_m, S_m)`` and standard normal sources this is a
    Gaussian mixture in ``y_D`` (spec section 5). Depth 1 is Theorem 1: the
    distribution of ``v = x1 - x0`` given ``x_t = z_0`` at time ``t_0``.

    Parameters
    ----------
    z : torch.Tensor of shape (D, n, d)
        States, outermost level first.
    t : torch.Tensor of shape (D, n)
        Times in ``[0, 1]``.
    weights : torch.Tensor of shape (M,)
        Mixture weights summing to one.
    means : torch.Tensor of shape (M, d)
    covariances : torch.Tensor of shape (M, d, d)
    return_cov : bool, default=True

    Returns
    -------
    log_post : torch.Tensor of shape (n, M)
    cond_means : torch.Tensor of shape (n, M, d)
    cond_covs : torch.Tensor of shape (n, M, d, d) or None
    log_evidence : torch.Tensor of shape (n,)
        Log joint density of ``(z_0, ..., z_{D-1})``; at depth 1 ``log p_t(z_0)``.

    See Also
    --------
    hierarchy_moments, condition_mixture, optimal_field

    Examples
    --------
    At ``t = 0`` the velocity given ``x0`` is the shifted data ``x1 - x0``.

    >>> import torch
    >>> f64 = torch.float64
    >>> lp, m, c, ev = hierarchy_posterior(torch.tensor([[[0.5]]], dtype=f64),
    ...     torch.zeros(1, 1, dtype=f64), torch.ones(1, dtype=f64),
    ...     torch.tensor([[2.0]], dtype=f64), torch.tensor([[[0.3]]], dtype=f64))
    >>> m.item(), round(c.item(), 12)
    (1.5, 0.3)
    """
    depth, n, d = z.shape
    if t.shape != (depth, n):
        raise ValueError(f"t must have shape {(depth, n)} to match z, got {tuple(t.shape)}")
    mean_z, mean_y, cov_zz, cov_zy, cov_yy = hierarchy_moments(t, means, covariances)
    z_flat = z.permute(1, 0, 2).reshape(n, depth * d)
    return condition_mixture(
        z_flat, torch.log(weights), mean_z, mean_y, cov_zz, cov_zy, cov_yy if return_cov else None
    )


def optimal_field(
    z: torch.Tensor,
    t: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    covariances: torch.Tensor,
) -> torch.Tensor:
    """The exact optimal field ``E[y_D | z_0..z_{D-1}, t_0..t_{D-1}]``.

    Parameters
    ----------
    z : torch.Tensor of shape (D, n, d)
        States, outermost level first.
    t : torch.Tensor of shape (D, n)
        Times in ``[0, 1]``.
    weights : torch.Tensor of shape (M,)
    means : torch.Tensor of shape (M, d)
    covariances : torch.Tensor of shape (M, d, d)

    Returns
    -------
    out : torch.Tensor of shape (n, d)

    Examples
    --------
    Depth 1 at ``t = 0``: ``E[x1] - x0``.

    >>> import torch
    >>> f64 = torch.float64
    >>> out = optimal_field(torch.tensor([[[0.5]]], dtype=f64), torch.zeros(1, 1, dtype=f64),
    ...     torch.tensor([0.5, 0.5], dtype=f64), torch.tensor([[-1.0], [3.0]], dtype=f64),
    ...     torch.full((2, 1, 1), 0.1, dtype=f64))
    >>> round(out.item(), 12)
    0.5
    """
    log_post, cond_means, _, _ = hierarchy_posterior(
        z, t, weights, means, covariances, return_cov=False
    )
    return (torch.exp(log_post).unsqueeze(-1) * cond_means).sum(dim=1)


# ---------------------------------------------------------------------------
# numpy front end
# ---------------------------------------------------------------------------


def _mixture_log_prob(x, log_weights, means, covariances):
    """Row-wise mixture log-density: x (n, d), log_weights (n, M), means (n, M, d), covs (n, M, d, d)."""
    chol = torch.linalg.cholesky(covariances)
    white = torch.linalg.solve_triangular(chol, (x.unsqueeze(1) - means).unsqueeze(-1), upper=False)
    half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_norm = -0.5 * (white.squeeze(-1) ** 2).sum(-1) - half_logdet - 0.5 * x.shape[1] * _LOG_2PI
    return torch.logsumexp(log_weights + log_norm, dim=1)


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    return check_random_state(random_state)


def _draw_mixture(rng, probs, means, chol):
    """One draw per row from ``sum_m probs[i, m] N(means[i, m], chol chol^T)``.

    probs (n, M), means (n, M, d), chol (n, M, d, d) -> (n, d).
    """
    n, n_comp, d = means.shape
    u = rng.random(n)[:, None]
    comp = np.minimum((np.cumsum(probs, axis=1) < u).sum(axis=1), n_comp - 1)
    rows = np.arange(n)
    eps = rng.standard_normal((n, d))
    return means[rows, comp] + np.einsum("nij,nj->ni", chol[rows, comp], eps)


class MixtureOracle:
    """Gaussian-mixture data with a standard normal source: every answer exact.

    ``p1 = sum_m w_m N(mu_m, S_m)`` in ``R^d``, with the source ``N(0, I)`` at
    every level (spec section 5).

    Parameters
    ----------
    weights : array-like of shape (M,)
        Positive mixture weights; normalised to sum to one.
    means : array-like of shape (M, d)
    covariances : array-like of shape (M, d, d)
        Symmetric positive definite.

    Attributes
    ----------
    n_features : int
        Data dimension ``d``.
    n_components : int
        ``M``.
    weights : ndarray of shape (M,)
    means : ndarray of shape (M, d)
    covariances : ndarray of shape (M, d, d)
        All float64.

    See Also
    --------
    hrflow.datasets.mixture_oracle : the mixtures of the paper's experiments.

    Examples
    --------
    >>> import numpy as np
    >>> oracle = MixtureOracle([0.5, 0.5], [[-1.0], [1.0]], [[[0.02]], [[0.02]]])
    >>> oracle.sample(4, random_state=0).shape
    (4, 1)
    >>> bool(np.isclose(oracle.marginal_log_prob(np.zeros((1, 1)), 0.0)[0], -0.5 * np.log(2 * np.pi)))
    True
    >>> oracle.field(2)
    OracleField(depth=2, n_features=1, n_components=2)
    """

    def __init__(self, weights, means, covariances):
        weights = np.asarray(weights, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        covariances = np.asarray(covariances, dtype=np.float64)
        if weights.ndim != 1 or weights.shape[0] < 1:
            raise ValueError(f"weights must have shape (M,) with M >= 1, got {weights.shape}")
        n_comp = weights.shape[0]
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"weights must be finite and positive, got {weights}")
        if means.ndim != 2 or means.shape[0] != n_comp or means.shape[1] < 1:
            raise ValueError(f"means must have shape (M, d) = ({n_comp}, d), got {means.shape}")
        d = means.shape[1]
        if not np.all(np.isfinite(means)):
            raise ValueError("means must be finite")
        if covariances.shape != (n_comp, d, d):
            raise ValueError(
                f"covariances must have shape (M, d, d) = ({n_comp}, {d}, {d}), got {covariances.shape}"
            )
        if not np.all(np.isfinite(covariances)) or not np.allclose(
            covariances, covariances.transpose(0, 2, 1), rtol=1e-10, atol=1e-12
        ):
            raise ValueError("covariances must be finite and symmetric")
        try:
            chol = np.linalg.cholesky(covariances)
        except np.linalg.LinAlgError:
            raise ValueError("covariances must be positive definite") from None
        self.weights = weights / weights.sum()
        self.means = means
        self.covariances = covariances
        self.n_features = d
        self.n_components = n_comp
        self._chol = chol

    def __repr__(self):
        return f"MixtureOracle(n_components={self.n_components}, n_features={self.n_features})"

    # -- helpers -----------------------------------------------------------------
    def _torch_params(self):
        return (
            torch.as_tensor(self.weights),
            torch.as_tensor(self.means),
            torch.as_tensor(self.covariances),
        )

    def _check_X(self, X, name="X"):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"{name} must have shape (n, {self.n_features}), got {X.shape}")
        return X

    def _check_t(self, t, n):
        t = np.asarray(t, dtype=np.float64)
        if t.ndim == 0:
            t = np.full(n, float(t))
        if t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},), got {t.shape}")
        if not np.all((t >= 0) & (t <= 1)):
            raise ValueError("t must lie in [0, 1]")
        return t

    def _velocity(self, X, t, return_cov=True):
        X = self._check_X(X)
        t = self._check_t(t, X.shape[0])
        lp, m, c, ev = hierarchy_posterior(
            torch.as_tensor(X).unsqueeze(0),
            torch.as_tensor(t).unsqueeze(0),
            *self._torch_params(),
            return_cov=return_cov,
        )
        return lp, m, c, ev

    # -- data distribution ---------------------------------------------------------
    def sample(self, n_samples, random_state=None):
        """Draw from ``p1``.

        Parameters
        ----------
        n_samples : int
        random_state : int, RandomState, Generator or None, default=None

        Returns
        -------
        X : ndarray of shape (n_samples, d)
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 0:
            raise ValueError(f"n_samples must be a non-negative int, got {n_samples!r}")
        rng = _rng(random_state)
        n = int(n_samples)
        probs = np.broadcast_to(self.weights, (n, self.n_components))
        means = np.broadcast_to(self.means, (n, *self.means.shape))
        chol = np.broadcast_to(self._chol, (n, *self._chol.shape))
        return _draw_mixture(rng, probs, means, chol)

    def log_prob(self, X):
        """Log-density ``log p1(X)``.

        Parameters
        ----------
        X : array-like of shape (n, d)

        Returns
        -------
        log_p : ndarray of shape (n,)
        """
        return self.marginal_log_prob(X, 1.0)

    def marginal_log_prob(self, X, t):
        """Log-density of ``x_t = (1 - t) x0 + t x1``.

        ``p_t = sum_m w_m N(t mu_m, t^2 S_m + (1 - t)^2 I)``.

        Parameters
        ----------
        X : array-like of shape (n, d)
        t : float or array-like of shape (n,)
            Times in ``[0, 1]``.

        Returns
        -------
        log_p : ndarray of shape (n,)
        """
        return self._velocity(X, t, return_cov=False)[3].numpy()

    # -- velocity distribution (Theorem 1) -----------------------------------------
    def velocity_distribution(self, X, t):
        """The distribution of ``v = x1 - x0`` given ``x_t = X`` (Theorem 1).

        ``p(v | x, t) = rho0(x - t v) p1(x + (1 - t) v) / p_t(x)``, a Gaussian
        mixture in ``v``. At ``t = 1`` it is ``N(x, I)``.

        Parameters
        ----------
        X : array-like of shape (n, d)
        t : float or array-like of shape (n,)
            Times in ``[0, 1]``.

        Returns
        -------
        log_weights : ndarray of shape (n, M)
            Normalised log weights.
        means : ndarray of shape (n, M, d)
        covariances : ndarray of shape (n, M, d, d)
        """
        lp, m, c, _ = self._velocity(X, t)
        return lp.numpy(), m.numpy(), c.numpy()

    def velocity_log_prob(self, V, X, t):
        """Log-density ``log p(v | x, t)`` of Theorem 1.

        Parameters
        ----------
        V : array-like of shape (n, d)
            Velocities.
        X : array-like of shape (n, d)
            Locations.
        t : float or array-like of shape (n,)

        Returns
        -------
        log_p : ndarray of shape (n,)
        """
        V = torch.as_tensor(self._check_X(V, "V"))
        lp, m, c, _ = self._velocity(X, t)
        if V.shape[0] != lp.shape[0]:
            raise ValueError(f"V and X must have the same number of rows, got {V.shape[0]} and {lp.shape[0]}")
        return _mixture_log_prob(V, lp, m, c).numpy()

    def sample_velocity(self, X, t, random_state=None):
        """Draw one ``v ~ p(v | x, t)`` per row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n, d)
        t : float or array-like of shape (n,)
        random_state : int, RandomState, Generator or None, default=None

        Returns
        -------
        V : ndarray of shape (n, d)
        """
        log_w, means, covs = self.velocity_distribution(X, t)
        rng = _rng(random_state)
        return _draw_mixture(rng, np.exp(log_w), means, np.linalg.cholesky(covs))

    # -- fields and transforms -------------------------------------------------------
    def field(self, depth):
        """The exact optimal field of depth ``depth`` for this mixture.

        Parameters
        ----------
        depth : int
            ``D >= 1``.

        Returns
        -------
        field : OracleField
        """
        return OracleField(self, depth)

    def shifted(self, shift, scale):
        """The oracle of ``(X - shift) / scale`` for ``X ~ p1``.

        Parameters
        ----------
        shift : float or array-like of shape (d,)
        scale : float or array-like of shape (d,)
            Positive.

        Returns
        -------
        oracle : MixtureOracle

        Examples
        --------
        >>> o = MixtureOracle([1.0], [[3.0]], [[[4.0]]]).shifted(3.0, 2.0)
        >>> o.means.tolist(), o.covariances.tolist()
        ([[0.0]], [[[1.0]]])
        """
        d = self.n_features
        shift = np.broadcast_to(np.asarray(shift, dtype=np.float64), (d,))
        scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), (d,))
        if not np.all(np.isfinite(shift)):
            raise ValueError("shift must be finite")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError("scale must be finite and positive")
        means = (self.means - shift) / scale
        covs = self.covariances / np.outer(scale, scale)
        return MixtureOracle(self.weights, means, covs)

    def moments(self):
        """Mean and covariance of ``p1``.

        Returns
        -------
        mean : ndarray of shape (d,)
        covariance : ndarray of shape (d, d)
        """
        mean = self.weights @ self.means
        centred = self.means - mean
        cov = np.einsum("m,mij->ij", self.weights, self.covariances) + np.einsum(
            "m,mi,mj->ij", self.weights, centred, centred
        )
        return mean, cov


class OracleField(HierarchicalField):
    """The exact optimal field of a :class:`MixtureOracle` (spec section 5).

    ``head`` returns ``E[y_D | z_0..z_{D-1}, t_0..t_{D-1}]``, computed in float64
    with differentiable batched torch operations and returned in the dtype and
    on the device of the states. It holds no parameters.

    Parameters
    ----------
    oracle : MixtureOracle
    depth : int
        ``D >= 1``.

    Examples
    --------
    >>> import torch
    >>> f = MixtureOracle([1.0], [[2.0]], [[[0.5]]]).field(1)
    >>> f([torch.zeros(3, 1)], [torch.zeros(3)]).squeeze(1).tolist()
    [2.0, 2.0, 2.0]
    """

    def __init__(self, oracle: MixtureOracle, depth: int):
        if not isinstance(oracle, MixtureOracle):
            raise TypeError(f"oracle must be a MixtureOracle, got {type(oracle).__name__}")
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        super().__init__(int(depth), (oracle.n_features,))
        self.oracle = oracle
        # plain attributes, not buffers: Module.to(dtype) must not round them
        self._params = {torch.device("cpu"): oracle._torch_params()}

    def __repr__(self):
        return (
            f"OracleField(depth={self.depth}, n_features={self.oracle.n_features}, "
            f"n_components={self.oracle.n_components})"
        )

    def __getstate__(self):
        # the per-device copies are a cache: a pickle (or deepcopy) keeps the CPU entry
        # only, so that a field used on a GPU unpickles on a machine without one
        state = super().__getstate__()
        cpu = torch.device("cpu")
        state["_params"] = {cpu: state["_params"][cpu]}
        return state

    def _params_on(self, device):
        device = torch.device(device)
        if device not in self._params:
            self._params[device] = tuple(p.to(device) for p in self._params[torch.device("cpu")])
        return self._params[device]

    def head(self, encodings: Sequence) -> torch.Tensor:
        """Posterior mean of the target given ``encodings[k] = (z_k, t_k)``.

        Parameters
        ----------
        encodings : sequence of depth pairs ``(z, t)``
            ``z`` of shape (n, d), ``t`` of shape (n,) or a scalar.

        Returns
        -------
        out : torch.Tensor of shape (n, d)
            In the dtype and on the device of ``z_0``.
        """
        if len(encodings) != self.depth:
            raise ValueError(f"encodings must have {self.depth} entries, got {len(encodings)}")
        z0 = encodings[0][0]
        n = z0.shape[0]
        zs = torch.stack([z.reshape(n, -1) for z, _ in encodings]).to(torch.float64)
        ts = torch.stack(
            [torch.broadcast_to(torch.as_tensor(t, device=z0.device), (n,)) for _, t in encodings]
        ).to(torch.float64)
        out = optimal_field(zs, ts, *self._params_on(z0.device))
        return out.reshape(z0.shape).to(z0.dtype)


#: the paper's names of its mixtures -> the names of :func:`hrflow.datasets.mixture_oracle`
_PAPER_NAMES = {"1to2": "1to2", "1to5": "1to5", "2D 1to6": "six_gaussians"}


def paper_mixture(name: str) -> MixtureOracle:
    """The Gaussian-mixture data sets of the paper (spec section 6), under the paper's names.

    An alias of :func:`hrflow.datasets.mixture_oracle` (``"2D 1to6"`` is its
    ``"six_gaussians"``).

    Parameters
    ----------
    name : {"1to2", "1to5", "2D 1to6"}
        ``"1to5"`` and ``"2D 1to6"`` are standardised by the scalar mean and
        standard deviation of the population, as the paper standardises its data.

    Returns
    -------
    oracle : MixtureOracle

    See Also
    --------
    hrflow.datasets.mixture_oracle : the same oracles under the data sets' names.

    Examples
    --------
    >>> paper_mixture("1to2").means.ravel().tolist()
    [-1.0, 1.0]
    >>> round(float(paper_mixture("1to5").moments()[1][0, 0]), 12)
    1.0
    """
    if not isinstance(name, str) or name not in _PAPER_NAMES:
        raise ValueError(f"name must be one of '1to2', '1to5', '2D 1to6', got {name!r}")
    return mixture_oracle(_PAPER_NAMES[name])
