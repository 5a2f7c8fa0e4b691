"""Data-parallel training on torch.distributed (hrflow.distributed, benchmarks/ddp_train.py).

The end-to-end test launches ``benchmarks/ddp_train.py`` under torchrun with 2 CPU
processes (gloo on 127.0.0.1, a free port) and checks that

- both ranks end with bit-identical weights;
- the model matches a single-process fit with the same total batch (2 x per-rank
  batch), the same data, iterations and learning rate: the mean loss of the last
  100 iterations within 5 % (between single-process seeds that figure spreads
  by about 2 %; with half the batch it is about 5 % higher), and the sliced W2
  distance of its samples to held-out data within 0.1 of the single-process one
  (both about 0.33 after these 400 iterations);
- rank 0 writes a loadable model.

``tests/ddp_probe.py``, also on 2 gloo processes, fits tiny models on shards that
differ per rank; its results show that the standardisation of images is pooled
over the ranks and that a reflow draws other batches on every rank.

Without a process group the helpers are identities (checked here and in their
doctests).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hrflow import HRFEstimator, distributed
from hrflow.datasets import load_dataset
from hrflow.images import channel_standardization
from hrflow.metrics import sliced_wasserstein

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "ddp_train.py"
PROBE = ROOT / "tests" / "ddp_probe.py"  # small fits whose results are compared across ranks

# small enough for two CPU cores: 2 ranks x 64 rows per step, 400 steps
ARGS = dict(dataset="six_gaussians", n_samples=4000, depth=2, n_iter=400, hidden_size=32,
            n_layers=2, learning_rate=3e-3, seed=0)
PER_RANK_BATCH = 64


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args: dict) -> list[str]:
    out = []
    for k, v in args.items():
        out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def _torchrun(script, *args):
    """Run ``script args`` on 2 local ranks (torch.distributed.run); assert it succeeds."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _torchrun(SCRIPT, "--out", str(out), "--device", "cpu", "--backend", "gloo",
              "--batch-size", str(PER_RANK_BATCH), *_cli(ARGS))
    return out


@pytest.fixture(scope="module")
def ddp_probe(tmp_path_factory):
    """The ``probe{rank}.json`` results of tests/ddp_probe.py on 2 ranks (gloo), rank 0 first."""
    out = tmp_path_factory.mktemp("ddp_probe")
    _torchrun(PROBE, str(out))
    return [json.loads((out / f"probe{rank}.json").read_text()) for rank in (0, 1)]


def test_ranks_end_with_identical_weights(ddp_run):
    w0 = torch.load(ddp_run / "rank0.pt", weights_only=True)
    w1 = torch.load(ddp_run / "rank1.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key


def test_ddp_matches_single_process_with_the_same_total_batch(ddp_run):
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["total_batch"] == 2 * PER_RANK_BATCH
    assert summary["backend"] == "gloo"
    assert len(summary["loss_curve"]) == ARGS["n_iter"]

    torch.set_num_threads(1)
    X = load_dataset(ARGS["dataset"], n_samples=ARGS["n_samples"], random_state=ARGS["seed"])
    single = HRFEstimator(
        depth=ARGS["depth"], hidden_size=ARGS["hidden_size"], n_layers=ARGS["n_layers"],
        embedding_dim=16, n_iter=ARGS["n_iter"], batch_size=2 * PER_RANK_BATCH,
        learning_rate=ARGS["learning_rate"], device="cpu", random_state=ARGS["seed"],
    ).fit(X)
    single_loss = float(np.mean(single.loss_curve_[-100:]))
    assert summary["final_loss"] == pytest.approx(single_loss, rel=0.05)

    held_out = load_dataset(ARGS["dataset"], n_samples=5000, random_state=ARGS["seed"] + 1)
    sw_single = sliced_wasserstein(single.sample(5000, random_state=ARGS["seed"] + 2), held_out,
                                   random_state=0)
    assert abs(summary["sliced_w2_to_held_out"] - sw_single) < 0.1
    # and both learned the distribution (the data's spread is about 2 in each direction)
    assert summary["sliced_w2_to_held_out"] < 0.5


def test_rank0_model_loads_and_matches_its_weights(ddp_run):
    est = HRFEstimator.load(ddp_run / "model.hrf")
    w0 = torch.load(ddp_run / "rank0.pt", weights_only=True)
    for key, value in est.field_.state_dict().items():
        assert torch.equal(value, w0[key]), key
    assert np.isfinite(est.sample(10, random_state=0)).all()


def test_image_standardization_is_pooled_over_the_ranks(ddp_probe):
    # per channel, over the images of both ranks (shards of different sizes and means)
    from ddp_probe import IMAGE_SHAPE, shard

    images = np.concatenate([shard(0), shard(1)])
    mean, scale = channel_standardization(images.reshape(len(images), -1), IMAGE_SHAPE)
    for result in ddp_probe:
        np.testing.assert_allclose(result["image_mean"], mean, rtol=1e-12)
        np.testing.assert_allclose(result["image_scale"], scale, rtol=1e-12)


def test_reflow_draws_other_batches_on_every_rank(ddp_probe):
    # the pairs are the same on both ranks (same model and seed); the batches are not
    rows0, rows1 = (np.array(result["reflow_rows"]) for result in ddp_probe)
    assert rows0.shape == rows1.shape == (8, 8)
    assert not np.array_equal(rows0, rows1)


def test_helpers_are_identities_without_a_process_group():
    assert not distributed.is_distributed()
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.is_main_process()
    field = torch.nn.Linear(2, 2)
    assert distributed.wrap_field(field, torch.device("cpu")) is field
    X = np.random.default_rng(0).normal(size=(30, 3))
    mean, std = distributed.pooled_standardization(X)
    np.testing.assert_array_equal(mean, X.mean(axis=0))
    np.testing.assert_array_equal(std, X.std(axis=0))


def test_distributed_true_needs_a_process_group():
    X = np.random.default_rng(0).normal(size=(20, 2))
    est = HRFEstimator(n_iter=1, batch_size=4, hidden_size=4, n_layers=1, embedding_dim=4,
                       distributed=True)
    with pytest.raises(ValueError, match="distributed=True"):
        est.fit(X)
    assert not hasattr(est, "field_")


def test_allreduce_sums_and_takes_maxima_over_the_ranks(ddp_probe):
    for result in ddp_probe:  # rank r contributes [r + 1, -r]
        assert result["allreduce"] == {"sum": [3.0, -1.0], "max": [2.0, 0.0]}

