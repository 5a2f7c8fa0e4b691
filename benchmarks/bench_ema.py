"""Cost of one EMA update of the weights (``hrflow.ema.ema_update``).

Times, in one process and on the same modules, the shipped update (torch's
``get_ema_multi_avg_fn``: one fused ``lerp`` over every parameter tensor)
against the baseline it replaced (a ``lerp_`` per tensor, one kernel each),
and, for scale, one training step of the same field (forward, backward, AdamW)
on a batch of ``--batch`` images. Rounds alternate the variants so that a change
of machine load hits them alike; the median over rounds is printed, with the
ratio baseline / shipped.

Run:  python benchmarks/bench_ema.py [--threads 1] [--device cpu] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch

from hrflow.ema import ema_update
from hrflow.fields import HierarchicalUNet, n_parameters


@torch.no_grad()
def per_tensor_lerp(ema, model, decay):
    """The baseline: one ``lerp_`` per parameter tensor."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def _timed(fn, device, n):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / n


def _row(name, kw, args, device):
    """One table row: the two updates and a training step of one field."""
    torch.manual_seed(0)
    model = HierarchicalUNet(2, **kw).to(device)
    ema = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    zs = torch.randn(2, args.batch, *kw["event_shape"], device=device)
    ts = torch.rand(2, args.batch, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        model(zs, ts).square().mean().backward()
        opt.step()

    variants = {"lerp": lambda: per_tensor_lerp(ema, model, 0.999),
                "ema": lambda: ema_update(ema, model, 0.999)}
    times = {k: [] for k in variants}
    for fn in variants.values():
        _timed(fn, device, 5)  # warm-up
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for k in order:
            times[k].append(_timed(variants[k], device, args.updates))
    step()  # warm-up
    step_time = statistics.median(_timed(step, device, 3) for _ in range(3))
    lerp, fused = statistics.median(times["lerp"]), statistics.median(times["ema"])
    return (f"| {name} | {len(list(model.parameters()))} | {n_parameters(model):,} | "
            f"{lerp * 1e3:.3f} | {fused * 1e3:.3f} | {lerp / fused:.2f} | {step_time * 1e3:.1f} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--updates", type=int, default=100, help="EMA updates per timed round")
    parser.add_argument("--batch", type=int, default=64, help="images per training step")
    parser.add_argument("--quick", action="store_true", help="digits UNet only, 2 rounds of 5")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.updates, args.batch = 2, 5, 8
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"# {platform.machine()} {platform.processor() or ''} torch {torch.__version__}, "
          f"{args.threads} thread(s), device {device}")
    configs = {
        "digits UNet, depth 2 (1x8x8, the defaults)": dict(event_shape=(1, 8, 8)),
        "CIFAR-size UNet, depth 2 (3x32x32, 64 ch, mult 1,2,2, 2 res blocks)": dict(
            event_shape=(3, 32, 32), base_channels=64, channel_mult=(1, 2, 2), n_res_blocks=2),
    }
    if args.quick:
        configs = dict(list(configs.items())[:1])
    print("| field | tensors | parameters | per-tensor lerp (ms) | ema_update (ms) | ratio | "
          "one training step (ms) |")
    print("|---|---|---|---|---|---|---|")
    for name, kw in configs.items():
        print(_row(name, kw, args, device))

if __name__ == "__main__":
    main()
