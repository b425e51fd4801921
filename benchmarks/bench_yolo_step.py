"""YOLOv3 training step: `ablate`'s engine vs the plainest correct PyTorch loop, side by side;
then the real input pipeline under the engine, with the time the step loop waited on data.

Both sides train a copy of the same network (the model of the study's proxy by default: tiny
YOLOv3, width 0.125, at 128 px, BN in ghost groups of 8, same weights at the start) on the same
batches — FashionScenes through the YOLO pipeline with the data augmentation freebie, decoded
once and held in memory so that only the step is timed — alternately (A B A B …) in one process;
the median img/s of each and the ratio are reported.

- `ablate`: the real ``Trainer.train_epoch`` (per-iteration LR from the warmup schedule, the yolo
  task's targets, the precision object, loss accumulation) over the cached batches.
- plain: ``outputs = model(images)`` under autocast, the same YOLOv3 loss (``yolo_loss``: there
  is no other implementation of it to call), ``sum``, ``zero_grad``, ``backward``, ``step``.

With ``--pipeline-epochs N`` the engine then trains N epochs through the real loader
(``data.num_workers`` workers) and prints img/s and ``data_wait_s`` (seconds ``next(loader)``
blocked the step loop) per epoch.

Usage: python benchmarks/bench_yolo_step.py [--model yolov3_tiny] [--width 0.125] [--size 128]
       [--batch 32] [--iters 6] [--rounds 3] [--precision bf16] [--threads 2]
       [--pipeline-epochs 0] [--workers 2] [--data-dir data_cache]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import CachedLoader, machine, table  # noqa: E402

from ablate.config import compose  # noqa: E402
from ablate.engine.dist import DistInfo  # noqa: E402
from ablate.engine.precision import Precision  # noqa: E402
from ablate.engine.setup import build  # noqa: E402
from ablate.engine.trainer import Trainer  # noqa: E402
from ablate.tasks.yolo import yolo_loss  # noqa: E402
from ablate.worker import close_loaders  # noqa: E402


def config(args, num_train: int):
    return compose([
        f"model={args.model}", f"model.width={args.width}",
        f"model.anchor_scale={args.size / 416:.4f}", "data=fashion_scenes",
        f"paths.data={args.data_dir}", f"data.num_train={num_train}", "data.num_test=8",
        f"data.num_workers={args.workers}", f"data.train_size={args.size}",
        f"data.eval_size={args.size}", f"train.batch_size={args.batch}",
        f"train.bn_group_size={args.bn_group}", f"train.precision={args.precision}",
        "optim.lr=0.01", "optim.nesterov=false", "optim.weight_decay=5e-4",
        "train.epochs=1000", "tricks=[data_augmentation,warmup]", "tricks.warmup.epochs=2",
        "train.log_every=1000000"])


def plain_runner(model, batches, task, precision: Precision):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    anchors, strides = task._geometry(model)
    prepared = [task.prepare(x) for x in batches]  # one-hot class targets, as the task makes

    def epoch() -> float:
        model.train()
        t0 = time.perf_counter()
        for x in prepared:
            with precision.autocast():
                losses = yolo_loss(model(x["image"]), x, anchors, strides, 0.7)
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="yolov3_tiny")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--bn-group", type=int, default=8)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pipeline-epochs", type=int, default=0)
    ap.add_argument("--pipeline-scenes", type=int, default=2000)
    ap.add_argument("--data-dir", default="data_cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as ablate's worker does on CPU (process-wide: both sides)
    torch.manual_seed(0)
    b = build(config(args, args.batch * args.iters), DistInfo())
    batches = list(b.train_loader)
    close_loaders(b.train_loader, b.eval_loader)
    b.train_loader = CachedLoader(batches)
    trainer = Trainer(b, DistInfo(), Path("/nonexistent"), seed=0)
    sides = [lambda: trainer.train_epoch()["epoch_time_s"],
             plain_runner(b.model, batches, b.task, b.precision)]
    for side in sides:
        side()  # warm-up (oneDNN primitives)
    times: list[list[float]] = [[] for _ in sides]
    for _ in range(args.rounds):
        for t, side in zip(times, sides):
            t.append(side())
    n = args.batch * len(batches)
    ips = [n / statistics.median(t) for t in times]
    print(f"Machine: {machine()}; {args.threads} threads\n")
    print(f"{args.model} (width {args.width}) at {args.size} px, batch {args.batch}, BN groups "
          f"of {args.bn_group}, {args.precision} + channels_last, {len(batches)} iterations × "
          f"{args.rounds} rounds, median\n")
    print(table(["side", "img/s", "ablate / side"],
                [[name, v, f"{ips[0] / v:.2f}×"] for name, v in zip(["ablate", "plain loop"],
                                                                     ips)]))
    if args.pipeline_epochs:
        torch.manual_seed(0)
        b = build(config(args, args.pipeline_scenes), DistInfo())
        trainer = Trainer(b, DistInfo(), Path("/nonexistent"), seed=0)
        rows = []
        for e in range(args.pipeline_epochs):
            trainer.state.epoch = e
            r = trainer.train_epoch()
            rows.append([e + 1, r["images_per_s"], f"{r['epoch_time_s']:.1f}",
                         f"{r['data_wait_s']:.2f}", f"{100 * r['data_wait_share']:.1f} %"])
        close_loaders(b.train_loader, b.eval_loader)
        print(f"\nThe engine through the real loader ({args.pipeline_scenes} scenes, "
              f"{args.workers} workers, augmentation freebie):\n")
        print(table(["epoch", "img/s", "epoch s", "data wait s", "data wait share"], rows))


if __name__ == "__main__":
    main()
