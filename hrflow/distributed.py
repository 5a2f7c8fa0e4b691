"""Data-parallel training on :mod:`torch.distributed` (one process per device).

When :meth:`HRFEstimator.fit <hrflow.HRFEstimator.fit>` runs inside an initialised
process group (``torch.distributed.is_initialized()``, e.g. under ``torchrun``)
every rank trains the same model on its own batches:

- the standardisation (``mean_``, ``scale_``) is pooled over the rows of all ranks
  (:func:`pooled_standardization`; per channel for images,
  :func:`hrflow.images.channel_standardization` with :func:`allreduce_numpy`), so
  the ranks may hold the same data or shards;
- the field is wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`
  (:func:`wrap_field`), which broadcasts rank 0's initial weights and averages the
  gradients; gloo on the CPU, nccl on GPUs (device ``cuda:LOCAL_RANK``,
  :func:`rank_device`);
- each rank draws its batches with its own seed (:func:`rank_seed`);
  ``batch_size`` is per rank, the total batch is ``batch_size * world_size``;
- the losses are averaged over the ranks (:func:`mean_across_ranks`), so every
  rank has the same ``loss_curve_`` and stops together on a NaN loss;
- at the end rank 0's weights are broadcast (:func:`broadcast_module`), so every
  rank holds the same model bit for bit.

Every function here is a no-op (or the identity) without a process group. All
ranks must call ``fit`` with the same parameters and the same number of features:
the collectives above are matched call by call.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "is_distributed",
    "use_distributed",
    "rank",
    "world_size",
    "local_rank",
    "is_main_process",
    "rank_device",
    "rank_seed",
    "allreduce_numpy",
    "pooled_standardization",
    "wrap_field",
    "mean_across_ranks",
    "broadcast_module",
]


def is_distributed() -> bool:
    """Whether a :mod:`torch.distributed` process group is initialised.

    Examples
    --------
    >>> is_distributed()
    False
    """
    return dist.is_available() and dist.is_initialized()


def use_distributed(mode) -> bool:
    """Resolve the estimator's ``distributed`` parameter.

    Parameters
    ----------
    mode : {"auto"} or bool
        ``"auto"``: data-parallel when a process group is initialised; ``False``:
        never (each rank fits its own model); ``True``: required.

    Returns
    -------
    on : bool

    Examples
    --------
    >>> use_distributed("auto"), use_distributed(False)
    (False, False)
    """
    if mode is True and not is_distributed():
        raise ValueError(
            "distributed=True needs an initialised torch.distributed process group "
            "(run under torchrun and call torch.distributed.init_process_group first)."
        )
    return bool(mode) and is_distributed()


def rank() -> int:
    """Rank of this process (0 without a process group).

    Examples
    --------
    >>> rank()  # a single process, no process group
    0
    """
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group).

    Examples
    --------
    >>> world_size()  # a single process, no process group
    1
    """
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank on this node: ``$LOCAL_RANK`` (set by torchrun), else the global rank.

    Examples
    --------
    >>> import os
    >>> local_rank() == int(os.environ.get("LOCAL_RANK", 0))  # 0 outside torchrun
    True
    """
    return int(os.environ.get("LOCAL_RANK", rank()))


def is_main_process() -> bool:
    """True on rank 0 (and without a process group): the rank that writes files.

    Examples
    --------
    >>> is_main_process()  # a single process, no process group
    True
    """
    return rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """The device this rank trains on.

    A CUDA device without an index becomes ``cuda:LOCAL_RANK``; with nccl the
    device must be a GPU.

    Parameters
    ----------
    device : torch.device
        The resolved ``device`` parameter.

    Returns
    -------
    device : torch.device

    Examples
    --------
    >>> import torch
    >>> rank_device(torch.device("cpu"))
    device(type='cpu')
    """
    if device.type == "cuda" and device.index is None:
        index = local_rank()
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK={index} but only {torch.cuda.device_count()} CUDA device(s) are "
                "visible; start at most one process per GPU (torchrun --nproc_per_node)."
            )
        return torch.device("cuda", index)
    if is_distributed() and dist.get_backend() == "nccl" and device.type != "cuda":
        raise ValueError(
            f"the process group uses nccl, which needs CUDA tensors, but device={device}; "
            "use device='cuda' (or 'auto'), or init_process_group('gloo') for the CPU."
        )
    return device


def rank_seed(seed: int) -> int:
    """A per-rank seed derived from ``seed`` (``seed`` itself on rank 0).

    Examples
    --------
    >>> rank_seed(123)
    123
    """
    return (int(seed) + 1_000_003 * rank()) % (2**63 - 1)


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", local_rank())
    return torch.device("cpu")


_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}


def allreduce_numpy(array: np.ndarray, op: str) -> np.ndarray:
    """All-reduce a float64 array over the ranks (``op`` is ``"sum"`` or ``"max"``).

    Parameters
    ----------
    array : ndarray
    op : {"sum", "max"}

    Returns
    -------
    reduced : ndarray of the same shape, float64
        ``array`` itself (as float64) without a process group.

    Examples
    --------
    >>> import numpy as np
    >>> allreduce_numpy(np.array([1.0, 2.0]), "sum")
    array([1., 2.])
    """
    array = np.asarray(array, dtype=np.float64)
    if not is_distributed():
        return array
    t = torch.as_tensor(array, device=_comm_device()).clone()
    dist.all_reduce(t, op=_OPS[op])
    return t.cpu().numpy()


def pooled_standardization(X: np.ndarray, *, return_count: bool = False) -> tuple[np.ndarray, ...]:
    """Mean and standard deviation of the rows of ``X`` over all ranks.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        This rank's data.
    return_count : bool, default=False
        Also return the number of rows of all ranks.

    Returns
    -------
    mean, std : ndarray of shape (n_features,)
        Identical on every rank.
    n_rows : int
        Only with ``return_count``.

    Examples
    --------
    >>> import numpy as np
    >>> pooled_standardization(np.array([[0.0], [2.0]]))
    (array([1.]), array([1.]))
    """
    from ._validation import standardization

    return standardization(X, allreduce=allreduce_numpy if is_distributed() else None,
                           return_count=return_count)


def wrap_field(field: nn.Module, device: torch.device) -> nn.Module:
    """Wrap ``field`` in DistributedDataParallel (rank 0's weights are broadcast).

    Parameters
    ----------
    field : nn.Module
        On ``device``.
    device : torch.device
        This rank's device (see :func:`rank_device`).

    Returns
    -------
    model : nn.Module
        Call it like the field; its gradients are averaged over the ranks in
        ``backward``. ``field`` itself without a process group.

    Examples
    --------
    Without a process group the field is returned unwrapped:

    >>> import torch
    >>> from hrflow.fields import HierarchicalMLP
    >>> field = HierarchicalMLP(depth=2, n_features=2, hidden_size=8, embedding_dim=4)
    >>> wrap_field(field, torch.device("cpu")) is field
    True
    """
    if not is_distributed():
        return field
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(field, device_ids=ids, output_device=None)


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Average a tensor over the ranks (the tensor itself without a process group).

    Examples
    --------
    >>> import torch
    >>> mean_across_ranks(torch.tensor([1.0, 3.0]))
    tensor([1., 3.])
    """
    if not is_distributed():
        return values
    t = values.detach().to(_comm_device(), torch.float64).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world_size()).to(values.device)


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into ``module`` on every rank.

    Parameters
    ----------
    module : nn.Module
        Modified in place; nothing happens without a process group.
    src : int, default=0

    Examples
    --------
    Without a process group the module keeps its own weights:

    >>> import torch
    >>> layer = torch.nn.Linear(2, 1)
    >>> before = layer.weight.detach().clone()
    >>> broadcast_module(layer)
    >>> torch.equal(layer.weight, before)
    True
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            buf = tensor.detach().to(_comm_device()).clone()
            dist.broadcast(buf, src=src)
            tensor.copy_(buf.to(tensor.device))
