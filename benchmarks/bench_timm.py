"""ResNet-50-D training throughput: `ablate`'s engine vs timm's training step, side by side.

Both sides train a ResNet-50-D (ours: 25,576,264 parameters; timm's ``resnet50d``: the same
count) on the same in-memory 224×224 batches, with the same batch, precision and memory
format, timed alternately (A B A B …) in one process; the median img/s of each and their ratio
are reported.

- `ablate`: the real ``Trainer.train_epoch`` (per-iteration LR from the schedule, one-hot
  soft-target loss, the precision object, loss accumulation) over an ``InMemoryLoader``.
- timm: the step of timm's ``train.py`` (``train_one_epoch``): ``timm.create_model('resnet50d')``,
  ``create_optimizer_v2('sgd')`` (Nesterov, no weight decay on biases and norms), autocast
  forward, ``nn.CrossEntropyLoss``, backward and step (``NativeScaler`` with fp16),
  ``loss.item()`` for the running mean, ``zero_grad``.

Usage: python benchmarks/bench_timm.py [--batch 32] [--iters 4] [--rounds 3] [--size 224]
Needs timm (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from ablate.config import compose  # noqa: E402
from ablate.data.tensor_loader import InMemoryLoader  # noqa: E402
from ablate.engine.dist import DistInfo  # noqa: E402
from ablate.engine.setup import build  # noqa: E402
from ablate.engine.trainer import Trainer  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def data(batch: int, iters: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * iters, 3, size, size), dtype=torch.uint8,
                           generator=g)
    return images, torch.randint(0, 1000, (batch * iters,), generator=g)


def ablate_runner(images, labels, batch: int, prec: str, cl: bool, fmnist_root: str | None):
    tricks = ["tricks=[amp]", f"tricks.amp.dtype={prec}"] if prec != "fp32" else []
    root = [f"data.root={fmnist_root}"] if fmnist_root else []
    cfg = compose(["model=resnet50_d", "model.num_classes=1000", "model.in_chans=3",
                   f"train.batch_size={batch}", "train.epochs=1000", "data.train_subset=1024",
                   "data.test_subset=16", f"train.channels_last={str(cl).lower()}",
                   "train.log_every=1000000", *root, *tricks])
    torch.manual_seed(0)
    b = build(cfg, DistInfo())
    # the same batches as timm's side, without augmentation (timm's gets none either)
    b.train_loader = InMemoryLoader(images, labels, batch, train=True, mean=MEAN, std=STD,
                                    channels_last=cl)
    b.task.num_classes = 1000
    b.ctx.iters_per_epoch = len(b.train_loader)
    trainer = Trainer(b, DistInfo(), Path("/nonexistent"), seed=0)
    trainer.state.iters_per_epoch = len(b.train_loader)
    return lambda: trainer.train_epoch()["epoch_time_s"]


def timm_runner(images, labels, batch: int, prec: str, cl: bool):
    import timm
    from timm.optim import create_optimizer_v2
    from timm.utils import NativeScaler

    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = timm.create_model("resnet50d", num_classes=1000).to(memory_format=fmt)
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = NativeScaler(device="cpu") if prec == "fp16" else None
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    # timm's loader (PrefetchLoader) normalises on the device, as ours does
    xs = [((images[i:i + batch].float() - mean) / std).contiguous(memory_format=fmt)
          for i in range(0, len(images), batch)]
    ys = [labels[i:i + batch] for i in range(0, len(labels), batch)]

    def epoch() -> float:
        model.train()
        losses = []
        t0 = time.perf_counter()
        for x, y in zip(xs, ys):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                output = model(x)
                loss = loss_fn(output, y)
            if scaler is not None:
                scaler(loss, optimizer, parameters=model.parameters())
            else:
                loss.backward()
                optimizer.step()
            losses.append(loss.item())
            optimizer.zero_grad()
        return time.perf_counter() - t0

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--fmnist-root", default=None, help="Fashion-MNIST folder (setup only)")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    torch.set_flush_denormal(True)  # as ablate's worker does on CPU (process-wide: both sides)
    images, labels = data(args.batch, args.iters, args.size)
    rows = []
    for prec in args.precisions.split(","):
        a = ablate_runner(images, labels, args.batch, prec, True, args.fmnist_root)
        t = timm_runner(images, labels, args.batch, prec, True)
        a(), t()  # warm-up (oneDNN primitive creation)
        ta, tt = [], []
        for _ in range(args.rounds):
            ta.append(a())
            tt.append(t())
        n = args.batch * args.iters
        ia, it = n / statistics.median(ta), n / statistics.median(tt)
        rows.append([f"{prec} + channels_last", ia, it, f"{ia / it:.2f}×"])
        print(rows[-1], flush=True)
    print(f"Machine: {machine()}\n")
    print(f"ResNet-50-D, {args.size}×{args.size}, batch {args.batch}, {args.iters} iterations × "
          f"{args.rounds} rounds, median\n")
    print(table(["precision / format", "ablate img/s", "timm img/s", "ratio"], rows))


if __name__ == "__main__":
    main()
