"""Classification input pipelines alone, images/s per DataLoader worker count.

* ImageNet (``build_imagenet``): a generated ImageFolder tree of ``--images`` JPEGs at
  ``--width``×``--height`` (ImageNet's typical 500×375; smooth colour fields plus noise, quality
  90, so they decode like photos rather than flat colour), timed through the training pipeline
  (read + decode + RandomResizedCrop 224 + flip + colour jitter + PCA lighting α, then the
  on-device normalisation) and the evaluation pipeline (resize 256 + centre crop 224), with 0, 1
  and 2 workers; the first batch (worker start-up) is reported apart. ``--decode worker device``
  also times ``data.decode=device`` (workers read bytes and draw the augmentation, the training
  process decodes and transforms the batch on ``--device``), what one worker spends per item in
  each mode, and how far the device path's pixels are from the worker path's on the same items.
* Fashion-MNIST (``InMemoryLoader``): the demo's batched pad-4 crop + flip on uint8 tensors,
  and reading the training split from its idx.gz files (every demo run does it once) with
  ISA-L's inflate (what ``read_idx`` uses) against zlib's, alternating, median of 5 each.

Usage: python benchmarks/bench_cls_pipeline.py [--images 512] [--batch 64] [--workers 0 1 2]
       [--width 500] [--height 375] [--decode worker [device]] [--device cpu|cuda]
       [--out DIR]   (default: a temporary folder)
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import item_costs, machine, table  # noqa: E402

from ablate.data.sources import build_imagenet  # noqa: E402
from ablate.worker import close_loaders  # noqa: E402


def make_tree(root: Path, images: int, width: int, height: int, classes: int = 10) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for split, n in (("train", images), ("val", images)):
        for i in range(n):
            c = i % classes
            d = root / split / f"n{c:08d}"
            d.mkdir(parents=True, exist_ok=True)
            f = rng.uniform(0.005, 0.05, (3, 2))
            ph = rng.uniform(0, 6.3, 3)
            img = np.stack([127 + 100 * np.sin(f[k, 0] * xx + f[k, 1] * yy + ph[k])
                            for k in range(3)], -1)
            img += rng.normal(0, 12, img.shape)
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(
                d / f"{split}_{i:06d}.JPEG", quality=90)


def worker_item_cost(common: dict, items: int = 256, rounds: int = 3) -> None:
    """What one worker does per training item in each mode (1 thread, alternating, median)."""
    costs = item_costs({d: build_imagenet(**common, num_workers=0, decode=d)[0].dataset
                        for d in ("worker", "device")}, items, rounds)
    w, d = costs["worker"], costs["device"]
    print(f"\none worker, per training item (1 thread, median of {rounds}): decode=worker "
          f"{w * 1e3:.2f} ms (read, decode, crop, flip, jitter, lighting α) = {1 / w:,.0f} "
          f"items/s; decode=device {d * 1e3:.2f} ms (read, JPEG header, draws) = {1 / d:,.0f} "
          f"items/s ({w / d:.1f}x)")


def agreement(common: dict, batches: int = 2) -> None:
    """How far ``decode=device`` pixels are from the worker path's, same items and draws."""
    diffs, n = [], 0
    for split in (0, 1):
        a = build_imagenet(**common, num_workers=0)[split]
        b = build_imagenet(**common, num_workers=0, decode="device")[split]
        for _, x, y in zip(range(batches), a, b):
            assert torch.equal(x["label"].cpu(), y["label"].cpu())
            # back to the 0–255 scale of the uint8 images (offsets are the same on both sides)
            d = ((x["image"] - y["image"]).float() * b.std).abs().cpu()
            diffs.append(d.flatten())
            n += len(x["label"])
    d = torch.cat(diffs)
    print(f"\ndecode=device vs worker, {n} train + val images: max |diff| {d.max():.2f} levels, "
          f"mean {d.mean():.4f}, pixels off by > 0.5 level {(d > 0.5).float().mean():.3%}")


def time_loader(loader, batches: int) -> tuple[float, float]:
    """(first batch s, images/s over the next ``batches`` batches)."""
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    cuda = getattr(loader, "device", torch.device("cpu")).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    sync()
    n, t1 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            n += len(next(it)["label"])
        except StopIteration:
            break
    sync()  # the device's decoding and augmentation run asynchronously
    return first, n / (time.perf_counter() - t1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--width", type=int, default=500)
    ap.add_argument("--height", type=int, default=375)
    ap.add_argument("--decode", nargs="+", choices=("worker", "device"), default=["worker"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_cls_pipeline_"))
    try:
        if not (root / "train").is_dir():
            t = time.perf_counter()
            make_tree(root, args.images, args.width, args.height)
            print(f"generated {args.images} train JPEGs in {time.perf_counter() - t:.1f} s")
        rows = []
        common = dict(root=str(root), num_classes=None, batch_size=args.batch,
                      eval_batch_size=args.batch, channels_last=True, device=args.device)
        for decode in args.decode:
            for w in args.workers:
                train, val = build_imagenet(**common, num_workers=w, decode=decode)
                batches = args.images // args.batch - 1
                ft, it = time_loader(train, batches)
                fe, ie = time_loader(val, len(val) - 1)
                close_loaders(train, val)
                rows.append([decode, w, f"{ft:.2f}", it, f"{fe:.2f}", ie])
                print(rows[-1], flush=True)
        print(f"\nMachine: {machine()}\n")
        print(f"ImageNet pipelines, {args.width}×{args.height} JPEGs, batch {args.batch}, "
              f"device {args.device}, torch threads {torch.get_num_threads()}\n")
        print(table(["decode", "workers", "train first batch s", "train img/s",
                     "eval first batch s", "eval img/s"], rows))
        if "device" in args.decode:
            worker_item_cost(common)
            agreement(common)
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)
    fmnist()


def fmnist_load(rounds: int = 5) -> None:
    import gzip

    from ablate.data.datasets import fashion_mnist as fm

    if fm._gunzip is gzip.decompress:
        print("\nFashion-MNIST load: isal is not installed, nothing to compare")
        return
    fast, times = fm._gunzip, {"zlib": [], "isal": []}
    try:
        for _ in range(rounds):
            for name, fn in (("zlib", gzip.decompress), ("isal", fast)):
                fm._gunzip = fn
                t = time.perf_counter()
                fm.load_fashion_mnist(split="train")
                times[name].append(time.perf_counter() - t)
    finally:
        fm._gunzip = fast
    z, i = (float(np.median(times[k])) for k in ("zlib", "isal"))
    print(f"\nFashion-MNIST train split from idx.gz (median of {rounds}): zlib {z:.3f} s, "
          f"isal {i:.3f} s ({z / i:.2f}x)")


def fmnist() -> None:
    from ablate.data.sources import build_fashion_mnist

    try:
        train, _ = build_fashion_mnist(root=None, batch_size=256, eval_batch_size=500,
                                       channels_last=True)
    except Exception as e:  # noqa: BLE001  (the package may be missing on this machine)
        print(f"\nFashion-MNIST skipped: {e}")
        return
    first, ips = time_loader(train, len(train) - 1)
    print(f"\nFashion-MNIST training loader (in memory, batched pad-4 crop + flip, batch 256): "
          f"{ips:,.0f} img/s")
    fmnist_load()


if __name__ == "__main__":
    main()
