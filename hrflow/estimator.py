"""HRFEstimator: the scikit-learn face of hierarchical rectified flows.

The estimator is thin: it validates parameters and data, resolves the device,
builds the field, runs the training loop and delegates the math to
:mod:`hrflow.hierarchy`, :mod:`hrflow.sampling` and :mod:`hrflow.density`.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import os
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, DensityMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from ._device import resolve_device, resolve_dtype
from ._validation import (
    check_algorithm,
    check_model_space,
    check_random_state_arg,
    check_user_units,
    naming_argument,
    nonconstant_scale,
    standardization,
    user_stacklevel,
)
from .coupling import (
    COUPLINGS,
    OT_METHODS,
    SINKHORN_REG,
    CouplingDensityWarning,
)
from .density import DRAWS
from .distributed import (
    allreduce_numpy,
    is_main_process,
    pooled_standardization,
    rank_device,
    rank_seed,
    use_distributed,
)
from .fields import FIELDS, HierarchicalField, n_parameters
from .images import (
    ReshapedSource,
    channel_standardization,
    check_image_shape,
    check_quantized,
    quantized_scaling,
    split_image_layout,
)
from .losses import LOSSES
from .persistence import check_saveable, write_checkpoint
from .sampling import INNER_SOLVERS, check_steps, default_steps, nested_euler
from .sources import AffineSource, CallableSource, EmpiricalSource, Source, StandardNormal
from .time_samplers import TIME_SAMPLERS
from .training import Trainer, TrainingConfig, TrainingDivergedError, batch_coupling

__all__ = ["HRFEstimator", "TrainingDivergedError"]


# set by validate_data(reset=True); fit assigns them with the rest of the fitted state
_FEATURE_ATTRIBUTES = ("n_features_in_", "feature_names_in_")

# parameters that fix the fitted model's structure: warm start refuses to change them
_STRUCTURE_PARAMS = (
    "depth", "field", "source", "hidden_size", "n_layers", "embedding_dim", "image_shape",
    "n_bins", "unet_channels", "unet_channel_mult", "unet_res_blocks", "unet_attention",
    "unet_dropout", "standardize", "dtype",
)


def _same_param(a, b) -> bool:
    """Whether two parameter values are equal (arrays by value, other objects by identity)."""
    if a is b:
        return True
    plain = (str, numbers.Number, type(None))
    if isinstance(a, plain) or isinstance(b, plain):
        return (isinstance(a, plain) and isinstance(b, plain)
                and isinstance(a, str) == isinstance(b, str) and bool(a == b))
    if all(isinstance(v, (list, tuple, np.ndarray)) or hasattr(v, "__array__") for v in (a, b)):
        try:
            a, b = np.asarray(a), np.asarray(b)
        except ValueError:  # ragged nested lists
            return False
        return a.shape == b.shape and bool(np.all(a == b))
    return False


def _short_repr(value) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or None where they cannot be read."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # e.g. Windows
        return None


def _is_time_sampler(value) -> bool:
    if isinstance(value, str):
        return value in TIME_SAMPLERS
    return isinstance(value, (tuple, list)) and all(
        isinstance(v, str) and v in TIME_SAMPLERS for v in value
    )


#: HierarchicalUNet argument -> estimator parameter, for error messages
_UNET_PARAMETERS = {
    "base_channels": "unet_channels",
    "channel_mult": "unet_channel_mult",
    "n_res_blocks": "unet_res_blocks",
    "attention_resolutions": "unet_attention",
    "dropout": "unet_dropout",
}


class HRFEstimator(DensityMixin, BaseEstimator):
    """Hierarchical rectified flow: a generative model and density estimator.

    A depth-``D`` HRF learns the distribution of the velocity (``D = 2``), of
    the acceleration (``D = 3``) and so on, by rectified-flow regression in
    each level's space (spec section 2). Depth 1 is classic rectified flow.
    Samples are drawn by nested Euler integration (:meth:`sample`), densities
    by the inner CNF at ``t = 0`` or ``t in (0, 1)`` (:meth:`score_samples`).

    Parameters
    ----------
    depth : int, default=2
        Number of levels: 1 is rectified flow, 2 is HRF2 (velocity), 3+ deeper.
    field : {"mlp", "unet"} or HierarchicalField, default="mlp"
        The network. ``"mlp"`` is the paper's low-dimensional design (a
        sinusoidal time embedding and an encoder per level, a shared trunk).
        ``"unet"`` is :class:`~hrflow.fields.HierarchicalUNet` for images
        (X of shape ``(n, C, H, W)``, or flat rows with ``image_shape``),
        sized by the ``unet_*`` parameters.
        A :class:`~hrflow.fields.HierarchicalField` instance of the right depth
        is copied and used as the initial field.
    source : "normal", array-like of shape (m, n_features), callable or Source, default="normal"
        Location-level source ``rho0``. ``"normal"`` is ``N(0, I)`` in the
        model's (standardised) space. An array gives an empirical source drawn
        with replacement; a callable ``fn(n, rng) -> array (n, n_features)``
        is called with a :class:`numpy.random.Generator`; a
        :class:`~hrflow.sources.Source` is used as is. Arrays, callables and
        Sources are in the user's units and go through the same
        standardisation as the data. Inner levels always start from ``N(0, I)``.
    hidden_size : int, default=128
        Width of the MLP trunk.
    n_layers : int, default=3
        Number of hidden trunk layers of the MLP.
    embedding_dim : int, default=32
        Size of the time embedding and of each per-level encoder (for
        ``"unet"``: of the sinusoidal time embedding).
    image_shape : tuple of 3 int or None, default=None
        ``(C, H, W)`` of flat image rows ``(n, C * H * W)`` (e.g. at the end of
        a Pipeline). Not needed when X is 4-D ``(n, C, H, W)``. With an image
        layout, :meth:`sample` returns the layout ``fit`` received, the
        scoring methods accept both, and ``standardize`` uses one mean and
        scale per channel.
    n_bins : int or None, default=None
        Number of levels of integer-valued data (256 for 8-bit images, 17 for
        :func:`sklearn.datasets.load_digits`); None for continuous data. X
        must then hold integers in ``[0, n_bins - 1]``; they are mapped to the
        model space by ``z = 2 (x + u) / n_bins - 1`` with fresh uniform
        dequantisation noise ``u ~ U[0, 1)`` in every training batch, instead
        of ``standardize`` (which is ignored). :meth:`score_samples` returns
        ``log p(x + u)`` of the dequantised data in user units (bins of width
        1), and :meth:`bits_per_dim` the discrete bound; see
        :mod:`hrflow.images`.
    unet_channels : int, default=32
        Base channels of the U-Net (``field="unet"`` only, as every ``unet_*``).
    unet_channel_mult : tuple of int, default=(1, 2)
        Channel multiplier per resolution level (``len - 1`` downsamplings).
    unet_res_blocks : int, default=1
        Residual blocks per resolution level.
    unet_attention : tuple of int, default=()
        Feature-map heights with self-attention (e.g. ``(4,)`` for the 4x4
        level of 8x8 images).
    unet_dropout : float, default=0.0
        Dropout rate of the U-Net's residual blocks.
    n_iter : int, default=2000
        Number of training iterations (0 trains nothing: useful with a given field).
    batch_size : int, default=1024
        Training batch size.
    learning_rate : float, default=1e-3
        AdamW learning rate.
    weight_decay : float, default=0.0
        AdamW weight decay.
    lr_schedule : {"cosine", "constant"}, default="cosine"
        Learning-rate schedule over the ``n_iter`` iterations of a fit call:
        cosine decay to zero, or constant.
    warmup_iter : int, default=0
        Linear learning-rate warm-up iterations at the start of each fit call.
    grad_clip : float or None, default=None
        Clip the gradient's global norm to this value before each step
        (:func:`torch.nn.utils.clip_grad_norm_`); None: no clipping.
    ema_decay : float or None, default=None
        Keep an exponential moving average of the weights (``ema_field_``),
        with decay ``min(ema_decay, (1 + k) / (10 + k))`` at update ``k``
        (:func:`hrflow.ema.ema_decay_at`); :meth:`sample` and the density
        methods then use it. None: no EMA. The paper's image runs use 0.9999.
    time_sampler : str or tuple of str, default="uniform"
        Distribution of the training times, ``"uniform"``, ``"u_shaped"`` or
        ``"logit_normal"``; a tuple gives one per level.
    loss : {"l2", "pseudo_huber"}, default="l2"
        Regression loss; see :func:`hrflow.losses.regression_loss`.
    huber_c : float or None, default=None
        Pseudo-Huber constant (None: ``0.00054 sqrt(d)``).
    coupling : {"independent", "ot_location", "ot_velocity"}, default="independent"
        Pairing of source and data draws within each training batch (see
        :mod:`hrflow.coupling`): independent draws; mini-batch optimal
        transport of the location source with the data (HOTCFM2); or, for
        depth >= 2, mini-batch optimal transport of the inner (velocity, ...)
        sources with their endpoints within groups of ``coupling_group_size``
        rows that share their outer states (the location level stays
        independent; needs a source with a density; in high dimension, e.g.
        images, the groups degenerate to copies of one data point, with a
        :class:`~hrflow.coupling.CouplingCollapseWarning`). ``"ot_location"``
        helps few-step sampling (``benchmarks/README.md``).
        With ``"ot_location"``, or ``"ot_velocity"`` at depth >= 3, the density
        of a model of depth >= 2 is no longer exact (Theorem 1 assumes
        independence): :meth:`score_samples` warns (Algorithm 3) or refuses
        (Algorithm 4); see ``coupled_``.
    coupling_group_size : int, default=32
        Rows per group of ``coupling="ot_velocity"`` (at most ``batch_size``).
    coupling_method : {"exact", "sinkhorn"}, default="exact"
        OT solver of the coupling: exact assignment (:func:`ot.emd`) or
        pairs drawn from the entropic plan (:func:`ot.sinkhorn`).
    coupling_reg : float, default=0.01
        Entropic regularisation of ``coupling_method="sinkhorn"``, relative to
        the largest squared distance of the batch. Smaller is closer to exact
        OT and slower: on 256 2-D points, 0.05 / 0.01 / 0.005 keep 34 % / 77 %
        / 89 % of the exact pairing's reduction of the mean squared distance, in
        12 / 15 / 26 ms (exact: 25 ms; ``benchmarks/bench_sinkhorn_reg.py``).
    standardize : bool, default=True
        Centre and scale each feature internally; samples and densities are
        returned in the user's units (densities include the log-Jacobian).
    steps : tuple of int or None, default=None
        Default integration steps per level for :meth:`sample`, outermost
        first (None: :func:`hrflow.sampling.default_steps`).
    inner_solver : str, default="euler"
        Solver of the innermost level when sampling, see
        :func:`hrflow.sampling.nested_euler`.
    density_algorithm : {3, 4}, default=3
        Density algorithm of :meth:`score_samples` (spec section 4): 3 puts
        the outer levels at ``t = 0``; 4 uses ``density_t`` in (0, 1).
    density_t : float, default=0.5
        Time of Algorithm 4.
    n_draws : int, default=4
        Source draws combined per point by :meth:`score_samples`.
    density_combine : {"logmeanexp", "mean"}, default="logmeanexp"
        How draws are combined: log-mean-exp (consistent) or the mean of the
        logs (a lower bound).
    density_draws : {"shared", "per_row"}, default="shared"
        ``"shared"``: the Monte Carlo draws of the density (source draws,
        inner draws, Hutchinson probes, Algorithm 4's marginal draws) are the
        same for every row, so row-to-row differences keep little Monte Carlo
        noise and a row's log-density does not depend on the other rows scored
        with it (except for the dequantisation noise of ``n_bins``, drawn per
        row); but the rows' errors are correlated and do not average out in a
        data set's mean. ``"per_row"``: independent draws per row (held in
        memory for all rows of a call: ``n_draws`` states per row, times
        ``n_draws_marginal`` for Algorithm 4); use it for a data set's
        log-likelihood or bits/dim and for model selection by :meth:`score`
        (see :mod:`hrflow.density`).
    divergence : {"auto", "exact", "hutchinson"}, default="auto"
        Divergence of the inner CNF; "auto" is exact up to 16 features.
    ode_solver : str, default="rk4"
        CNF solver: fixed-grid ``"rk4"``/``"midpoint"``/``"euler"`` with
        ``ode_steps`` steps, or adaptive ``"dopri5"`` with ``ode_atol``/``ode_rtol``.
    ode_steps : int, default=20
    ode_atol, ode_rtol : float, default=1e-5
    chunk_size : int, default=8192
        Rows processed at once by :meth:`sample` and :meth:`score_samples`
        (bounds memory; not that of ``density_draws="per_row"``'s draws).
        Densities do not depend on it; seeded samples do when ``n_samples``
        exceeds it (the chunks draw from one random stream in turn).
    device : str or torch.device, default="auto"
        ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``,
        ``"cuda:N"`` or ``"mps"``; one that is not available here is a
        ValueError at fit. Apple's MPS has no float64: there ``dtype`` must be
        ``"float32"``, :meth:`score_samples` integrates on the CPU, and what
        computes in float64 on the device fails: every ``source`` other than
        ``"normal"``, ``time_sampler="u_shaped"``, ``coupling="ot_velocity"``
        and ``coupling_method="sinkhorn"``. MPS is not tested on Apple
        hardware by this project's CI.
    dtype : {"float32", "float64"}, default="float32"
        Precision of the field and the states.
    warm_start : bool, default=False
        If True and already fitted, :meth:`fit` trains the current field (and
        optimizer state) for ``n_iter`` more iterations. Each such call is a
        training call of its own: its learning-rate schedule (``warmup_iter``,
        then ``lr_schedule`` over its ``n_iter``) starts over, and it draws new
        batches. Training
        settings (``learning_rate``, ``n_iter``, ``coupling``, ``steps``, ...)
        may change between calls; the parameters that fix the model's structure
        (``depth``, ``field``, ``source``, the network sizes, ``image_shape``,
        ``n_bins``, ``standardize``, ``dtype``) may not (ValueError).
    checkpoint_dir : str, os.PathLike or None, default=None
        Folder where :meth:`fit` writes checkpoints in the safe format of
        :meth:`save` (with the optimizer state), named
        ``checkpoint-<iterations>.hrf``: every ``checkpoint_every`` iterations,
        at the end of fit and on KeyboardInterrupt. ``HRFEstimator.load(folder)``
        loads the newest, and ``.set_params(warm_start=True).fit(X)`` trains it
        for ``n_iter`` more iterations. That does not finish the interrupted
        fit: it is a new training call, with a fresh learning-rate schedule
        (warm-up, and the cosine over the new ``n_iter`` from the full rate)
        and a fresh stream of batches, so its result differs from the
        uninterrupted fit's. Set ``n_iter`` to the iterations still wanted.
        Needs a savable model (a named ``field``, no callable ``source``).
    checkpoint_every : int or None, default=None
        Checkpoint interval in iterations (needs ``checkpoint_dir``); None: only
        at the end of fit (and on interruption).
    checkpoint_keep : int, default=1
        Number of newest checkpoints kept in ``checkpoint_dir`` (older
        ``checkpoint-*.hrf`` files there are deleted).
    distributed : {"auto"} or bool, default="auto"
        ``"auto"``: when :meth:`fit` runs inside an initialised
        :mod:`torch.distributed` process group (e.g. under ``torchrun``), train
        data-parallel with DistributedDataParallel: ``batch_size`` is per rank
        (the total batch is ``batch_size * world_size``), the ranks draw their
        own batches, and all end with rank 0's weights; see
        :mod:`hrflow.distributed`. ``False``: every process fits on its own.
        ``True``: like "auto" but a process group is required.
    verbose : int, default=0
        Show a progress bar during fit when > 0.
    random_state : int, RandomState instance or None, default=None
        Seeds the weights, the batches and all training draws. A call that
        continues a model trained for ``n_iter_ > 0`` iterations (warm start,
        :meth:`reflow`) seeds its draws from ``random_state`` and ``n_iter_``
        together, so that every continuation draws new batches and noise.

    Attributes
    ----------
    field_ : HierarchicalField
        The trained field (raw weights).
    ema_field_ : HierarchicalField or None
        EMA of ``field_``'s weights, used by :meth:`sample` and the density
        methods (in eval mode, as ``field_``: no dropout); None when
        ``ema_decay`` is None.
    n_parameters_ : int
        Trainable parameters of the field.
    image_shape_ : tuple (C, H, W) or None
        Image shape of the data (None for tabular data).
    input_ndim_ : {2, 4}
        Dimensions of the X that fit received; :meth:`sample` returns that layout.
    source_ : Source
        The location source in the model's space.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X has string feature names.
    mean_, scale_ : ndarray of shape (n_features,)
        Standardisation (zeros and ones when ``standardize=False``).
    steps_ : tuple of int
        Default sampling steps.
    device_ : torch.device
    loss_curve_ : list of float
        Training loss, one entry per iteration.
    n_iter_ : int
        Iterations trained in total. After a :class:`TrainingDivergedError`
        (a non-finite loss or weights), or any other error during training
        (e.g. of a callable ``source``), the weights, optimizer and EMA state
        are those of the last check with finite losses and weights (every 25
        iterations), and ``n_iter_`` and ``loss_curve_`` end there.
    optimizer_ : torch.optim.Optimizer or None
        None for a field without trainable parameters (fitted with ``n_iter=0``).
    coupled_ : bool
        Whether the field was trained with a coupling under which the density
        algorithms are not exact: ``"ot_location"``, :meth:`reflow`, or
        ``"ot_velocity"`` at depth >= 3 (at depth 2 it leaves the location level
        independent and the velocity density is a change of variables, so both
        algorithms stay exact). Only relevant for depth >= 2.
    tune_results_ : dict
        Only after :meth:`tune_steps`: ``"steps"``, ``"nfe"``, ``"score"``
        and ``"rank"`` of every candidate allocation.

    See Also
    --------
    sklearn.neighbors.KernelDensity, sklearn.mixture.GaussianMixture

    Notes
    -----
    Persistence: :meth:`save` / :meth:`load` use a safe format (JSON and
    tensors, read with ``weights_only=True``; :mod:`hrflow.persistence`);
    ``pickle``/``joblib`` work too and store every tensor on the CPU, so a
    model trained on a GPU loads on a machine without one (on the CPU, with a
    warning). Threads: the estimator never changes torch's thread count; in
    joblib's loky workers (``GridSearchCV(n_jobs=k)``) torch follows the
    ``OMP_NUM_THREADS = cpu_count() // k`` that joblib sets. Several processes:
    see ``distributed`` and :mod:`hrflow.distributed`.

    Examples
    --------
    >>> import numpy as np
    >>> from hrflow import HRFEstimator
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> est = HRFEstimator(depth=2, n_iter=20, batch_size=64, random_state=0).fit(X)
    >>> est.sample(5, steps=(4, 2), random_state=0).shape
    (5, 2)
    """

    _parameter_constraints: dict = {
        "depth": [Interval(numbers.Integral, 1, None, closed="left")],
        "field": [StrOptions(set(FIELDS) | {"unet"}), HierarchicalField],
        "source": [StrOptions({"normal"}), "array-like", callable, Source],
        "hidden_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "n_layers": [Interval(numbers.Integral, 1, None, closed="left")],
        "embedding_dim": [Interval(numbers.Integral, 2, None, closed="left")],
        "image_shape": [tuple, list, None],
        "n_bins": [Interval(numbers.Integral, 2, None, closed="left"), None],
        "unet_channels": [Interval(numbers.Integral, 1, None, closed="left")],
        "unet_channel_mult": [tuple, list],
        "unet_res_blocks": [Interval(numbers.Integral, 1, None, closed="left")],
        "unet_attention": [tuple, list],
        "unet_dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "n_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "lr_schedule": [StrOptions({"cosine", "constant"})],
        "warmup_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "grad_clip": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "ema_decay": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "time_sampler": [StrOptions(set(TIME_SAMPLERS)), tuple, list],
        "loss": [StrOptions(set(LOSSES))],
        "huber_c": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "coupling": [StrOptions(set(COUPLINGS))],
        "coupling_group_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "coupling_method": [StrOptions(set(OT_METHODS))],
        "coupling_reg": [Interval(numbers.Real, 0, None, closed="neither")],
        "standardize": ["boolean"],
        "steps": [tuple, list, Interval(numbers.Integral, 1, None, closed="left"), None],
        "inner_solver": [StrOptions(set(INNER_SOLVERS))],
        "density_algorithm": [StrOptions({"3", "4"}), Interval(numbers.Integral, 3, 4, closed="both")],
        "density_t": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_draws": [Interval(numbers.Integral, 1, None, closed="left")],
        "density_combine": [StrOptions({"logmeanexp", "mean"})],
        "density_draws": [StrOptions(set(DRAWS))],
        "divergence": [StrOptions({"auto", "exact", "hutchinson"})],
        "ode_solver": [StrOptions({"rk4", "midpoint", "euler", "dopri5", "bosh3", "adaptive_heun"})],
        "ode_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "ode_atol": [Interval(numbers.Real, 0, None, closed="neither")],
        "ode_rtol": [Interval(numbers.Real, 0, None, closed="neither")],
        "chunk_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "dtype": [StrOptions({"float32", "float64"})],
        "warm_start": ["boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "checkpoint_every": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "checkpoint_keep": [Interval(numbers.Integral, 1, None, closed="left")],
        "distributed": [StrOptions({"auto"}), "boolean"],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        depth=2,
        field="mlp",
        source="normal",
        *,
        hidden_size=128,
        n_layers=3,
        embedding_dim=32,
        image_shape=None,
        n_bins=None,
        unet_channels=32,
        unet_channel_mult=(1, 2),
        unet_res_blocks=1,
        unet_attention=(),
        unet_dropout=0.0,
        n_iter=2000,
        batch_size=1024,
        learning_rate=1e-3,
        weight_decay=0.0,
        lr_schedule="cosine",
        warmup_iter=0,
        grad_clip=None,
        ema_decay=None,
        time_sampler="uniform",
        loss="l2",
        huber_c=None,
        coupling="independent",
        coupling_group_size=32,
        coupling_method="exact",
        coupling_reg=SINKHORN_REG,
        standardize=True,
        steps=None,
        inner_solver="euler",
        density_algorithm=3,
        density_t=0.5,
        n_draws=4,
        density_combine="logmeanexp",
        density_draws="shared",
        divergence="auto",
        ode_solver="rk4",
        ode_steps=20,
        ode_atol=1e-5,
        ode_rtol=1e-5,
        chunk_size=8192,
        device="auto",
        dtype="float32",
        warm_start=False,
        checkpoint_dir=None,
        checkpoint_every=None,
        checkpoint_keep=1,
        distributed="auto",
        verbose=0,
        random_state=None,
    ):
        self.depth = depth
        self.field = field
        self.source = source
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.embedding_dim = embedding_dim
        self.image_shape = image_shape
        self.n_bins = n_bins
        self.unet_channels = unet_channels
        self.unet_channel_mult = unet_channel_mult
        self.unet_res_blocks = unet_res_blocks
        self.unet_attention = unet_attention
        self.unet_dropout = unet_dropout
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.warmup_iter = warmup_iter
        self.grad_clip = grad_clip
        self.ema_decay = ema_decay
        self.time_sampler = time_sampler
        self.loss = loss
        self.huber_c = huber_c
        self.coupling = coupling
        self.coupling_group_size = coupling_group_size
        self.coupling_method = coupling_method
        self.coupling_reg = coupling_reg
        self.standardize = standardize
        self.steps = steps
        self.inner_solver = inner_solver
        self.density_algorithm = density_algorithm
        self.density_t = density_t
        self.n_draws = n_draws
        self.density_combine = density_combine
        self.density_draws = density_draws
        self.divergence = divergence
        self.ode_solver = ode_solver
        self.ode_steps = ode_steps
        self.ode_atol = ode_atol
        self.ode_rtol = ode_rtol
        self.chunk_size = chunk_size
        self.device = device
        self.dtype = dtype
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.checkpoint_keep = checkpoint_keep
        self.distributed = distributed
        self.verbose = verbose
        self.random_state = random_state

    # ------------------------------------------------------------------ setup
    def _time_samplers(self) -> tuple[str, ...]:
        ts = self.time_sampler
        if isinstance(ts, str):
            return (ts,) * self.depth
        if not _is_time_sampler(ts) or len(ts) != self.depth:
            raise ValueError(
                f"The 'time_sampler' parameter must be one of {TIME_SAMPLERS} or a tuple of "
                f"{self.depth} of them (one per level). Got {ts!r} instead."
            )
        return tuple(ts)

    def _build_field(self, n_features: int, image_shape=None) -> HierarchicalField:
        # image_shape: (C, H, W) of image data; None reads the fitted image_shape_ (reloading)
        if image_shape is None:
            image_shape = getattr(self, "image_shape_", None)
        if isinstance(self.field, HierarchicalField):
            if self.field.depth != self.depth:
                raise ValueError(
                    f"The 'field' parameter has depth {self.field.depth} but depth={self.depth}."
                )
            allowed = [(n_features,)] + ([tuple(image_shape)] if image_shape is not None else [])
            if self.field.event_shape not in allowed:
                raise ValueError(
                    f"The 'field' parameter has event_shape {self.field.event_shape} but X has "
                    f"{n_features} features"
                    + (f" (images of shape {tuple(image_shape)})." if image_shape is not None else ".")
                )
            return copy.deepcopy(self.field)
        if self.field == "unet":
            if image_shape is None:
                raise ValueError(
                    "field='unet' needs image data: X of shape (n_samples, C, H, W), or flat rows "
                    "(n_samples, C * H * W) with the 'image_shape' parameter set to (C, H, W)."
                )
            try:
                return FIELDS["unet"](
                    self.depth,
                    tuple(image_shape),
                    base_channels=self.unet_channels,
                    channel_mult=tuple(self.unet_channel_mult),
                    n_res_blocks=self.unet_res_blocks,
                    attention_resolutions=tuple(self.unet_attention),
                    dropout=self.unet_dropout,
                    embedding_dim=self.embedding_dim,
                )
            except (TypeError, ValueError) as exc:  # name the estimator's parameters
                msg = str(exc)
                for name, param in _UNET_PARAMETERS.items():
                    msg = msg.replace(name, param)
                raise type(exc)(f"field='unet': {msg}") from exc
        return FIELDS[self.field](
            self.depth,
            n_features,
            hidden_size=self.hidden_size,
            n_layers=self.n_layers,
            embedding_dim=self.embedding_dim,
        )

    def _build_source(self, n_features: int, mean, scale, event_shape, dtype) -> Source:
        # event_shape: the field's, (n_features,) or (C, H, W); flat sources are reshaped to it.
        # dtype: the model's; source points (or a probe draw of a callable) are checked to be
        # finite and representable in the model's space, as X is (the fit's check)
        event_shape = tuple(event_shape)
        src = self.source
        if isinstance(src, str):  # "normal": N(0, I) in model space
            return StandardNormal(event_shape)
        if isinstance(src, Source) and src.event_shape == event_shape != (n_features,):
            return AffineSource(src, mean.reshape(event_shape), scale.reshape(event_shape))
        if isinstance(src, Source):
            base = src
        elif callable(src):
            base = CallableSource(src, (n_features,))
        else:
            with naming_argument("source"):
                pts = check_array(src, dtype=np.float64, allow_nd=True, input_name="source")
            if pts.ndim > 2 and pts.shape[1:] == event_shape:  # images given in (m, C, H, W)
                pts = pts.reshape(pts.shape[0], -1)
            if pts.ndim != 2 or pts.shape[1] != n_features:
                raise ValueError(
                    f"The 'source' parameter must hold one source point per row with X's "
                    f"{n_features} features, shape (m, {n_features}); got shape {pts.shape}."
                )
            base = EmpiricalSource(pts)
        if base.event_shape != (n_features,):
            raise ValueError(
                f"The 'source' parameter has event shape {base.event_shape}, but X has "
                f"{n_features} features."
            )
        if isinstance(base, (EmpiricalSource, CallableSource)):
            probe = torch.Generator().manual_seed(0)  # one small draw of a callable: its checks
            with naming_argument("source"):
                pts = base.points.numpy() if isinstance(base, EmpiricalSource) else (
                    base.sample(2, probe, dtype=torch.float64).numpy())
            with np.errstate(over="ignore", invalid="ignore"):
                check_model_space((pts - mean) / scale, dtype, name="source")
        if event_shape != (n_features,):
            return ReshapedSource(AffineSource(base, mean, scale), event_shape)
        return AffineSource(base, mean, scale)

    def _build_optimizer(self, field: HierarchicalField) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters of ``field`` (also used to reload its state)."""
        params = [p for p in field.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)

    def _field_dtype(self) -> torch.dtype:
        param = next(self.field_.parameters(), None)
        return resolve_dtype(self.dtype) if param is None else param.dtype

    def _torch_generator(
        self, rng: np.random.RandomState, *, offset_by_rank: bool = False, n_done: int = 0,
        device=None,
    ) -> torch.Generator:
        # n_done: iterations the model has trained before this training call. Continued
        # training mixes them into the seed, so that every call draws new batches and noise
        # (the seed of a fresh model, n_done=0, is the drawn one)
        seed = int(rng.randint(0, 2**31 - 1))
        if n_done:
            seed = int(np.random.SeedSequence([seed, n_done]).generate_state(1)[0]) & 0x7FFFFFFF
        if offset_by_rank:  # data-parallel training: every rank draws its own batches
            seed = rank_seed(seed)
        return torch.Generator(device=self.device_ if device is None else device).manual_seed(seed)

    # ---------------------------------------------------------------- fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the hierarchical field on X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Training data (at least 2 samples, finite values). Images may be
            4-D or flat rows with ``image_shape``; with ``n_bins``, integers in
            ``[0, n_bins - 1]``.
        y : None
            Ignored.

        Returns
        -------
        self : HRFEstimator

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0)
        >>> est.fit(X) is est
        True
        >>> est.n_features_in_, est.n_iter_, len(est.loss_curve_)
        (2, 5, 5)

        With ``warm_start=True`` a second call trains ``n_iter`` more iterations:

        >>> est.set_params(warm_start=True).fit(X).n_iter_
        10
        """
        resume = self.warm_start and hasattr(self, "field_")
        with naming_argument("X"):
            X, x_image_shape = split_image_layout(X)
        # parameter-only validation first, so that a bad value leaves no fitted state behind
        parallel = use_distributed(self.distributed)
        device = resolve_device(self.device)
        device = rank_device(device) if parallel else device
        dtype = resolve_dtype(self.dtype)
        if device.type == "mps" and dtype == torch.float64:
            raise ValueError(
                "dtype='float64' is not available with device='mps' (Apple's MPS has no float64); "
                "use dtype='float32', or device='cpu'."
            )
        steps = self._check_training_params("warm_start=True" if resume else None)
        if self.coupling == "ot_velocity" and self.depth < 2:  # as scikit-learn does for l1_ratio
            warnings.warn(
                "coupling='ot_velocity' pairs the inner (velocity, ...) levels and has no effect "
                "at depth 1: the model trains with independent draws (coupling='ot_location' "
                "pairs the location level).", UserWarning, stacklevel=user_stacklevel(),
            )
        if not resume:
            steps = check_steps(self.steps, self.depth) if self.steps is not None else (
                default_steps(self.depth)
            )
            if not isinstance(self.field, HierarchicalField) and self.embedding_dim % 2:
                raise ValueError(
                    "The 'embedding_dim' parameter of HRFEstimator must be an even int >= 2. "
                    f"Got {self.embedding_dim!r} instead."
                )
        before = {k: self.__dict__[k] for k in _FEATURE_ATTRIBUTES if k in self.__dict__}
        with naming_argument("X"):
            X = validate_data(
                self, X, dtype=[np.float64, np.float32], ensure_min_samples=2, reset=not resume
            )
        # validate_data records the features of X; like the rest of the fitted state they are
        # kept aside until every check has passed
        features = {k: self.__dict__.pop(k) for k in _FEATURE_ATTRIBUTES if k in self.__dict__}
        self.__dict__.update(before)
        rng = check_random_state(self.random_state)
        n_features = X.shape[1]
        image_shape = self._image_shape(x_image_shape, n_features, resume)
        if self.n_bins is not None:
            check_quantized(X, self.n_bins)
        if resume:
            self._check_data_range(X, self.mean_, self.scale_, dtype)

        if not resume:
            if self.n_bins is not None:  # fixed map to [-1, 1) (standardize is not used)
                mean, scale = quantized_scaling(n_features, self.n_bins)
            elif self.standardize and image_shape is not None:  # pooled as below
                mean, scale = channel_standardization(
                    X, image_shape, allreduce=allreduce_numpy if parallel else None
                )
            elif self.standardize:
                # overflow-safe; pooled over the ranks when training data-parallel
                pooled = pooled_standardization if parallel else standardization
                mean, scale, n_rows = pooled(X, return_count=True)
                scale = nonconstant_scale(mean, scale, n_rows)  # all ranks' rows: one decision
            else:
                mean, scale = np.zeros(n_features), np.ones(n_features)
            self._check_data_range(X, mean, scale, dtype)
            with torch.random.fork_rng(devices=[]):  # seed init without touching global state
                torch.manual_seed(int(rng.randint(0, 2**31 - 1)))
                field = self._build_field(n_features, image_shape)
            field = field.to(device=device, dtype=dtype)
            params = [p for p in field.parameters() if p.requires_grad]
            if not params and self.n_iter > 0:
                raise ValueError(
                    "The 'field' parameter has no trainable parameters; use n_iter=0 with it."
                )
            source = self._build_source(n_features, mean, scale, field.event_shape, dtype)
            # a parameter-free field (e.g. an exact oracle) with n_iter=0 needs no optimizer
            optimizer = self._build_optimizer(field) if params else None
            # all fitted state is assigned together, after every check has passed
            for k in _FEATURE_ATTRIBUTES:  # X without column names leaves none from a past fit
                self.__dict__.pop(k, None)
            self.__dict__.update(features)
            self._fit_params = self.get_params(deep=False)  # what warm start may not change
            self.mean_, self.scale_, self.steps_, self.device_ = mean, scale, steps, device
            self.source_, self.optimizer_ = source, optimizer
            self.loss_curve_ = []
            self.n_iter_ = 0
            self.coupled_ = False
            self.image_shape_, self.input_ndim_ = image_shape, 2 if x_image_shape is None else 4
            self.n_parameters_ = n_parameters(field)
            self.field_ = field
            # the EMA copy is only ever evaluated: in eval mode (dropout off) from the start
            self.ema_field_ = copy.deepcopy(field).eval() if self.ema_decay is not None else None
        else:
            if self.optimizer_ is None and self.n_iter > 0:
                raise ValueError(
                    "The 'field' parameter has no trainable parameters; use n_iter=0 with it."
                )
            self.device_, self.steps_ = device, steps
            self._fit_params = self.get_params(deep=False)
            self.input_ndim_ = 2 if x_image_shape is None else 4
            self._continue_training(device, dtype)

        data = torch.as_tensor((X - self.mean_) / self.scale_, dtype=dtype, device=device)
        data = data.reshape(data.shape[0], *self.field_.event_shape)
        gen = self._torch_generator(rng, offset_by_rank=parallel, n_done=self.n_iter_)
        self._train(data, gen)
        return self

    def _check_training_params(self, continued_by: str | None = None) -> tuple[int, ...] | None:
        """Checks of the parameters of a training call, before any work or change of state.

        ``continued_by`` names what trains the fitted model further (``"warm_start=True"``,
        ``"reflow"``), whose structure may then not change; None for a new model. Returns the
        sampling steps of a continued model (None for a new one).
        """
        self._check_integer_params()
        steps = None if continued_by is None else self._check_warm_start(continued_by)
        self._time_samplers()
        self._check_checkpointing()
        return steps

    def _continue_training(self, device, dtype) -> None:
        """Bring the fitted model in line with the parameters before it trains further.

        The field, EMA and optimizer state go to ``device`` and ``dtype``; the EMA is dropped
        or started from the current weights as ``ema_decay`` now says; the optimizer takes the
        current ``learning_rate`` and ``weight_decay``.
        """
        self.field_.to(device=device, dtype=dtype)
        if self.ema_decay is None:  # EMA switched off: the raw weights are used from now on
            self.ema_field_ = None
        elif getattr(self, "ema_field_", None) is None:  # switched on: start from the weights
            self.ema_field_ = copy.deepcopy(self.field_).eval()
        else:
            self.ema_field_.to(device=device, dtype=dtype)
        if self.optimizer_ is not None:
            # the moments follow the weights (a warm start after set_params(device=...)):
            # torch's load_state_dict casts each state tensor to its parameter's device
            self.optimizer_.load_state_dict(self.optimizer_.state_dict())
            for group in self.optimizer_.param_groups:
                group["lr"] = group["initial_lr"] = self.learning_rate
                group["weight_decay"] = self.weight_decay

    def _check_integer_params(self) -> None:
        """TypeError for a bool given where an int is expected (scikit-learn lets it through)."""
        for name, constraints in self._parameter_constraints.items():
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) and "boolean" not in constraints and any(
                isinstance(c, Interval) and c.type is numbers.Integral for c in constraints
            ):
                raise TypeError(
                    f"The {name!r} parameter of HRFEstimator must be an int, not a bool. "
                    f"Got {value!r} instead."
                )

    def _check_warm_start(self, continued_by: str) -> tuple[int, ...]:
        """Refuse a change of the fitted structure when training goes on; the steps to use."""
        fitted = getattr(self, "_fit_params", None)
        if fitted is None:  # a model fitted before hrflow recorded its parameters
            return self.steps_
        params = self.get_params(deep=False)
        changed = [k for k in _STRUCTURE_PARAMS if not _same_param(fitted[k], params[k])]
        if changed:
            what = ", ".join(
                f"{k}={_short_repr(params[k])} (fitted with {_short_repr(fitted[k])})" for k in changed
            )
            raise ValueError(
                f"{continued_by} continues training the fitted model, whose structure these "
                f"parameters fix: {what}. Restore them, or fit a new model (warm_start=False)."
            )
        if _same_param(fitted["steps"], self.steps):
            return self.steps_  # kept, perhaps chosen by tune_steps
        return check_steps(self.steps, self.depth)

    def _check_data_range(self, X, mean, scale, dtype) -> None:
        """ValueError if the standardised X overflows the model's precision."""
        with np.errstate(over="ignore", invalid="ignore"):
            Z = (X - mean) / scale
        hint = "" if self.standardize else " Use standardize=True, or rescale X."
        check_model_space(Z, dtype, hint=hint)
        check_user_units(mean, scale)

    def _check_checkpointing(self) -> None:
        """Check the checkpoint parameters and create the folder (before any fitted state)."""
        if self.checkpoint_dir is None:
            if self.checkpoint_every is not None:
                raise ValueError(
                    "The 'checkpoint_every' parameter needs 'checkpoint_dir' (the folder to write "
                    "to); set checkpoint_dir or checkpoint_every=None."
                )
            return
        check_saveable(self.get_params(deep=False))
        try:
            os.makedirs(self.checkpoint_dir, exist_ok=True)
        except OSError as exc:
            raise ValueError(
                f"The 'checkpoint_dir' parameter {str(self.checkpoint_dir)!r} cannot be used as a "
                f"folder: {exc}"
            ) from exc

    def _checkpoint(self) -> None:
        """Write a checkpoint if ``checkpoint_dir`` is set (rank 0 only)."""
        if self.checkpoint_dir is not None and is_main_process():
            write_checkpoint(self, self.checkpoint_dir, keep=self.checkpoint_keep)

    def _image_shape(self, x_image_shape, n_features, resume):
        """Image shape of this fit: from a 4-D X or the ``image_shape`` parameter (or None)."""
        shape = x_image_shape
        if self.image_shape is not None:
            param = check_image_shape(self.image_shape, n_features)
            if shape is not None and shape != param:
                raise ValueError(
                    f"The 'image_shape' parameter {param} does not match the images in X, of shape "
                    f"{shape}; leave image_shape=None for 4-D X."
                )
            shape = param
        if resume and shape is not None and shape != self.image_shape_:
            raise ValueError(
                f"X holds images of shape {shape}, but the model was fitted on "
                f"{self.image_shape_ or 'tabular data'}."
            )
        return self.image_shape_ if resume else shape

    def _check_grouped_coupling(self, batch: int) -> None:
        if self.coupling_group_size > batch:
            raise ValueError(
                f"The 'coupling_group_size' parameter must be at most batch_size={batch} "
                f"with coupling='ot_velocity'. Got {self.coupling_group_size} instead."
            )
        if not self.source_.has_log_prob:
            raise ValueError(
                "coupling='ot_velocity' needs the density of the 'source' (to weight the data "
                "points that pass through a state); use source='normal' or a source with a "
                f"log_prob (e.g. hrflow.sources.GaussianMixtureSource), got {self.source!r}."
            )

    def _training_config(self, n_iter: int) -> TrainingConfig:
        """The settings of a training call of ``n_iter`` iterations (:mod:`hrflow.training`)."""
        return TrainingConfig(
            n_iter=n_iter,
            batch_size=self.batch_size,  # drawn with replacement, so it may exceed n
            samplers=self._time_samplers(),
            loss=self.loss,
            huber_c=self.huber_c,
            coupling=self.coupling,
            coupling_method=self.coupling_method,
            coupling_reg=self.coupling_reg,
            coupling_group_size=self.coupling_group_size,
            n_bins=self.n_bins,
            learning_rate=self.learning_rate,
            warmup_iter=self.warmup_iter,
            lr_schedule=self.lr_schedule,
            grad_clip=self.grad_clip,
            ema_decay=self.ema_decay,
            checkpoint_every=self.checkpoint_every if self.checkpoint_dir is not None else None,
            verbose=self.verbose,
            distributed=self.distributed,
        )

    def _train(
        self, data: torch.Tensor, gen: torch.Generator, *, sources: torch.Tensor | None = None,
        n_iter: int | None = None,
    ) -> None:
        # sources: fixed location sources paired row by row with data (reflow); None: fresh draws
        n_iter = self.n_iter if n_iter is None else n_iter
        if n_iter == 0:  # nothing to train (and perhaps no optimizer)
            self.field_.eval()
            self.fit_time_ = 0.0
            return
        config = self._training_config(n_iter)
        # the location pairs are fixed during reflow, and grouped inner coupling rests on
        # independent location draws: not during reflow
        levels, grouped = batch_coupling(self.coupling, self.depth, paired=sources is not None)
        if grouped:
            self._check_grouped_coupling(self.batch_size)
        # the velocity coupling of D = 2 keeps both density algorithms exact (the location
        # level stays independent and the velocity density is a change of variables)
        if levels or (grouped and self.depth > 2) or sources is not None:
            self.coupled_ = True
        trainer = Trainer(
            self.field_, self.optimizer_, self.source_, config, ema_field=self.ema_field_,
            start=self.n_iter_, on_losses=self._record_losses, on_checkpoint=self._checkpoint,
        )
        try:
            interrupted = trainer.run(data, gen, paired_sources=sources)
        finally:
            if trainer.fit_time is not None:
                self.fit_time_ = trainer.fit_time
        if interrupted:  # the losses and a checkpoint of the iterations kept are written
            warnings.warn(
                f"fit interrupted after {trainer.n_done} of {n_iter} iterations; keeping the "
                "model trained so far (it is fitted and usable).",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )

    def _record_losses(self, values: list[float]) -> None:
        """Record checked (finite) losses of training: ``loss_curve_`` and ``n_iter_``."""
        self.loss_curve_.extend(values)
        self.n_iter_ += len(values)

    # --------------------------------------------------------------- sampling
    def sample(self, n_samples=1, steps=None, random_state=None, *, return_path=False):
        """Generate samples by nested Euler integration.

        Parameters
        ----------
        n_samples : int, default=1
            Number of samples.
        steps : tuple of int or None, default=None
            Steps per level, outermost (location) first; NFE = prod(steps).
            None uses ``steps_``.
        random_state : int, RandomState instance or None, default=None
            Seed of this call. None uses the estimator's ``random_state``
            (a fresh generator every call, so an int ``random_state`` gives
            the same samples every time).
        return_path : bool, default=False
            Also return the location states after every outer step.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features), float64
            Samples in the user's units, in the layout ``fit`` received
            (``(n_samples, C, H, W)`` for 4-D images). With ``n_bins`` they are
            continuous values clipped to ``[0, n_bins)`` (a draw outside the
            data's range lands in an edge bin; ``path`` is not clipped):
            ``np.floor`` gives integers.
            Drawn with ``ema_field_`` when there is one.
        path : ndarray of shape (steps[0] + 1, n_samples, n_features)
            Only if ``return_path`` (image layout as ``X``).

        Raises
        ------
        ValueError
            Before any work, if the output cannot fit in memory: more than the
            machine's physical memory (where it cannot be read, e.g. on
            Windows, the largest array numpy can address) for
            ``n_samples * n_features * 8`` bytes (float64), times
            ``steps[0] + 2`` with ``return_path``. Below that the samples are
            drawn in chunks of ``chunk_size``; draw larger sets in several calls.

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)

        ``steps=(4, 2)``: 4 location steps, each integrating the velocity
        level in 2 steps (4 * 2 = 8 field evaluations per sample):

        >>> samples = est.sample(10, steps=(4, 2), random_state=0)
        >>> samples.shape, samples.dtype
        ((10, 2), dtype('float64'))
        >>> bool(np.array_equal(samples, est.sample(10, steps=(4, 2), random_state=0)))
        True
        >>> _, path = est.sample(10, steps=(4, 2), random_state=0, return_path=True)
        >>> path.shape  # the start and the state after each of the 4 location steps
        (5, 10, 2)
        """
        check_is_fitted(self)
        if not isinstance(return_path, (bool, np.bool_)):
            raise TypeError(f"return_path must be a bool, got {return_path!r}")
        steps, gen, dtype = self._sampling_setup(n_samples, steps, random_state)
        self._check_output_size(n_samples, steps[0] + 2 if return_path else 1)
        out, paths = [], []
        chunk = self._checked_chunk_size()
        with torch.no_grad():
            for start in range(0, n_samples, chunk):
                m = min(chunk, n_samples - start)
                res = nested_euler(
                    self._model_field(), m, steps, self.source_, gen, device=self.device_, dtype=dtype,
                    inner_solver=self.inner_solver, atol=self.ode_atol, rtol=self.ode_rtol,
                    return_path=return_path,
                )
                if return_path:
                    res, path = res
                    paths.append(path.cpu().to(torch.float64).numpy())
                out.append(res.cpu().to(torch.float64).numpy())
        X = self._to_user(np.concatenate(out))
        X = self._clip_to_bins(X)
        if return_path:
            return X, self._to_user(np.concatenate(paths, axis=1))
        return X

    def _sampling_setup(self, n_samples, steps, random_state):
        """Validate ``n_samples``/``steps``; return ``(steps, generator, dtype)`` of one call."""
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral):
            raise TypeError(f"n_samples must be a positive int, got {n_samples!r}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be a positive int, got {n_samples}")
        steps = self.steps_ if steps is None else check_steps(steps, self.field_.depth)
        rng = check_random_state_arg(self.random_state if random_state is None else random_state)
        return steps, self._torch_generator(rng), self._field_dtype()

    def _fitted_param(self, name: str):
        """A parameter as the model was fitted with (``set_params`` after ``fit`` does not change it)."""
        fitted = getattr(self, "_fit_params", None)
        return getattr(self, name) if fitted is None else fitted.get(name, getattr(self, name))

    def _clip_to_bins(self, X: np.ndarray) -> np.ndarray:
        """Samples of a quantised model clipped to the data's range ``[0, n_bins)``."""
        n_bins = self._fitted_param("n_bins")
        if n_bins is None:
            return X
        return np.clip(X, 0.0, np.nextafter(float(n_bins), 0.0))  # outside: the edge bins

    def _checked_chunk_size(self) -> int:
        """``chunk_size``, checked again at use (``set_params`` after ``fit`` skips ``fit``'s check)."""
        chunk = self.chunk_size
        if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
            raise ValueError(f"The 'chunk_size' parameter must be an int >= 1. Got {chunk!r} instead.")
        return int(chunk)

    def _check_output_size(self, n_samples, n_outputs, name="n_samples") -> None:
        """ValueError if ``n_outputs`` float64 arrays of ``n_samples`` rows cannot fit in memory.

        ``name`` is the user's parameter that set ``n_samples`` (for the message).
        """
        nbytes = int(n_samples) * int(n_outputs) * self.n_features_in_ * 8
        memory = _physical_memory()
        limit = np.iinfo(np.intp).max if memory is None else memory
        if nbytes > limit:
            where = (
                "the largest array numpy can address" if memory is None
                else "this machine's physical memory"
            )
            raise ValueError(
                f"{name}={n_samples} is too large: the output takes {nbytes / 2**30:.4g} GiB "
                f"({name} * n_features * 8 bytes, float64, times {n_outputs} output "
                f"array(s)), more than {where} ({limit / 2**30:.4g} GiB of memory). Draw the "
                "samples in several smaller calls."
            )

    def _model_field(self) -> HierarchicalField:
        """The field used for sampling and densities: the EMA copy if there is one."""
        ema = getattr(self, "ema_field_", None)
        return self.field_ if ema is None else ema

    def _to_user(self, Z: np.ndarray) -> np.ndarray:
        """Model-space states ``(..., *event_shape)`` to user units, in the layout fit received."""
        lead = Z.shape[: Z.ndim - len(self.field_.event_shape)]
        X = Z.reshape(*lead, -1) * self.scale_ + self.mean_
        if getattr(self, "input_ndim_", 2) == 4:
            X = X.reshape(*lead, *self.image_shape_)
        return X

    def _sample_pairs(self, n_samples, steps, random_state, name="n_samples"):
        """Model-space ``(x0, x1)`` tensors drawn exactly as :meth:`sample` draws."""
        from .reflow import sample_pairs

        steps, gen, dtype = self._sampling_setup(n_samples, steps, random_state)
        self._check_output_size(n_samples, 2, name)  # the pairs (x0, x1)
        x0s, x1s = [], []
        chunk = self._checked_chunk_size()
        with torch.no_grad():
            for start in range(0, n_samples, chunk):
                m = min(chunk, n_samples - start)
                x0, x1 = sample_pairs(
                    self._model_field(), m, steps, self.source_, gen, device=self.device_,
                    dtype=dtype, inner_solver=self.inner_solver, atol=self.ode_atol,
                    rtol=self.ode_rtol,
                )
                x0s.append(x0)
                x1s.append(x1)
        return torch.cat(x0s), torch.cat(x1s)

    def sample_pairs(self, n_samples=1, steps=None, random_state=None):
        """Samples together with the location source draw each one started from.

        Draws exactly what :meth:`sample` draws with the same arguments (the
        same random stream), and also returns every sample's source point
        ``x0^(0)``: the (source, sample) coupling of the model, as used by
        :meth:`reflow`.

        Parameters
        ----------
        n_samples : int, default=1
        steps : tuple of int or None, default=None
            As in :meth:`sample`.
        random_state : int, RandomState instance or None, default=None
            As in :meth:`sample`.

        Returns
        -------
        X0 : ndarray of shape (n_samples, n_features), float64
            Source draws in the user's units (layout as :meth:`sample`).
        X : ndarray of shape (n_samples, n_features), float64
            The samples, equal to ``sample(n_samples, steps, random_state)``.

        Raises
        ------
        ValueError
            As in :meth:`sample`, for the two outputs together.

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(100, 1))
        >>> est = HRFEstimator(depth=1, n_iter=5, batch_size=32, random_state=0).fit(X)
        >>> X0, X1 = est.sample_pairs(4, steps=(3,), random_state=1)
        >>> bool(np.array_equal(X1, est.sample(4, steps=(3,), random_state=1)))
        True
        """
        check_is_fitted(self)
        Z0, Z1 = self._sample_pairs(n_samples, steps, random_state)
        return (self._to_user(Z0.cpu().to(torch.float64).numpy()),
                self._clip_to_bins(self._to_user(Z1.cpu().to(torch.float64).numpy())))

    def reflow(self, n_pairs=10_000, *, steps=None, n_iter=None, random_state=None):
        """Retrain the field on (source, sample) pairs of the model itself (reflow).

        Draws ``n_pairs`` pairs ``(x0^(0), x1)`` with :meth:`sample_pairs`
        (the model's own sampler, ``steps`` per level), then continues
        training the current field for ``n_iter`` iterations with the location
        source of every training example fixed to its pair's source point and
        the data replaced by the pair's sample (Liu et al. 2022, "Flow
        straight and fast"; fine-tuned from the current weights as Lee et al.
        2024). Inner levels keep fresh, independent ``N(0, I)`` draws (also
        with ``coupling="ot_velocity"``, whose weights assume independent
        location draws). The optimizer, learning-rate schedule,
        ``time_sampler``, ``loss`` and EMA are those of :meth:`fit`.

        The parameters are checked as for a warm start of :meth:`fit`, before
        any work: the structure may not change, ``checkpoint_dir`` is created
        (checkpoints are written as by :meth:`fit`), and an ``ema_decay``
        switched on or off since the fit starts or drops the EMA once the
        pairs are drawn. Under data-parallel training (``distributed``) every
        rank draws its own batches of its pairs (the same pairs on every rank
        when the seed is fixed).

        Reflow straightens the location paths, which helps few-step sampling;
        it also makes the location coupling deterministic, so for depth >= 2
        :meth:`score_samples` is no longer exact (see :mod:`hrflow.coupling`).

        Design: like ``partial_fit``, this is a further training stage of the
        fitted model (it needs its field, source and standardisation and no
        data), so it changes the estimator in place and returns it;
        ``copy.deepcopy(est).reflow(...)`` keeps the original. ``clone`` /
        ``fit`` do not repeat it.

        Parameters
        ----------
        n_pairs : int, default=10000
            Number of (source, sample) pairs drawn once and reused for every
            iteration (batches of ``batch_size`` drawn with replacement).
        steps : tuple of int or None, default=None
            Sampling steps of the pairs (None: ``steps_``). More steps give
            more accurate pairs.
        n_iter : int or None, default=None
            Training iterations on the pairs (None: ``n_iter``).
        random_state : int, RandomState instance or None, default=None
            Seeds the pairs (the same seed gives the pairs of
            ``sample_pairs(n_pairs, steps, random_state)``) and then, together
            with ``n_iter_``, the training draws. None uses the estimator's
            ``random_state``.

        Returns
        -------
        self : HRFEstimator

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(100, 1))
        >>> est = HRFEstimator(depth=1, n_iter=5, batch_size=32, random_state=0).fit(X)
        >>> est.reflow(n_pairs=50, steps=(4,), n_iter=3, random_state=0).n_iter_
        8
        """
        check_is_fitted(self)
        if isinstance(n_pairs, bool) or not isinstance(n_pairs, numbers.Integral) or n_pairs < 1:
            raise ValueError(f"n_pairs must be a positive int, got {n_pairs!r}")
        n_iter = self.n_iter if n_iter is None else n_iter
        if isinstance(n_iter, bool) or not isinstance(n_iter, numbers.Integral) or n_iter < 0:
            raise ValueError(f"n_iter must be a non-negative int, got {n_iter!r}")
        if self.optimizer_ is None and n_iter > 0:
            raise ValueError("reflow needs a field with trainable parameters (optimizer_ is None).")
        # the parameter checks of fit's warm start, before any work
        self._validate_params()
        self._check_training_params("reflow")
        rng = check_random_state_arg(self.random_state if random_state is None else random_state)
        Z0, Z1 = self._sample_pairs(n_pairs, steps, rng, name="n_pairs")
        # the pairs are those of sample_pairs (with the EMA as it stands); then, as a warm
        # start, the EMA follows ema_decay and the optimizer the current rate
        self._continue_training(self.device_, self._field_dtype())
        # data-parallel: every rank draws its own batches of the (same) pairs, as in fit
        parallel = use_distributed(self.distributed)
        gen = self._torch_generator(rng, offset_by_rank=parallel, n_done=self.n_iter_)
        self._train(Z1, gen, sources=Z0, n_iter=int(n_iter))
        return self

    def tune_steps(
        self, X_val, nfe=100, *, criterion="sliced_wasserstein", candidates=None, n_samples=None,
        random_state=None,
    ):
        """Choose the split of an NFE budget over the levels on held-out data.

        Every candidate ``steps`` (by default all ``(k_0, ..., k_{D-1})`` with
        ``prod == nfe``, :func:`hrflow.step_allocation.step_allocations`) is
        scored by sampling ``n_samples`` points with
        ``sample(n_samples, steps, random_state=seed)`` (the same seed for all
        candidates: common random numbers) and computing ``criterion`` against
        ``X_val`` (:func:`hrflow.step_allocation.allocation_score`, its
        directions seeded by ``seed`` too). ``seed`` is ``random_state`` if it
        is an int, else an int drawn from it (None: from the estimator's
        ``random_state``). With ``n_bins`` the samples are floored to integers
        (the model's discrete samples) before they are compared with the
        integers of ``X_val``. The best (lowest) candidate becomes ``steps_``,
        the default of :meth:`sample`. Since factors of 1 are allowed, a
        budget always has an exact split.

        Parameters
        ----------
        X_val : array-like of shape (n_val, n_features)
            Held-out data (not the training set).
        nfe : int, default=100
            Total budget of field evaluations (ignored with ``candidates``).
        criterion : {"sliced_wasserstein", "wasserstein"} or callable, default="sliced_wasserstein"
            Lower is better; ``"wasserstein"`` is the exact 1-D W1 (one feature
            only); a callable gets ``(X_gen, X_val)`` as 2-D arrays.
        candidates : sequence of tuple of int or None, default=None
            Allocations to compare instead of every split of ``nfe``.
        n_samples : int or None, default=None
            Samples drawn per candidate (None: ``len(X_val)``).
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        self : HRFEstimator
            With ``steps_`` set to the best candidate and ``tune_results_``:
            a dict with ``"steps"`` (list of tuples), ``"nfe"``, ``"score"``
            and ``"rank"`` (1 = best) arrays, one entry per candidate.

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> rng = np.random.default_rng(0)
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, random_state=0)
        >>> est = est.fit(rng.normal(size=(100, 2)))
        >>> est.tune_steps(rng.normal(size=(50, 2)), nfe=4, random_state=0).tune_results_["steps"]
        [(1, 4), (2, 2), (4, 1)]
        """
        from .step_allocation import allocation_score, step_allocations

        check_is_fitted(self)
        with naming_argument("X_val"):
            X_val, _ = split_image_layout(X_val)
            X_val = validate_data(self, X_val, dtype=[np.float64, np.float32], reset=False)
        if not callable(criterion) and criterion not in ("sliced_wasserstein", "wasserstein"):
            raise ValueError(
                "criterion must be 'sliced_wasserstein', 'wasserstein' or a callable, "
                f"got {criterion!r}"
            )
        if criterion == "wasserstein" and X_val.shape[1] != 1:
            raise ValueError(
                f"criterion='wasserstein' needs 1-D data, got {X_val.shape[1]} features; "
                "use criterion='sliced_wasserstein'"
            )
        if candidates is None:
            candidates = step_allocations(nfe, self.field_.depth)
        else:
            candidates = [check_steps(c, self.field_.depth) for c in candidates]
            if not candidates:
                raise ValueError("candidates must hold at least one allocation")
        n_samples = X_val.shape[0] if n_samples is None else n_samples
        if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
            seed = int(random_state)
        else:
            rng = check_random_state_arg(self.random_state if random_state is None else random_state)
            seed = int(rng.randint(0, 2**31 - 1))
        def generated(steps):
            X_gen = self.sample(n_samples, steps=steps, random_state=seed)
            # quantised data: the model's integer samples against the integers of X_val
            return np.floor(X_gen) if self._fitted_param("n_bins") is not None else X_gen

        scores = np.array([
            allocation_score(generated(s), X_val, criterion, random_state=seed) for s in candidates
        ], dtype=np.float64)
        order = np.argsort(scores, kind="stable")
        rank = np.empty(len(scores), dtype=np.int64)
        rank[order] = np.arange(1, len(scores) + 1)
        self.tune_results_ = {
            "steps": list(candidates),
            "nfe": np.array([math.prod(s) for s in candidates]),
            "score": scores,
            "rank": rank,
        }
        self.steps_ = tuple(candidates[int(order[0])])
        return self

    def _check_coupled_density(self, algorithm: int) -> None:
        """Warn (Algorithm 3) or refuse (Algorithm 4) densities of a coupled model of depth >= 2."""
        if self.field_.depth < 2 or not getattr(self, "coupled_", False):
            return
        why = (
            "this model was trained on pairs that were not drawn independently (a coupling "
            "other than 'independent', or reflow), but the density algorithms rest on "
            "Theorem 1, which assumes independent source and data draws (see hrflow.coupling)."
        )
        if algorithm == 4:
            raise ValueError(
                f"density algorithm 4 is not available: {why} Algorithm 4 is then inconsistent; "
                "use algorithm=3 (consistent as n_draws grows) or train with "
                "coupling='independent'."
            )
        warnings.warn(
            f"The log-density is not exact: {why} Algorithm 3's log-mean-exp over n_draws "
            "source draws is still a consistent estimate but has a large variance and a "
            "negative bias for few draws: use a large n_draws.",
            CouplingDensityWarning,
            stacklevel=user_stacklevel(),
        )

    # ---------------------------------------------------------------- density
    def log_density(
        self,
        X,
        *,
        algorithm=None,
        t=None,
        n_draws=None,
        combine=None,
        divergence=None,
        solver=None,
        n_steps=None,
        random_state=None,
        dequantize=None,
        n_draws_marginal=None,
        draws=None,
    ):
        """Log-density of X in nats with per-call density settings.

        Every keyword left at None takes the estimator's corresponding
        parameter (``density_algorithm``, ``density_t``, ``n_draws``,
        ``density_combine``, ``divergence``, ``ode_solver``, ``ode_steps``,
        ``random_state``, ``density_draws``). ``divergence="auto"`` is exact up to 16 features
        and Hutchinson (one fixed probe per draw along the whole ODE) above,
        and for image fields. The EMA weights are used when there are some.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
            Points in user units (either image layout for image models).
        dequantize : bool or None, default=None
            With ``n_bins``: score ``X + u``, ``u ~ U[0, 1)^d`` drawn from
            ``random_state`` (X must hold integers in ``[0, n_bins - 1]``), a
            one-draw estimate of the discrete log-probability bound
            ``E_u[log p(x + u)] <= log P(x)``. False scores X itself as a point
            of the continuous (dequantised) space. None: True iff ``n_bins``.
        n_draws_marginal : int or None, default=None
            Algorithm 4 only: draws of its Monte Carlo estimate of the marginal
            ``p_t`` per velocity draw (None: 64). Its variance is large at small
            ``t`` (see :mod:`hrflow.density`); raise it there.
        draws : {"shared", "per_row"} or None, default=None
            Draws shared by all rows or independent per row (see the
            ``density_draws`` parameter).

        Returns
        -------
        log_density : ndarray of shape (n_samples,), float64
            ``log p`` of the (dequantised) data in user units.

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)
        >>> fast = est.log_density(X[:5], n_draws=2, n_steps=5, random_state=0)
        >>> fast.shape, fast.dtype
        ((5,), dtype('float64'))
        >>> est.log_density(X[:5], algorithm=4, t=0.5).shape
        (5,)

        With every keyword left at None it is :meth:`score_samples`:

        >>> bool(np.allclose(est.log_density(X[:5]), est.score_samples(X[:5])))
        True
        """
        check_is_fitted(self)
        return self._log_density(
            self._validate_scored(X), algorithm=algorithm, t=t, n_draws=n_draws, combine=combine,
            divergence=divergence, solver=solver, n_steps=n_steps, random_state=random_state,
            dequantize=dequantize, n_draws_marginal=n_draws_marginal, draws=draws,
        )

    def _log_density(self, X, *, algorithm=None, t=None, n_draws=None, combine=None,
                     divergence=None, solver=None, n_steps=None, random_state=None,
                     dequantize=None, n_draws_marginal=None, draws=None):
        """:meth:`log_density` of rows ``X`` already checked by :meth:`_validate_scored`."""
        from .density import log_density

        rng = check_random_state_arg(self.random_state if random_state is None else random_state)
        if dequantize is not None and not isinstance(dequantize, (bool, np.bool_)):
            raise TypeError(f"dequantize must be None, True or False, got {dequantize!r}")
        n_bins = self._fitted_param("n_bins")
        if n_bins is not None and (dequantize or dequantize is None):
            check_quantized(X, n_bins)
            X = X + rng.uniform(size=X.shape)
        elif dequantize:
            raise ValueError("dequantize=True needs the 'n_bins' parameter (quantised data).")
        algorithm = check_algorithm(self.density_algorithm if algorithm is None else algorithm)
        if algorithm == 4 and not self.source_.has_log_prob:
            raise ValueError(
                "algorithm=4 needs the density of the source, which the 'source' parameter does not "
                "give (an array, a callable, or a Source without log_prob): use algorithm=3, or "
                "fit with source='normal' or a source with a log_prob (e.g. "
                "hrflow.sources.GaussianMixtureSource)."
            )
        self._check_coupled_density(algorithm)
        t = self.density_t if t is None else t
        n_draws = self.n_draws if n_draws is None else n_draws
        if isinstance(n_draws, bool) or not isinstance(n_draws, numbers.Integral) or n_draws < 1:
            raise ValueError(f"n_draws must be a positive int, got {n_draws!r}")
        combine = self.density_combine if combine is None else combine
        draws = self.density_draws if draws is None else draws
        divergence = self.divergence if divergence is None else divergence
        field, device = self._model_field(), self.device_
        if device.type == "mps":  # the CNF integrates in float64, which MPS lacks: on the CPU
            field, device = copy.deepcopy(field).to("cpu"), torch.device("cpu")
        if divergence == "auto":
            image = len(field.event_shape) == 3
            divergence = "exact" if X.shape[1] <= 16 and not image else "hutchinson"
        solver = self.ode_solver if solver is None else solver
        n_steps = self.ode_steps if n_steps is None else n_steps
        gen = self._torch_generator(rng, device=device)
        dtype = self._field_dtype()
        with np.errstate(over="ignore", invalid="ignore"):
            Z = (X - self.mean_) / self.scale_
        hint = " Clip X." if dtype == torch.float64 else " Score such points with dtype='float64', or clip X."
        check_model_space(Z, dtype, hint=hint)
        Z = torch.as_tensor(Z, dtype=dtype, device=device)
        Z = Z.reshape(Z.shape[0], *field.event_shape)
        field.eval()
        logp = log_density(
            field, Z, self.source_, algorithm=algorithm, t=t, n_draws=n_draws,
            n_draws_marginal=n_draws_marginal, combine=combine, divergence=divergence,
            solver=solver, n_steps=n_steps, draws=draws,
            atol=self.ode_atol, rtol=self.ode_rtol, generator=gen, batch_size=self._checked_chunk_size(),
        )
        logp = logp.cpu().numpy() - np.log(self.scale_).sum()  # float64 already
        if np.isnan(logp).any():  # overflow inside the ODE: an answer, not a NaN
            rows = np.flatnonzero(np.isnan(logp))
            raise ValueError(
                f"the log-density of {rows.size} row(s) of X (first: row {rows[0]}) overflowed the "
                f"model's {str(dtype).removeprefix('torch.')} arithmetic; these points are too far "
                "from the training data. " + ("Clip X." if dtype == torch.float64
                                               else "Use dtype='float64' or clip X.")
            )
        return np.maximum(logp, np.finfo(np.float64).min)

    def _validate_scored(self, X) -> np.ndarray:
        """Rows ``(n, n_features)`` of X given flat or, for image models, as ``(n, C, H, W)``."""
        with naming_argument("X"):
            X, x_image_shape = split_image_layout(X)
        if x_image_shape is not None and x_image_shape != getattr(self, "image_shape_", None):
            raise ValueError(
                f"X holds images of shape {x_image_shape}, but the model was fitted on "
                f"{getattr(self, 'image_shape_', None) or 'tabular data'}."
            )
        with naming_argument("X"):
            return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def score_samples(self, X):
        """Log-density of each sample in nats (user units; Algorithm 3 or 4).

        With ``n_bins``, the log-density of the dequantised point ``x + u``
        (see :meth:`log_density`; :meth:`bits_per_dim` averages over ``u``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)

        Returns
        -------
        log_density : ndarray of shape (n_samples,)

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)
        >>> log_p = est.score_samples(X[:5])  # natural log: nats, one value per row
        >>> log_p.shape, log_p.dtype
        ((5,), dtype('float64'))
        >>> bits = -log_p / (X.shape[1] * np.log(2))  # nats to bits per dimension
        >>> bool(np.allclose(bits, est.bits_per_dim(X[:5])))
        True
        """
        return self.log_density(X)

    def bits_per_dim(self, X, *, n_dequant=1, random_state=None, **density_params):
        """Negative log-likelihood of each sample in bits per dimension (spec section 4).

        Continuous data: ``-log p(x) / (d ln 2)`` in user units. With
        ``n_bins``: the discrete bound ``-E_u[log p(x + u)] / (d ln 2)``
        (equal to :func:`hrflow.metrics.bits_per_dim` of the model-space
        density), averaged over ``n_dequant`` dequantisation draws ``u``;
        averaged over a data set it bounds the discrete NLL from above. A
        uniform model gives ``log2(n_bins)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, C, H, W)
        n_dequant : int, default=1
            Dequantisation draws per sample (ignored for continuous data).
        random_state : int, RandomState instance or None, default=None
            Seed of the draws; None uses the estimator's ``random_state``.
        **density_params
            Keywords of :meth:`log_density` (``algorithm``, ``n_draws``, ...).

        Returns
        -------
        bpd : ndarray of shape (n_samples,)
            Average it for a data set's bits/dim.

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)
        >>> bpd = est.bits_per_dim(X[:5])
        >>> bpd.shape
        (5,)

        For continuous data it is the negative log-density in nats over
        ``d ln 2``:

        >>> nats = est.score_samples(X[:5])
        >>> bool(np.allclose(bpd, -nats / (2 * np.log(2))))
        True
        """
        check_is_fitted(self)
        if isinstance(n_dequant, bool) or not isinstance(n_dequant, numbers.Integral) or n_dequant < 1:
            raise ValueError(f"n_dequant must be a positive int, got {n_dequant!r}")
        keywords = set(inspect.signature(self._log_density).parameters) - {"X", "random_state"}
        if unknown := sorted(set(density_params) - keywords):
            raise TypeError(f"bits_per_dim got unexpected keyword argument(s) {unknown}; it takes "
                            f"those of log_density: {sorted(keywords)}")
        X = self._validate_scored(X)
        n, d = X.shape
        reps = n_dequant if self._fitted_param("n_bins") is not None else 1
        rs = self.random_state if random_state is None else random_state
        logp = self._log_density(np.tile(X, (reps, 1)), random_state=rs, **density_params)
        nll = -logp.reshape(reps, n).mean(axis=0)
        return nll / (d * math.log(2.0))

    def score(self, X, y=None):
        """Mean log-likelihood of X (higher is better), as for GaussianMixture.

        With the default ``density_draws="shared"`` the Monte Carlo errors of
        the rows are correlated and do not average out; for model selection
        (``GridSearchCV`` scores each candidate with this method) set
        ``density_draws="per_row"``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : None
            Ignored.

        Returns
        -------
        score : float

        Examples
        --------
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)
        >>> score = est.score(X[:5])
        >>> type(score)
        <class 'float'>
        >>> bool(np.isclose(score, est.score_samples(X[:5]).mean()))
        True
        """
        return float(np.mean(self.score_samples(X)))

    # ------------------------------------------------------------ persistence
    def save(self, path):
        """Save the fitted model in hrflow's safe format (no code is stored).

        The file holds the parameters as JSON, the learned arrays, the field's
        ``state_dict`` and the optimizer state, written with :func:`torch.save`
        and read back with ``weights_only=True``; see :mod:`hrflow.persistence`.
        A custom field instance or a callable source is code and cannot be
        saved this way (TypeError): use ``pickle`` or ``joblib.dump`` instead.

        Parameters
        ----------
        path : str or os.PathLike
            Destination file (conventionally ``*.hrf``).

        Returns
        -------
        path : pathlib.Path

        Raises
        ------
        TypeError
            For a model holding code (a field instance or a callable source),
            or a ``path`` that is not a str or os.PathLike.
        ValueError
            If ``path`` is a folder or its folder does not exist.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = est.save(Path(folder) / "model.hrf")
        ...     loaded = HRFEstimator.load(path)
        >>> path.name
        'model.hrf'
        >>> bool(np.array_equal(loaded.sample(5, random_state=0), est.sample(5, random_state=0)))
        True
        """
        from .persistence import save_estimator

        check_is_fitted(self)
        return save_estimator(self, path)

    @classmethod
    def load(cls, path, device=None):
        """Load a model written by :meth:`save` or a checkpoint.

        Parameters
        ----------
        path : str or os.PathLike
            A file, or a ``checkpoint_dir`` folder (its newest checkpoint).
        device : str, torch.device or None, default=None
            Where to put the model; None: the training device if available
            here, else the CPU (with a warning).

        Returns
        -------
        estimator : HRFEstimator
            Fitted; ``sample`` with the same seed and ``score_samples`` give the
            same results as the saved model, and ``warm_start=True`` trains it
            further (a new training call: see the ``checkpoint_dir`` parameter).

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist (as for :func:`open`).
        ValueError
            If the file is not an hrflow model file, is damaged, or holds
            parameters and weights that do not fit together (or non-finite
            weights); or if ``device`` is not available here.

        Examples
        --------
        >>> import tempfile
        >>> from pathlib import Path
        >>> import numpy as np
        >>> from hrflow import HRFEstimator
        >>> X = np.random.default_rng(0).normal(size=(64, 2))
        >>> est = HRFEstimator(depth=2, n_iter=5, batch_size=32, hidden_size=16,
        ...                    device="cpu", random_state=0).fit(X)
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     loaded = HRFEstimator.load(est.save(Path(folder) / "model.hrf"), device="cpu")
        >>> bool(np.allclose(loaded.score_samples(X[:5]), est.score_samples(X[:5])))
        True

        A ``checkpoint_dir`` folder loads its newest checkpoint, which
        ``warm_start=True`` trains for ``n_iter`` more iterations (with a fresh
        learning-rate schedule and new batches, not the rest of the first fit's):

        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = est.set_params(checkpoint_dir=folder).fit(X)
        ...     resumed = HRFEstimator.load(folder).set_params(warm_start=True).fit(X)
        >>> resumed.n_iter_
        10
        """
        from .persistence import load_estimator

        est = load_estimator(cls, path, device=device)
        est._fit_params = est.get_params(deep=False)  # what warm start may not change
        return est

    def __getstate__(self):
        # every tensor on the CPU, so that a model trained on a GPU unpickles anywhere
        from .persistence import portable_state

        return portable_state(super().__getstate__())

    def __setstate__(self, state):
        from .persistence import restore_portable_state

        super().__setstate__(state)
        # a pickle of an earlier version lacks the parameters added since: their defaults
        for name, param in inspect.signature(type(self).__init__).parameters.items():
            if name != "self" and name not in self.__dict__:
                setattr(self, name, param.default)
        restore_portable_state(self)

    def __sklearn_is_fitted__(self):
        # fitted means a trained field: attributes such as n_features_in_, set by
        # validate_data before a later check fails, do not count
        return hasattr(self, "field_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags
