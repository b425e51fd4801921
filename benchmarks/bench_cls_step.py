"""Classification training step: `ablate`'s engine vs timm's training step vs torchvision's
classification reference loop, side by side.

All three train the same network (ResNet-50-D: ours and timm's ``resnet50d`` both have
25,576,264 parameters; or the tiny proxy ResNet-D, ours on every side) on the same in-memory
batches, with the same batch, precision and memory format, timed alternately in one process,
the order rotated every round (A B C, B C A, C A B, …) so that no side always runs first after
another. Reported: the median img/s of each side, and the median over rounds of the round's
ratio (the sides of one round share the machine's state, so paired ratios are steadier than a
ratio of medians on a shared machine) with its min–max over rounds.

- `ablate`: the real ``Trainer.train_epoch`` (per-iteration LR from the schedule, one-hot
  soft-target loss, the precision object, loss accumulation) over an ``InMemoryLoader``.
- timm: the step of timm's ``train.py`` (``train_one_epoch``): ``timm.create_model('resnet50d')``,
  ``create_optimizer_v2('sgd')`` (Nesterov, no weight decay on biases and norms), autocast
  forward, ``nn.CrossEntropyLoss``, backward and step (``NativeScaler`` with fp16),
  ``loss.item()`` for the running mean, ``zero_grad``.
- torchvision: ``train_one_epoch`` of ``references/classification/train.py``: autocast forward,
  ``CrossEntropyLoss``, ``zero_grad``, backward, step (``GradScaler`` with fp16), then top-1/5
  accuracy of the batch and ``loss.item()`` / ``acc.item()`` into the metric logger.

Usage: python benchmarks/bench_cls_step.py [--model resnet50_d|resnet_tiny_d] [--batch 32]
       [--iters 4] [--rounds 3] [--size 224]
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
from _common import machine, paired_ratio, table  # noqa: E402

from ablate.config import compose  # noqa: E402
from ablate.data.pipelines.tensors import InMemoryLoader  # noqa: E402
from ablate.engine.dist import DistInfo  # noqa: E402
from ablate.engine.setup import build  # noqa: E402
from ablate.engine.trainer import Trainer  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def data(batch: int, iters: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch * iters, 3, size, size), dtype=torch.uint8,
                           generator=g)
    return images, torch.randint(0, 1000, (batch * iters,), generator=g)


def our_model(model: str) -> nn.Module:
    from ablate.config import compose as _compose
    from ablate.registry import MODELS

    cfg = _compose([f"model={model}"])
    kw = {k: v for k, v in cfg.model.items() if k not in ("name", "task", "weights")}
    kw.update(num_classes=1000, in_chans=3)
    return MODELS.build(cfg.model.name, **kw)


def ablate_runner(images, labels, model: str, batch: int, prec: str, cl: bool,
                  fmnist_root: str | None, extra: tuple[str, ...] = ()):
    tricks = ["tricks=[amp]", f"tricks.amp.dtype={prec}"] if prec != "fp32" else []
    root = [f"data.root={fmnist_root}"] if fmnist_root else []
    cfg = compose([f"model={model}", "model.num_classes=1000", "model.in_chans=3",
                   f"train.batch_size={batch}", "train.epochs=1000", "data.train_subset=1024",
                   "data.test_subset=16", f"train.channels_last={str(cl).lower()}",
                   "train.log_every=1000000", *root, *tricks, *extra])
    torch.manual_seed(0)
    b = build(cfg, DistInfo())
    # the same batches as the other sides, without augmentation (theirs get none either)
    b.train_loader = InMemoryLoader(images, labels, batch, train=True, mean=MEAN, std=STD,
                                    channels_last=cl)
    b.task.num_classes = 1000
    b.ctx.iters_per_epoch = len(b.train_loader)
    trainer = Trainer(b, DistInfo(), Path("/nonexistent"), seed=0)
    trainer.state.iters_per_epoch = len(b.train_loader)
    return lambda: trainer.train_epoch()["epoch_time_s"]


def _batches(images, labels, batch: int, fmt):
    """Normalised on the device, as both timm's PrefetchLoader and ours do."""
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255
    xs = [((images[i:i + batch].float() - mean) / std).contiguous(memory_format=fmt)
          for i in range(0, len(images), batch)]
    return xs, [labels[i:i + batch] for i in range(0, len(labels), batch)]


