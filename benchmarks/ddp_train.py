"""Data-parallel HRF training with torch.distributed (DistributedDataParallel).

Run on one machine with two processes (gloo on the CPU, nccl on GPUs)::

    torchrun --nproc_per_node=2 benchmarks/ddp_train.py --out ddp_out

Every rank loads the same data set, calls ``HRFEstimator.fit`` inside the process
group (data-parallel: own batches per rank, averaged gradients; ``--batch-size`` is
per rank) and writes its field weights to ``OUT/rank{R}.pt``; rank 0 also writes
the model in hrflow's safe format (``OUT/model.hrf``, load it with
``HRFEstimator.load``) and ``OUT/summary.json`` (world size, batches, losses,
time). Without torchrun the script trains in a single process, for comparison::

    python benchmarks/ddp_train.py --batch-size 512 --out single_out

See docs/distributed.rst for multi-GPU and multi-node launches.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from hrflow import HRFEstimator
from hrflow.datasets import load_dataset
from hrflow.metrics import sliced_wasserstein


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("ddp_out"), help="output folder")
    p.add_argument("--dataset", default="six_gaussians")
    p.add_argument("--n-samples", type=int, default=20_000, help="training rows (same on every rank)")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--n-iter", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256, help="per rank")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda'")
    p.add_argument("--backend", default="auto", help="'auto' (nccl with CUDA, else gloo), 'gloo', 'nccl'")
    p.add_argument("--checkpoint-dir", type=Path, default=None)
    p.add_argument("--checkpoint-every", type=int, default=None)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # set by torchrun
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    if launched:
        backend = args.backend if args.backend != "auto" else ("nccl" if use_cuda else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if launched else 0
    world = dist.get_world_size() if launched else 1

    X = load_dataset(args.dataset, n_samples=args.n_samples, random_state=args.seed)
    est = HRFEstimator(
        depth=args.depth,
        hidden_size=args.hidden_size,
        n_layers=args.n_layers,
        embedding_dim=16,
        n_iter=args.n_iter,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        device=args.device,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        random_state=args.seed,
    ).fit(X)

    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in est.field_.state_dict().items()}
    torch.save(state, args.out / f"rank{rank}.pt")
    if rank == 0:
        est.save(args.out / "model.hrf")
        held_out = load_dataset(args.dataset, n_samples=5000, random_state=args.seed + 1)
        samples = est.sample(5000, random_state=args.seed + 2)
        summary = {
            "world_size": world,
            "batch_size_per_rank": args.batch_size,
            "total_batch": args.batch_size * world,
            "n_iter": args.n_iter,
            "device": str(est.device_),
            "backend": dist.get_backend() if launched else None,
            "final_loss": float(np.mean(est.loss_curve_[-100:])),
            "loss_curve": est.loss_curve_,
            "sliced_w2_to_held_out": sliced_wasserstein(samples, held_out, random_state=0),
            "fit_time_s": est.fit_time_,
        }
        (args.out / "summary.json").write_text(json.dumps(summary))
        print(json.dumps({k: v for k, v in summary.items() if k != "loss_curve"}, indent=1))
    if launched:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
