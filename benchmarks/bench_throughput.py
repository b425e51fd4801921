"""Training throughput of the classification step: `ablate`'s engine vs a plain PyTorch loop.

Same model, batch, data, precision and memory format; the two are timed alternately (A B, B A,
…) in one process; reported: the median img/s of each and the median of the per-round ratios
with their min–max. The plain loop is the textbook step (autocast forward, cross-entropy,
zero_grad, backward, step) on batches held in memory; `ablate` runs its real `Trainer.train_epoch` (per-iteration LR, soft-target loss,
batched crop/flip augmentation, GradScaler object, loss accumulation).

Usage: python benchmarks/bench_throughput.py [--model resnet_tiny_d] [--batch 256] [--iters 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, paired_ratio, table  # noqa: E402

from ablate.config import compose  # noqa: E402
from ablate.engine.dist import DistInfo  # noqa: E402
from ablate.engine.setup import build  # noqa: E402
from ablate.engine.trainer import Trainer  # noqa: E402


def ablate_runner(model: str, batch: int, iters: int, prec: str, cl: bool):
    tricks = ["tricks=[amp]", f"tricks.amp.dtype={prec}"] if prec != "fp32" else []
    cfg = compose([f"model={model}", f"train.batch_size={batch}", "train.epochs=1000",
                   f"data.train_subset={batch * iters}", f"train.channels_last={str(cl).lower()}",
                   "train.log_every=1000000", *tricks])
    torch.manual_seed(0)
    b = build(cfg, DistInfo())
    trainer = Trainer(b, DistInfo(), Path("/nonexistent"), seed=0)
    return lambda: trainer.train_epoch()["epoch_time_s"]


def plain_runner(model: str, batch: int, iters: int, prec: str, cl: bool):
    cfg = compose([f"model={model}"])
    from ablate.registry import MODELS

    kw = {k: v for k, v in cfg.model.items() if k not in ("name", "task", "weights")}
    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    net = MODELS.build(cfg.model.name, **kw).to(memory_format=fmt)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=1e-4)
    xs = [torch.randn(batch, kw["in_chans"], 28, 28).contiguous(memory_format=fmt)
          for _ in range(iters)]
    ys = [torch.randint(0, kw["num_classes"], (batch,)) for _ in range(iters)]
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)

    def epoch() -> float:
        net.train()
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        float(loss.detach())
        return time.perf_counter() - t0

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet_tiny_d")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_flush_denormal(True)  # as ablate's worker does on CPU (process-wide: both sides)
    rows = []
    for prec, cl in (("fp32", False), ("fp32", True), ("bf16", True)):
        a = ablate_runner(args.model, args.batch, args.iters, prec, cl)
        p = plain_runner(args.model, args.batch, args.iters, prec, cl)
        a(), p()  # warm-up (oneDNN primitive creation)
        ta, tp = [], []
        for r in range(args.rounds):  # A B, B A, A B, …: neither side always runs first
            if r % 2:
                tp.append(p())
                ta.append(a())
            else:
                ta.append(a())
                tp.append(p())
        ia = args.batch * args.iters / statistics.median(ta)
        ip = args.batch * args.iters / statistics.median(tp)
        rows.append([f"{prec}{' + channels_last' if cl else ''}", ia, ip, paired_ratio(tp, ta)])
    print(f"Machine: {machine()}\n")
    print(f"Model {args.model}, batch {args.batch}, {args.iters} iterations × {args.rounds} "
          "rounds (alternating order), medians\n")
    print(table(["precision / format", "ablate img/s", "plain loop img/s",
                 "median paired ratio (min–max)"], rows))


if __name__ == "__main__":
    main()
