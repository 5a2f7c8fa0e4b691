"""Small data-parallel fits for tests/test_distributed.py, run under torchrun (gloo, CPU).

Every rank fits on its own shard (different sizes, means and spreads) and writes
``OUT/probe{RANK}.json`` with what the test compares across the ranks:

- ``image_mean``, ``image_scale``: ``mean_`` and ``scale_`` of an image model
  (4-D X, two channels of 2x2 pixels, :func:`shard`), which must be pooled over
  the ranks;
- ``reflow_rows``: the data rows of the first training batch of a reflow of
  that model, drawn from pairs that are the same on every rank, by each rank
  with its own seed.

Usage: ``torchrun --nproc_per_node=2 tests/ddp_probe.py OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

IMAGE_SHAPE = (2, 2, 2)
TINY = dict(depth=2, hidden_size=8, n_layers=1, embedding_dim=4, batch_size=8, n_iter=2,
            device="cpu", random_state=0)


def shard(rank: int) -> np.ndarray:
    """The images of ``rank``: ``(16 + 8 rank, 2, 2, 2)``, mean and spread depending on it."""
    rng = np.random.default_rng(rank)
    return rng.normal(3.0 * rank, 1.0 + rank, size=(16 + 8 * rank, *IMAGE_SHAPE))


def main(out: Path) -> None:
    import torch
    import torch.distributed as dist

    import hrflow.training
    from hrflow import HRFEstimator

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    est = HRFEstimator(**TINY).fit(shard(rank))
    result = {"image_mean": est.mean_.tolist(), "image_scale": est.scale_.tolist()}
    rows = []
    real_batch = hrflow.training.training_batch

    def spy(*args, **kwargs):
        batch = real_batch(*args, **kwargs)
        rows.append(batch[0].tolist())
        return batch

    hrflow.training.training_batch = spy
    est.reflow(n_pairs=32, steps=(2, 2), n_iter=1, random_state=0)
    result["reflow_rows"] = rows[0]
    from hrflow.distributed import allreduce_numpy

    result["allreduce"] = {op: allreduce_numpy(np.array([rank + 1.0, -rank]), op).tolist()
                           for op in ("sum", "max")}
    (out / f"probe{rank}.json").write_text(json.dumps(result))
    dist.barrier()  # every rank done before the group goes (torch 2.1's gloo hangs otherwise)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
