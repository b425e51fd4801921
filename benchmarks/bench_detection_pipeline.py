"""Benchmark the YOLOv3 and Faster R-CNN training input pipelines (Bag of Freebies, Tables 3
and 4) on FashionScenes.

Builds (once) the default FashionScenes (2,000 train scenes, 96–192 px) under ``--cache-dir``
and times ``build_detection_loaders``' training loader, images/s after the first batch (which
includes worker start-up, reported separately), for three pipelines:

* ``resize``: the "- data augmentation" row (decode → resize → collate → normalise);
* ``augment``: ``yolo_augment`` (colour, expand, min-IoU crop, random interpolation, flip);
* ``augment+mixup+shapes``: mixup (Beta(1.5, 1.5)) before the augmentation and random shapes
  (320–608, every 10 iterations) on the batch;

* ``rcnn flip``: the Faster R-CNN pipeline (``build_rcnn_loaders``: shorter side ``--short``,
  longer ≤ ``--max-side``, flip p 0.5, zero-padded batches);
* ``rcnn flip+mixup``: with visually coherent mixup before the resize;

each with 0, 1 and 2 DataLoader workers and each ``--decode`` mode (``device``: the workers
read the files and draw, ``--device`` decodes, mixes and augments). Prints a Markdown table.

``--item-cost`` instead times what one worker does per training item (1 thread, the loader's
own dataset indexed in the main process, pipelines alternated, median of ``--rounds``): the
bare read + decode, then each pipeline. With ``--decode device`` also each pipeline's
``data.decode=device`` halves: the worker's (read the files, draw) and the training process's
on ``--device`` (``DetectionLoader.decode_on_device``: decode, mix, augment, pad; per item of a
batch of ``--batch-size``, synchronised, all threads). ``--min-size``/``--max-size`` set the
scenes' side range (375 500 stands in for Pascal VOC's photos).
Usage: ``python benchmarks/bench_detection_pipeline.py [--size 416] [--short 600]
[--max-side 1000] [--batch-size 16] [--batches 30] [--workers 0 1 2] [--cache-dir data_cache]
[--min-size 96 --max-size 192] [--item-cost [--items 200 --rounds 3] [--decode worker device]
[--device cuda]]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import item_costs  # noqa: E402

from ablate.data.pipelines.detection import build_detection_loaders  # noqa: E402
from ablate.data.pipelines.rcnn import build_rcnn_loaders  # noqa: E402
from ablate.engine.setup import data_plugins  # noqa: E402
from ablate.engine.types import DataContext  # noqa: E402
from ablate.tricks import build_tricks  # noqa: E402
from ablate.data.datasets.fashion_scenes import (fashion_scenes_dataset,  # noqa: E402
                                        fashion_scenes_root)

def plugins(task: str, tricks: dict):
    """The data plug-ins of ``tricks``; random shapes' sizes are the paper's (320-608)."""
    if "random_shapes" in tricks:
        tricks = {**tricks, "random_shapes": {"sizes": list(range(320, 609, 32)), "every": 10}}
    return data_plugins(build_tricks(tricks, task), DataContext(task, epochs=1))


PIPELINES = {  # name: (task, tricks)
    "resize": ("yolo", {}),
    "augment": ("yolo", {"data_augmentation": {}}),
    "augment+mixup+shapes": ("yolo", {"data_augmentation": {}, "mixup": {"off_last_epochs": 0},
                                      "random_shapes": {}}),
    "rcnn flip": ("rcnn", {"data_augmentation": {}}),
    "rcnn flip+mixup": ("rcnn", {"data_augmentation": {}, "mixup": {}}),
}


def time_loader(dataset, pipeline: tuple, workers: int, args, decode: str = "worker"
                ) -> tuple[float, float]:
    """Return (first batch seconds, images/s over the following ``args.batches`` batches)."""
    task, tricks = pipeline
    common = dict(batch_size=args.batch_size, num_workers=workers, seed=0, decode=decode,
                  device=args.device, plugins=plugins(task, tricks))
    if task == "rcnn":
        train, _ = build_rcnn_loaders(dataset, None, scale=(args.short, args.max_side),
                                      **common)
    else:
        train, _ = build_detection_loaders(dataset, None, train_size=args.size, **common)
    train.set_epoch(0)
    cuda = train.device.type == "cuda"
    it = iter(train)
    t0 = time.perf_counter()
    next(it)
    if cuda:
        torch.cuda.synchronize()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for _ in range(args.batches):
        batch = next(it)
        n += len(batch["image"])
    if cuda:
        torch.cuda.synchronize()
    return first, n / (time.perf_counter() - t0)


def build_train_loader(dataset, pipeline: tuple, args, decode: str = "worker",
                       device: str = "cpu"):
    """The training loader (no workers) for one pipeline, epoch 0."""
    task, tricks = pipeline
    tricks = {k: v for k, v in tricks.items() if k != "random_shapes"}  # batch-level
    common = dict(batch_size=args.batch_size, num_workers=0, seed=0, decode=decode,
                  device=device, plugins=plugins(task, tricks))
    if task == "rcnn":
        train, _ = build_rcnn_loaders(dataset, None, scale=(args.short, args.max_side),
                                      **common)
    else:
        train, _ = build_detection_loaders(dataset, None, train_size=args.size, **common)
    train.set_epoch(0)
    return train


def device_cost(loader, items: int, rounds: int) -> float:
    """Median seconds per item of ``decode_on_device`` over encoded batches collated first."""
    batches = []
    for batch in loader.loader:
        batches.append(batch)
        if len(batches) * loader.loader.batch_size >= items:
            break
    cuda = loader.device.type == "cuda"
    loader.decode_on_device(batches[0])  # warm-up (nvJPEG handles, kernels)
    times = []
    for _ in range(rounds):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for batch in batches:
            loader.decode_on_device(batch)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) / sum(len(b["items"]) for b in batches))
    return statistics.median(times)


def item_cost(dataset, args) -> None:
    """Milliseconds per training item in one thread: decode alone, then each pipeline (and its
    decode=device halves)."""
    chosen = [n for n in PIPELINES if n in args.only]
    sources = {"decode": dataset}
    sources.update({n: build_train_loader(dataset, PIPELINES[n], args).dataset for n in chosen})
    device = "device" in args.decode
    if device:
        sources.update({f"{n}, decode=device: worker": build_train_loader(
            dataset, PIPELINES[n], args, "device").dataset for n in chosen})
    costs = item_costs(sources, args.items, args.rounds)
    if device:
        costs.update({f"{n}, decode=device: {args.device}": device_cost(
            build_train_loader(dataset, PIPELINES[n], args, "device", args.device), args.items,
            args.rounds) for n in chosen})
    n = min(args.items, len(dataset))
    print(f"one worker, per training item (1 thread, {n} items, median of {args.rounds}; the "
          f"{args.device} side of decode=device with {torch.get_num_threads()} threads, batches "
          f"of {args.batch_size})\n")
    print("| pipeline | ms / item | items/s |")
    print("|---|---:|---:|")
    for name, cost in costs.items():
        print(f"| {name} | {cost * 1e3:.2f} | {1 / cost:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=416)
    parser.add_argument("--short", type=int, default=600, help="rcnn shorter side")
    parser.add_argument("--max-side", type=int, default=1000, help="rcnn longer side cap")
    parser.add_argument("--only", nargs="+", choices=list(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache-dir", default="data_cache")
    parser.add_argument("--min-size", type=int, default=96, help="scene side range")
    parser.add_argument("--max-size", type=int, default=192)
    parser.add_argument("--item-cost", action="store_true",
                        help="per-item cost in one thread instead of loader throughput")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--decode", nargs="+", choices=["worker", "device"], default=["worker"],
                        help="data.decode modes (--item-cost: worker always, device adds its "
                        "halves)")
    parser.add_argument("--device", default="cpu", help="the decode=device side's device")
    args = parser.parse_args()
    t0 = time.perf_counter()
    root = fashion_scenes_root(args.cache_dir, min_size=args.min_size, max_size=args.max_size)
    dataset = fashion_scenes_dataset(root, "train")
    print(f"FashionScenes train: {len(dataset)} images of {args.min_size}-{args.max_size} px at "
          f"{root} (ready in {time.perf_counter() - t0:.1f} s)")
    if args.item_cost:
        item_cost(dataset, args)
        return
    if (args.batches + 1) * args.batch_size > len(dataset):
        sys.exit("--batches x --batch-size exceeds one epoch")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; batch {args.batch_size}, "
          f"size {args.size} (rcnn {args.short}/{args.max_side}), {args.batches} timed "
          "batches\n")
    rows = []
    for name, pipeline in PIPELINES.items():
        if name not in args.only:
            continue
        for decode in args.decode:
            for workers in args.workers:
                first, rate = time_loader(dataset, pipeline, workers, args, decode)
                rows.append((name, decode, workers, first, rate))
    print(f"| pipeline | decode | workers | first batch (s) | images/s ({args.device}) |")
    print("|---|---|---:|---:|---:|")
    for name, decode, workers, first, rate in rows:
        print(f"| {name} | {decode} | {workers} | {first:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
