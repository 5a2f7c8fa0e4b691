"""The training machinery of :class:`hrflow.HRFEstimator`.

One iteration of training draws a batch (:func:`training_batch`: data rows
drawn with replacement, fresh source draws, optional dequantisation and OT
couplings, times per level), turns it into the hierarchy's regression pair
(:func:`hrflow.hierarchy.training_pair`) and takes an optimizer step at the
rate ``learning_rate * lr_factor(it, ...)`` (:func:`lr_factor`: linear
warm-up, then constant or cosine decay). States have shape
``(n, *event_shape)``, sources ``(depth, n, *event_shape)`` and times
``(depth, n)``, levels outermost (location) first.

The loop itself is :class:`Trainer` (settings in :class:`TrainingConfig`): EMA
updates, periodic finiteness checks of the losses and weights with snapshots of
the state (:func:`training_state`, :func:`restore_training_state`) and
:class:`TrainingDivergedError`, interruption, checkpoints, a progress bar and
data-parallel training. It reports back through callbacks only: the estimator
records the losses (``loss_curve_``, ``n_iter_``) and writes the checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import hierarchy
from ._random import randint, randn
from .coupling import SINKHORN_REG, couple_inner_in_groups, couple_sources, coupled_levels
from .distributed import broadcast_module, mean_across_ranks, use_distributed, wrap_field
from .ema import ema_decay_at, ema_update
from .images import dequantize
from .losses import regression_loss
from .time_samplers import sample_times

__all__ = [
    "Trainer",
    "TrainingConfig",
    "TrainingDivergedError",
    "batch_coupling",
    "lr_factor",
    "restore_training_state",
    "training_batch",
    "training_state",
]


def lr_factor(it: int, n_iter: int, *, warmup_iter: int = 0, schedule: str = "cosine") -> float:
    """Multiplier of the learning rate at iteration ``it`` of a training call of ``n_iter``.

    A linear warm-up ``(it + 1) / warmup_iter`` over the first ``warmup_iter``
    iterations, then ``1`` (``schedule="constant"``) or a cosine decay from
    ``1`` at ``it = warmup_iter`` to ``0`` at ``it = n_iter`` (``"cosine"``).

    Parameters
    ----------
    it : int
        Iteration of this training call, from 0.
    n_iter : int
        Iterations of this training call (the cosine's span ends there).
    warmup_iter : int, default=0
        Iterations of linear warm-up.
    schedule : {"cosine", "constant"}, default="cosine"
        Schedule after the warm-up.

    Returns
    -------
    factor : float
        In ``[0, 1]``.

    Examples
    --------
    >>> lr_factor(0, 100, warmup_iter=10), lr_factor(9, 100, warmup_iter=10)
    (0.1, 1.0)
    >>> lr_factor(10, 100, warmup_iter=10), lr_factor(100, 100, warmup_iter=10)
    (1.0, 0.0)
    >>> lr_factor(55, 100, warmup_iter=10, schedule="constant")
    1.0
    """
    if it < warmup_iter:
        return (it + 1) / warmup_iter
    if schedule == "constant":
        return 1.0
    span = max(n_iter - warmup_iter, 1)
    return 0.5 * (1 + math.cos(math.pi * min(it - warmup_iter, span) / span))


def batch_coupling(coupling: str, depth: int, *, paired: bool = False) -> tuple[tuple[int, ...], bool]:
    """The couplings applied to every training batch.

    Parameters
    ----------
    coupling : {"independent", "ot_location", "ot_velocity"}
    depth : int
        Number of levels ``D >= 1``.
    paired : bool, default=False
        Whether the location sources are fixed pairs of the data (reflow):
        then the location level is not re-paired and the inner levels are not
        coupled in groups (which rests on independent location draws).

    Returns
    -------
    levels : tuple of int
        Levels paired across the whole batch (:func:`hrflow.coupling.couple_sources`).
    grouped : bool
        Whether the inner levels are paired within groups sharing their outer
        states (:func:`hrflow.coupling.couple_inner_in_groups`).

    Examples
    --------
    >>> batch_coupling("ot_location", 2), batch_coupling("ot_location", 2, paired=True)
    (((0,), False), ((), False))
    >>> batch_coupling("ot_velocity", 3), batch_coupling("ot_velocity", 1)
    (((), True), ((), False))
    """
    levels = coupled_levels(coupling, depth)
    if paired:
        levels = tuple(k for k in levels if k > 0)
    return levels, coupling == "ot_velocity" and depth > 1 and not paired


def training_batch(
    data: torch.Tensor,
    source,
    depth: int,
    batch_size: int,
    generator: torch.Generator,
    *,
    samplers,
    coupling: str = "independent",
    coupling_method: str = "exact",
    coupling_reg: float = SINKHORN_REG,
    coupling_group_size: int = 32,
    n_bins: int | None = None,
    paired_sources: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one training batch: data rows, source draws of every level and times.

    The draws from ``generator`` come in a fixed order: the row indices, the
    dequantisation noise (``n_bins``), the location sources, the inner
    ``N(0, I)`` sources, the coupling of the location level, the times level
    by level, then the grouped coupling of the inner levels.

    Parameters
    ----------
    data : torch.Tensor of shape (n, *event_shape)
        Training data in the model space; rows are drawn with replacement,
        so ``batch_size`` may exceed ``n``.
    source : Source or None
        The location source (:mod:`hrflow.sources`), sampled as
        ``source.sample(batch_size, generator, device=..., dtype=...)``; its
        ``log_prob`` weights ``coupling="ot_velocity"``. Unused (may be None)
        with ``paired_sources``.
    depth : int
        Number of levels ``D >= 1``.
    batch_size : int
    generator : torch.Generator
        Drives every draw, made on the generator's device and moved to
        ``data``'s (a CPU generator may drive a batch on a GPU).
    samplers : sequence of str of length depth
        Time sampler of every level (:func:`hrflow.time_samplers.sample_times`).
    coupling : {"independent", "ot_location", "ot_velocity"}, default="independent"
        Mini-batch OT of the location draws (``"ot_location"``) or of the inner
        draws within groups of ``coupling_group_size`` (``"ot_velocity"``,
        ``depth >= 2``); see :func:`batch_coupling`.
    coupling_method : {"exact", "sinkhorn"}, default="exact"
    coupling_reg : float, default=0.01
        Entropic regularisation of ``"sinkhorn"``.
    coupling_group_size : int, default=32
    n_bins : int or None, default=None
        Quantised data: fresh uniform noise of one bin (``2 / n_bins``) is
        added to every drawn row (not with ``paired_sources``).
    paired_sources : torch.Tensor of shape (n, *event_shape) or None
        Fixed location sources paired row by row with ``data`` (reflow).

    Returns
    -------
    x1 : torch.Tensor of shape (batch_size, *event_shape)
        The data points.
    x0 : torch.Tensor of shape (depth, batch_size, *event_shape)
        The source draws of every level, outermost first, coupled as asked.
    t : torch.Tensor of shape (depth, batch_size)
        The times of every level.

    Examples
    --------
    >>> import torch
    >>> from hrflow.sources import StandardNormal
    >>> data = torch.randn(50, 2)
    >>> gen = torch.Generator().manual_seed(0)
    >>> x1, x0, t = training_batch(data, StandardNormal((2,)), 3, 8, gen,
    ...                            samplers=("uniform",) * 3, coupling="ot_location")
    >>> tuple(x1.shape), tuple(x0.shape), tuple(t.shape)
    ((8, 2), (3, 8, 2), (3, 8))
    """
    n = data.shape[0]
    levels, grouped = batch_coupling(coupling, depth, paired=paired_sources is not None)
    idx = randint(0, n, (batch_size,), generator, device=data.device)
    x1 = data[idx]
    if n_bins is not None and paired_sources is None:  # fresh dequantisation noise (bin 2 / n_bins)
        x1 = dequantize(x1, 2.0 / n_bins, generator)
    x0 = torch.empty((depth, *x1.shape), device=data.device, dtype=data.dtype)
    if paired_sources is None:
        x0[0] = source.sample(batch_size, generator, device=data.device, dtype=data.dtype)
    else:
        x0[0] = paired_sources[idx]
    if depth > 1:
        x0[1:] = randn((depth - 1, *x1.shape), generator, device=data.device, dtype=data.dtype)
    if levels:  # mini-batch OT: re-pair the source draws before the hierarchy math
        x0 = couple_sources(
            x1, x0, levels, method=coupling_method, reg=coupling_reg, generator=generator
        )
    t = torch.stack(
        [sample_times(s, batch_size, generator, device=data.device, dtype=data.dtype)
         for s in samplers]
    )
    if grouped:  # inner levels: OT within groups sharing their outer states
        x1, x0, t = couple_inner_in_groups(
            x1, x0, t, coupling_group_size, source.log_prob,
            method=coupling_method, reg=coupling_reg, generator=generator,
        )
    return x1, x0, t


@contextlib.contextmanager
def _sigint_deferred():
    """Hold a SIGINT (Ctrl-C) that arrives inside the block until the block ends.

    The update of one iteration (optimizer step, schedule, EMA, loss record) then
    happens in full or not at all, so an interrupted fit keeps ``n_iter_`` and
    the weights in step. The held signal goes to the previous handler on exit
    (by default it raises ``KeyboardInterrupt`` there). Outside the main thread,
    where handlers cannot be set, or when SIGINT is not handled by Python, the
    block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # SIG_IGN / SIG_DFL / set outside Python
        yield
        return
    held = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if held:
            previous(*held[0])


class TrainingDivergedError(RuntimeError):
    """Raised when the training loss or the weights become NaN or infinite."""


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one training call (:class:`Trainer`), the estimator's parameters.

    Parameters
    ----------
    n_iter : int
        Iterations of this call.
    batch_size : int
    samplers : tuple of str
        Time sampler of every level, outermost first; its length is the depth.
    loss : {"l2", "pseudo_huber"}, default="l2"
    huber_c : float or None, default=None
        See :func:`hrflow.losses.regression_loss`.
    coupling, coupling_method, coupling_reg, coupling_group_size, n_bins
        See :func:`training_batch`.
    learning_rate : float, default=1e-3
        The base rate (only named in the divergence message: the optimizer holds it).
    warmup_iter : int, default=0
    lr_schedule : {"cosine", "constant"}, default="cosine"
        See :func:`lr_factor`.
    grad_clip : float or None, default=None
        Largest gradient norm (:func:`torch.nn.utils.clip_grad_norm_`).
    ema_decay : float or None, default=None
        See :func:`hrflow.ema.ema_decay_at`.
    checkpoint_every : int or None, default=None
        Iterations between checkpoints (None: only at the end).
    check_every : int, default=25
        Iterations between finiteness checks of the losses and weights (and
        snapshots of the state).
    verbose : int, default=0
        A progress bar when truthy.
    distributed : bool or "auto", default="auto"
        Data-parallel training (:func:`hrflow.distributed.use_distributed`).

    Examples
    --------
    >>> config = TrainingConfig(n_iter=10, batch_size=32, samplers=("uniform", "u_shaped"))
    >>> config.depth, config.check_every
    (2, 25)
    """

    n_iter: int
    batch_size: int
    samplers: tuple[str, ...]
    loss: str = "l2"
    huber_c: float | None = None
    coupling: str = "independent"
    coupling_method: str = "exact"
    coupling_reg: float = SINKHORN_REG
    coupling_group_size: int = 32
    n_bins: int | None = None
    learning_rate: float = 1e-3
    warmup_iter: int = 0
    lr_schedule: str = "cosine"
    grad_clip: float | None = None
    ema_decay: float | None = None
    checkpoint_every: int | None = None
    check_every: int = 25
    verbose: int = 0
    distributed: bool | str = "auto"

    @property
    def depth(self) -> int:
        """Number of levels (one time sampler each)."""
        return len(self.samplers)


def training_state(field, optimizer, ema_field=None) -> dict:
    """Copies of the weights, optimizer state and EMA weights (a snapshot of training).

    Parameters
    ----------
    field : torch.nn.Module
    optimizer : torch.optim.Optimizer
    ema_field : torch.nn.Module or None, default=None

    Returns
    -------
    state : dict
        ``{"field": ..., "optimizer": ..., "ema": ... or None}`` state dicts
        (deep copies), for :func:`restore_training_state`.

    Examples
    --------
    >>> import torch
    >>> field = torch.nn.Linear(2, 2)
    >>> opt = torch.optim.AdamW(field.parameters())
    >>> state = training_state(field, opt)
    >>> with torch.no_grad():
    ...     _ = field.weight.add_(1.0)
    >>> restore_training_state(state, field, opt)
    >>> torch.equal(field.weight, state["field"]["weight"])
    True
    """
    return {
        "field": copy.deepcopy(field.state_dict()),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "ema": None if ema_field is None else copy.deepcopy(ema_field.state_dict()),
    }


def restore_training_state(state: dict, field, optimizer, ema_field=None) -> None:
    """Load a snapshot of :func:`training_state` back into the modules and optimizer.

    Parameters
    ----------
    state : dict
        From :func:`training_state`.
    field : torch.nn.Module
    optimizer : torch.optim.Optimizer
    ema_field : torch.nn.Module or None, default=None
        Restored when the snapshot holds EMA weights.

    Examples
    --------
    >>> import torch
    >>> field = torch.nn.Linear(1, 1)
    >>> opt = torch.optim.SGD(field.parameters(), lr=0.1)
    >>> state = training_state(field, opt)
    >>> torch.nn.init.zeros_(field.weight)  # doctest: +ELLIPSIS
    Parameter containing:...
    >>> restore_training_state(state, field, opt)
    >>> torch.equal(field.weight, state["field"]["weight"])
    True
    """
    field.load_state_dict(state["field"])
    optimizer.load_state_dict(state["optimizer"])
    if state["ema"] is not None:
        ema_field.load_state_dict(state["ema"])


class Trainer:
    """The training loop: optimizer steps on batches of :func:`training_batch`.

    Every iteration draws a batch, takes an optimizer step on the regression
    loss of :func:`hrflow.hierarchy.training_pair` (with gradient clipping and
    the learning rate scaled by :func:`lr_factor`) and updates the EMA
    weights. Every ``check_every`` iterations (and at checkpoints and the
    end) the losses since the last check are handed to ``on_losses`` if they
    and the field's weights are all finite, and a snapshot of the state is
    taken; a NaN or infinite loss, or weights made non-finite by a step (a
    finite loss with a NaN gradient), restore the last snapshot (weights,
    optimizer and EMA state) and raise :class:`TrainingDivergedError`, so
    that the recorded losses and the state stay consistent and the
    snapshots and checkpoints hold finite weights only. A
    ``KeyboardInterrupt`` keeps the finite losses recorded so far, calls
    ``on_checkpoint`` and ends the loop normally (:meth:`run` returns True);
    any other exception restores the last snapshot too and is raised again,
    so that ``n_done`` still counts the steps the weights took.
    Under data-parallel training the field is wrapped in DDP, the losses are
    averaged over the ranks and rank 0's final weights are broadcast.

    Parameters
    ----------
    field : HierarchicalField
        Trained in place.
    optimizer : torch.optim.Optimizer
        Over the trainable parameters of ``field``.
    source : Source or None
        The location source (see :func:`training_batch`).
    config : TrainingConfig
    ema_field : HierarchicalField or None, default=None
        EMA copy of ``field``, updated in place; in eval mode after :meth:`run`
        (it is never trained, only evaluated), as ``field`` is.
    start : int, default=0
        Iterations recorded before this call (warm start): offsets the EMA
        warm-up and is named in the divergence message.
    on_losses : callable or None, default=None
        ``on_losses(values)`` with the list of checked, finite losses (floats).
    on_checkpoint : callable or None, default=None
        Called after checks due for a checkpoint (``checkpoint_every``), at
        the end and after an interruption, when the weights are finite.

    Attributes
    ----------
    n_done : int
        Iterations of this call handed to ``on_losses``.
    fit_time : float or None
        Seconds the loop ran (set when it ends, also by an exception).

    Examples
    --------
    >>> import torch
    >>> from hrflow.fields import HierarchicalMLP
    >>> from hrflow.sources import StandardNormal
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> field = HierarchicalMLP(2, 1, hidden_size=8, n_layers=1, embedding_dim=4)
    >>> opt = torch.optim.AdamW(field.parameters(), lr=1e-3)
    >>> losses = []
    >>> config = TrainingConfig(n_iter=30, batch_size=16, samplers=("uniform", "uniform"))
    >>> trainer = Trainer(field, opt, StandardNormal((1,)), config, on_losses=losses.extend)
    >>> trainer.run(torch.randn(100, 1), torch.Generator().manual_seed(0))
    False
    >>> len(losses), trainer.n_done, field.training
    (30, 30, False)
    """

    def __init__(
        self, field, optimizer, source, config: TrainingConfig, *, ema_field=None, start: int = 0,
        on_losses=None, on_checkpoint=None,
    ):
        self.field, self.optimizer, self.source, self.config = field, optimizer, source, config
        self.ema_field, self.start = ema_field, start
        self.on_losses = on_losses if on_losses is not None else (lambda values: None)
        self.on_checkpoint = on_checkpoint if on_checkpoint is not None else (lambda: None)
        self.n_done = 0
        self.fit_time = None

    def run(self, data: torch.Tensor, generator: torch.Generator, *,
            paired_sources: torch.Tensor | None = None) -> bool:
        """Train for ``config.n_iter`` iterations.

        Parameters
        ----------
        data : torch.Tensor of shape (n, *event_shape)
            Training data in the model space.
        generator : torch.Generator
            On ``data``'s device; drives every draw.
        paired_sources : torch.Tensor of shape (n, *event_shape) or None
            Fixed location sources paired row by row with ``data`` (reflow).

        Returns
        -------
        interrupted : bool
            True when a ``KeyboardInterrupt`` ended the loop early.

        Raises
        ------
        TrainingDivergedError
            When a loss or, at a check, a weight is NaN or infinite (the state is
            back at the last check).
        Exception
            Any other error in the loop (e.g. of a callable source) is raised
            again, with the state back at the last check.
        """
        cfg, field, opt = self.config, self.field, self.optimizer
        n_iter, depth, batch = cfg.n_iter, cfg.depth, cfg.batch_size
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda it: lr_factor(it, n_iter, warmup_iter=cfg.warmup_iter,
                                      schedule=cfg.lr_schedule)
        )
        field.train()
        parallel = use_distributed(cfg.distributed)
        model = wrap_field(field, data.device) if parallel else field  # DDP averages gradients
        # weights, optimizer and EMA state as of the last check (finite losses and weights)
        good_state = training_state(field, opt, self.ema_field)
        check_every = cfg.check_every
        ckpt_every = cfg.checkpoint_every
        pending: list[torch.Tensor] = []
        bar = tqdm(total=n_iter, disable=not cfg.verbose, desc=f"HRF{depth} fit", leave=False)
        it = 0
        interrupted = False
        t_start = time.perf_counter()
        try:
            for it in range(n_iter):
                x1, x0, t = training_batch(
                    data, self.source, depth, batch, generator, samplers=cfg.samplers,
                    coupling=cfg.coupling, coupling_method=cfg.coupling_method,
                    coupling_reg=cfg.coupling_reg, coupling_group_size=cfg.coupling_group_size,
                    n_bins=cfg.n_bins, paired_sources=paired_sources,
                )
                z, target = hierarchy.training_pair(x1, x0, t)
                loss = regression_loss(model(z, t), target, cfg.loss, cfg.huber_c)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(field.parameters(), cfg.grad_clip)
                with _sigint_deferred():  # a Ctrl-C here would leave the weights a step ahead
                    opt.step()
                    scheduler.step()
                    if self.ema_field is not None:
                        ema_update(self.ema_field, field,
                                   ema_decay_at(cfg.ema_decay, self.start + it))
                    pending.append(loss.detach())
                ckpt_due = ckpt_every is not None and (it + 1) % ckpt_every == 0
                if (it + 1) % check_every == 0 or it + 1 == n_iter or ckpt_due:
                    with _sigint_deferred():  # a Ctrl-C here would drop the checked losses
                        last = self._flush_losses(pending, it, good_state)
                        good_state = training_state(field, opt, self.ema_field)
                    bar.set_postfix(loss=f"{last:.4g}")
                    if ckpt_due or it + 1 == n_iter:  # finite weights only: after the check
                        self.on_checkpoint()
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            try:  # (no collective: the other ranks may be elsewhere)
                self._flush_losses(pending, it, good_state, across_ranks=False)
            except TrainingDivergedError:
                pass
            self.on_checkpoint()
        except TrainingDivergedError:  # the state is back at the last check already
            raise
        except BaseException:
            # any other error (a failing source, ...): back to the last check too, where
            # n_done (and so the recorded losses) stand
            restore_training_state(good_state, field, opt, self.ema_field)
            raise
        else:
            if parallel:  # rank 0 holds the result; the other ranks get its weights bit for bit
                broadcast_module(field)
                if self.ema_field is not None:
                    broadcast_module(self.ema_field)
        finally:
            bar.close()
            field.eval()
            if self.ema_field is not None:  # only evaluated (sampling, densities): dropout off
                self.ema_field.eval()
            self.fit_time = time.perf_counter() - t_start
        return interrupted

    def _flush_losses(self, pending, it, good_state, *, across_ranks=True):
        """Check the pending losses: hand them on if finite, else restore and raise.

        Returns the last loss handed on (None when nothing was pending).
        """
        if not pending:
            return None
        values = torch.stack(pending)
        if across_ranks and use_distributed(self.config.distributed):  # same curve and NaN stop on all ranks
            values = mean_across_ranks(values)
        values = values.cpu().tolist()
        pending.clear()
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            what = f"the loss became {values[bad[0]]} at iteration {it - len(values) + 1 + bad[0]}"
        elif not self._finite_weights():  # a step from a finite loss (e.g. a NaN gradient)
            what = f"the weights became non-finite by iteration {it} (the losses were finite)"
        else:
            self.on_losses(values)
            self.n_done += len(values)
            return values[-1]
        # back to the last check: the losses since then belong to the discarded weights,
        # so the recorded losses and iterations stay as they were there
        restore_training_state(good_state, self.field, self.optimizer, self.ema_field)
        raise TrainingDivergedError(
            f"training diverged: {what}. Try a lower learning_rate (now "
            f"{self.config.learning_rate}). The weights, optimizer and EMA state were reset to "
            f"the last finite check point (n_iter_={self.start + self.n_done})."
        )

    def _finite_weights(self) -> bool:
        """Whether every parameter of the field is finite (one device synchronisation)."""
        params = list(self.field.parameters())
        return not params or bool(torch.stack([p.isfinite().all() for p in params]).all())
