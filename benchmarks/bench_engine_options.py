"""The engine's speed options against its defaults: ``optim.impl`` (fused / foreach / loop SGD
update) and ``train.compile`` (torch.compile of the model), on the classification step.

Every side is `ablate`'s real ``Trainer.train_epoch`` over the same in-memory batches (the set-up
of bench_cls_step.py), differing only in the overrides named; the sides are timed alternately
(A B C A B C …) in one process and the median img/s and the ratio to the first side are
reported. The first epoch of each side (oneDNN primitive creation; for ``compile`` the
compilation) is timed separately. A second table times the optimizer step alone over the
model's parameters (random gradients), per ``optim.impl``.

Usage: python benchmarks/bench_engine_options.py [--model resnet_tiny_d] [--batch 256]
       [--size 28] [--iters 10] [--rounds 5] [--precision fp32]
       [--sides "optim.impl=fused" "optim.impl=loop" "train.compile=true"]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402
from bench_cls_step import ablate_runner, data, our_model  # noqa: E402


def optimizer_steps(model_name: str, steps: int = 20) -> list[list]:
    from ablate.solver import build_optimizer

    model = our_model(model_name)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    rows, base = [], None
    for impl in ("loop", "foreach", "fused"):
        opt = build_optimizer({"name": "sgd", "impl": impl, "weight_decay": 1e-4},
                              [{"params": params}], 0.1)
        for _ in range(3):
            opt.step()
        ts = []
        for _ in range(steps):
            t = time.perf_counter()
            opt.step()
            ts.append(time.perf_counter() - t)
        ms = statistics.median(ts) * 1e3
        base = base or ms
        rows.append([impl, f"{ms:.2f}", f"{base / ms:.2f}×"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet_tiny_d", choices=["resnet50_d", "resnet_tiny_d"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--sides", nargs="+",
                    default=["optim.impl=fused", "optim.impl=loop", "train.compile=true"])
    args = ap.parse_args()
    torch.set_flush_denormal(True)  # as ablate's worker does on CPU
    images, labels = data(args.batch, args.iters, args.size)
    sides, first = [], []
    for side in args.sides:
        run = ablate_runner(images, labels, args.model, args.batch, args.precision, True, None,
                            extra=tuple(side.split()))
        t = time.perf_counter()
        run()
        first.append(time.perf_counter() - t)
        sides.append(run)
    times: list[list[float]] = [[] for _ in sides]
    for _ in range(args.rounds):
        for t, run in zip(times, sides):
            t.append(run())
    n = args.batch * args.iters
    ips = [n / statistics.median(t) for t in times]
    rows = [[side, f"{first[i]:.1f}", f"{ips[i]:,.0f}", f"{ips[i] / ips[0]:.2f}×"]
            for i, side in enumerate(args.sides)]
    print(f"Machine: {machine()}\n")
    print(f"{args.model}, {args.size}×{args.size}, batch {args.batch}, {args.precision} + "
          f"channels_last, {args.iters} iterations × {args.rounds} rounds, median\n")
    print(table(["overrides", "first epoch s", "img/s", f"vs {args.sides[0]}"], rows))
    print(f"\nSGD step alone over {args.model}'s parameters (median of 20):\n")
    print(table(["optim.impl", "ms", "vs loop"], optimizer_steps(args.model)))


if __name__ == "__main__":
    main()
