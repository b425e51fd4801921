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

each with 0, 1 and 2 DataLoader workers. Prints a Markdown table.

``--item-cost`` instead times what one worker does per training item (1 thread, the loader's
own dataset indexed in the main process, pipelines alternated, median of ``--rounds``): the
bare read + decode, then each pipeline. ``--min-size``/``--max-size`` set the scenes' side range
(375 500 stands in for Pascal VOC's photos).
Usage: ``python benchmarks/bench_detection_pipeline.py [--size 416] [--short 600]
[--max-side 1000] [--batch-size 16] [--batches 30] [--workers 0 1 2] [--cache-dir data_cache]
[--min-size 96 --max-size 192] [--item-cost [--items 200 --rounds 3]]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import item_costs  # noqa: E402

from ablate.data.detection_loader import RandomShapes, build_detection_loaders  # noqa: E402
from ablate.data.detection_rcnn import build_rcnn_loaders  # noqa: E402
from ablate.data.fashion_scenes import (fashion_scenes_dataset,  # noqa: E402
                                        fashion_scenes_root)

PIPELINES = {
    "resize": dict(augment=False),
    "augment": dict(augment=True),
    "augment+mixup+shapes": dict(augment=True, mixup={"off_last_epochs": 0}, epochs=1,
                                 random_shapes=RandomShapes(every=10)),
    "rcnn flip": dict(rcnn=True, augment=True),
    "rcnn flip+mixup": dict(rcnn=True, augment=True, mixup={"off_last_epochs": 0}, epochs=1),
}


def time_loader(dataset, pipeline: dict, workers: int, args) -> tuple[float, float]:
    """Return (first batch seconds, images/s over the following ``args.batches`` batches)."""
    pipeline = dict(pipeline)
    if pipeline.pop("rcnn", False):
        train, _ = build_rcnn_loaders(dataset, None, batch_size=args.batch_size,
                                      scale=(args.short, args.max_side), num_workers=workers,
                                      seed=0, **pipeline)
    else:
        train, _ = build_detection_loaders(dataset, None, batch_size=args.batch_size,
                                           train_size=args.size, num_workers=workers, seed=0,
                                           **pipeline)
    train.set_epoch(0)
    it = iter(train)
    t0 = time.perf_counter()
    next(it)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for _ in range(args.batches):
        batch = next(it)
        n += len(batch["image"])
    return first, n / (time.perf_counter() - t0)


def build_train_dataset(dataset, pipeline: dict, args):
    """The training loader's dataset (what a worker indexes) for one pipeline, epoch 0."""
    pipeline = {k: v for k, v in pipeline.items() if k != "random_shapes"}  # batch-level
    if pipeline.pop("rcnn", False):
        train, _ = build_rcnn_loaders(dataset, None, batch_size=args.batch_size,
                                      scale=(args.short, args.max_side), num_workers=0, seed=0,
                                      **pipeline)
    else:
        train, _ = build_detection_loaders(dataset, None, batch_size=args.batch_size,
                                           train_size=args.size, num_workers=0, seed=0,
                                           **pipeline)
    train.set_epoch(0)
    return train.dataset


def item_cost(dataset, args) -> None:
    """Milliseconds per training item in one thread: decode alone, then each pipeline."""
    names = ["decode"] + [n for n in PIPELINES if n in args.only]
    sources = {"decode": dataset}
    sources.update({n: build_train_dataset(dataset, PIPELINES[n], args) for n in names[1:]})
    costs = item_costs(sources, args.items, args.rounds)
    n = min(args.items, len(dataset))
    print(f"one worker, per training item (1 thread, {n} items, median of {args.rounds})\n")
    print("| pipeline | ms / item | items/s |")
    print("|---|---:|---:|")
    for name in names:
        print(f"| {name} | {costs[name] * 1e3:.2f} | {1 / costs[name]:,.0f} |")


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
        for workers in args.workers:
            first, rate = time_loader(dataset, pipeline, workers, args)
            rows.append((name, workers, first, rate))
    print("| pipeline | workers | first batch (s) | images/s |")
    print("|---|---:|---:|---:|")
    for name, workers, first, rate in rows:
        print(f"| {name} | {workers} | {first:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
