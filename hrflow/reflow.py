"""Reflow (Liu et al. 2022; spec section 7): (source, sample) pairs of a trained model.

A trained flow defines a deterministic-given-its-draws coupling between its
location source ``x0^(0)`` and its samples ``x1``. Reflow retrains on these
fixed pairs, which straightens the location-level paths, so that fewer outer
steps suffice. :func:`sample_pairs` draws the pairs with exactly the
sampler's random stream (it runs :func:`hrflow.sampling.nested_euler` and
records the location source draw), so the same generator state gives the
same samples as sampling. :meth:`hrflow.HRFEstimator.reflow` retrains an
estimator on them.

For ``D >= 2`` the inner levels keep fresh ``N(0, I)`` draws during reflow;
only the location pairing is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .fields.base import HierarchicalField
from .sampling import nested_euler
from .sources import Source

__all__ = ["RecordingSource", "sample_pairs"]


class RecordingSource(Source):
    """A source that forwards to ``base`` and keeps every draw it returns.

    Parameters
    ----------
    base : Source

    Attributes
    ----------
    draws : list of torch.Tensor
        The tensors returned by :meth:`sample`, in call order.

    Examples
    --------
    >>> import torch
    >>> from hrflow.sources import StandardNormal
    >>> rec = RecordingSource(StandardNormal((2,)))
    >>> x = rec.sample(3, torch.Generator().manual_seed(0))
    >>> len(rec.draws), rec.draws[0] is x
    (1, True)
    """

    def __init__(self, base: Source):
        super().__init__(base.event_shape)
        self.base = base
        self.has_log_prob = base.has_log_prob
        self.draws: list[torch.Tensor] = []

    def sample(self, n, generator, *, device=None, dtype=torch.float32):
        x = self.base.sample(n, generator, device=device, dtype=dtype)
        self.draws.append(x)
        return x

    def log_prob(self, x):
        return self.base.log_prob(x)


def sample_pairs(
    field: HierarchicalField,
    n_samples: int,
    steps: Sequence[int],
    source: Source,
    generator: torch.Generator,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of :func:`hrflow.sampling.nested_euler` with their location source draws.

    Parameters
    ----------
    field, n_samples, steps, source, generator
        As in :func:`hrflow.sampling.nested_euler`.
    **kwargs
        Further keywords of :func:`~hrflow.sampling.nested_euler` (``device``,
        ``dtype``, ``inner_solver``, ``atol``, ``rtol``); ``return_path`` is not
        accepted.

    Returns
    -------
    x0 : torch.Tensor of shape (n_samples, *event_shape)
        The location source draw ``x0^(0)`` of every sample.
    x1 : torch.Tensor of shape (n_samples, *event_shape)
        The samples, identical to ``nested_euler`` with the same generator state.

    Examples
    --------
    >>> import torch
    >>> from hrflow.fields import HierarchicalMLP
    >>> from hrflow.sources import StandardNormal
    >>> f = HierarchicalMLP(2, 1, hidden_size=8, n_layers=1, embedding_dim=4)
    >>> x0, x1 = sample_pairs(f, 5, (2, 2), StandardNormal((1,)), torch.Generator().manual_seed(0))
    >>> x_ref = nested_euler(f, 5, (2, 2), StandardNormal((1,)), torch.Generator().manual_seed(0))
    >>> x0.shape, bool(torch.equal(x1, x_ref))
    (torch.Size([5, 1]), True)
    """
    if "return_path" in kwargs:
        raise TypeError("sample_pairs() does not accept 'return_path'")
    rec = RecordingSource(source)
    x1 = nested_euler(field, n_samples, steps, rec, generator, **kwargs)
    if len(rec.draws) != 1:  # nested_euler draws the location source once per call
        raise RuntimeError(f"expected one location source draw, got {len(rec.draws)}")
    return rec.draws[0], x1