def timm_runner(images, labels, model_name: str, batch: int, prec: str, cl: bool):
    import timm
    from timm.optim import create_optimizer_v2
    from timm.utils import NativeScaler

    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = (timm.create_model("resnet50d", num_classes=1000) if model_name == "resnet50_d"
             else our_model(model_name)).to(memory_format=fmt)
    optimizer = create_optimizer_v2(model, "sgd", lr=0.1, weight_decay=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = NativeScaler(device="cpu") if prec == "fp16" else None
    xs, ys = _batches(images, labels, batch, fmt)

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


def torchvision_runner(images, labels, model_name: str, batch: int, prec: str, cl: bool):
    torch.manual_seed(0)
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = our_model(model_name).to(memory_format=fmt)  # torchvision has no ResNet-D
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4,
                                nesterov=True)
    criterion = nn.CrossEntropyLoss()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = torch.amp.GradScaler("cpu") if prec == "fp16" else None
    xs, ys = _batches(images, labels, batch, fmt)

    def accuracy(output, target, topk=(1, 5)):  # references/classification/utils.py
        with torch.inference_mode():
            maxk = max(topk)
            _, pred = output.topk(maxk, 1, True, True)
            correct = pred.t().eq(target[None])
            return [correct[:k].flatten().sum(dtype=torch.float32) * (100.0 / len(target))
                    for k in topk]

    def epoch() -> float:
        model.train()
        meters: dict[str, list[float]] = {"loss": [], "acc1": [], "acc5": [], "lr": []}
        t0 = time.perf_counter()
        for image, target in zip(xs, ys):
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                output = model(image)
                loss = criterion(output, target)
            optimizer.zero_grad()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            acc1, acc5 = accuracy(output, target)
            meters["loss"].append(loss.item())
            meters["lr"].append(optimizer.param_groups[0]["lr"])
            meters["acc1"].append(acc1.item())
            meters["acc5"].append(acc5.item())
        return time.perf_counter() - t0

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50_d", choices=["resnet50_d", "resnet_tiny_d"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--fmnist-root", default=None, help="Fashion-MNIST folder (setup only)")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    torch.set_flush_denormal(True)  # as ablate's worker does on CPU (process-wide: all sides)
    images, labels = data(args.batch, args.iters, args.size)
    rows = []
    for prec in args.precisions.split(","):
        sides = [ablate_runner(images, labels, args.model, args.batch, prec, True,
                               args.fmnist_root),
                 timm_runner(images, labels, args.model, args.batch, prec, True),
                 torchvision_runner(images, labels, args.model, args.batch, prec, True)]
        for side in sides:
            side()  # warm-up (oneDNN primitive creation)
        times: list[list[float]] = [[], [], []]
        for r in range(args.rounds):
            for k in range(3):
                i = (r + k) % 3
                times[i].append(sides[i]())
        n = args.batch * args.iters
        ia, it, iv = (n / statistics.median(t) for t in times)
        rows.append([f"{prec} + channels_last", ia, it, iv,
                     paired_ratio(times[1], times[0]), paired_ratio(times[2], times[0])])
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"Machine: {machine()}\n")
    print(f"{args.model}, {args.size}×{args.size}, batch {args.batch}, {args.iters} iterations "
          f"× {args.rounds} rounds (rotated order), medians\n")
    print(table(["precision / format", "ablate img/s", "timm img/s", "torchvision ref img/s",
                 "ablate / timm (min–max)", "ablate / torchvision (min–max)"], rows))


if __name__ == "__main__":
    main()
