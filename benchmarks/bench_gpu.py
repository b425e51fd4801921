"""Training throughput and model FLOP utilisation (MFU) of ResNet-50-D and YOLOv3 (Darknet-53)
through `ablate`'s engine, per precision, on a GPU (or, with small settings, on CPU to check
the script).

Each row builds the run with ``ablate.engine.setup.build`` from the composed config (the model,
tricks, optimizer — fused SGD — precision object, channels_last) and times ``Trainer.
train_epoch`` over synthetic batches already on the device (a registered ``bench_synthetic``
data source: uint8 images normalised on the device as the real loaders do; YOLO batches with
1–8 random boxes per image in the collate format), so the figures are the step's alone; the
step loop's ``data_wait_share`` is printed to show that. After ``--warmup`` iterations (cuDNN
autotuning, allocator) ``--iters`` iterations are timed between device synchronisations.

MFU = img/s × training FLOPs per image / the card's peak. Training FLOPs = 3 × the forward's
(``torch.utils.flop_counter``, 2 per multiply-add; the backward costs two forwards). The peak is
the dense tensor-core figure of the precision the convolutions run in: bf16 / fp16, and TF32 for
fp32 (cuDNN's default on Ampere and later, ``torch.backends.cudnn.allow_tf32``). Known cards:
H100 / H200 SXM (989 / 495 TFLOP/s), A100 (312 / 156); ``--peak-tflops`` overrides.

Usage: python benchmarks/bench_gpu.py [--models resnet50_d yolov3] [--precisions fp32 bf16
       fp16] [--batch-resnet 256] [--batch-yolo 32] [--size-yolo 416] [--warmup 10]
       [--iters 30] [--compile] [--peak-tflops T] [--small]   (--small: tiny models, CPU check)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from _common import CachedLoader, machine, table  # noqa: E402

from ablate.config import compose  # noqa: E402
from ablate.data import DataSource  # noqa: E402
from ablate.data.pipelines.tensors import InMemoryLoader  # noqa: E402
from ablate.engine.dist import DistInfo  # noqa: E402
from ablate.engine.setup import build  # noqa: E402
from ablate.engine.trainer import Trainer  # noqa: E402
from ablate.registry import DATASETS  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PEAKS = {"H100": (989.4, 494.7), "H200": (989.4, 494.7), "A100": (312.0, 156.0)}  # 16-bit, TF32


def synthetic_loaders(*, task: str, size: int, batches: int, num_classes: int, batch_size: int,
                      device: torch.device, channels_last: bool, seed: int = 0, **_):
    g = torch.Generator().manual_seed(seed)
    n = batch_size * batches
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    if task == "classification":
        labels = torch.randint(0, num_classes, (n,), generator=g)
        loader = InMemoryLoader(images, labels, batch_size, train=True, mean=MEAN, std=STD,
                                device=device, channels_last=channels_last)
        return loader, loader
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    out = []
    for i in range(batches):
        m = 8
        xy = torch.rand(batch_size, m, 2, generator=g) * size * 0.7
        wh = (0.05 + torch.rand(batch_size, m, 2, generator=g) * 0.25) * size
        count = torch.randint(1, m + 1, (batch_size, 1), generator=g)
        valid = torch.arange(m)[None] < count
        labels = torch.randint(0, num_classes, (batch_size, m), generator=g).where(valid, -1)
        boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], -1) * valid[..., None]
        x = images[i * batch_size:(i + 1) * batch_size].to(device)
        out.append({"image": ((x.float() - mean) / std).contiguous(memory_format=fmt),
                    "boxes": boxes.to(device), "labels": labels.to(device),
                    "weights": valid.float().to(device),
                    "difficult": torch.zeros_like(valid).to(device)})
    return CachedLoader(out), CachedLoader(out)


def peak_tflops(prec: str, override: float | None) -> float | None:
    if override:
        return override
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, (half, tf32) in PEAKS.items():
        if key in name:
            return half if prec in ("bf16", "fp16") else tf32
    return None


def train_flops_per_image(model: torch.nn.Module, batch: dict) -> float:
    x = batch["image"][:2]
    was = model.training
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    model.train(was)
    return 3 * counter.get_total_flops() / len(x)


def measure(model_name: str, prec: str, args, device: torch.device) -> list:
    yolo = model_name.startswith("yolov3")
    batch = args.batch_yolo if yolo else args.batch_resnet
    size = args.size_yolo if yolo else args.size_resnet
    over = [f"model={model_name}", f"data={'fashion_scenes' if yolo else 'fashion_mnist'}",
            "data.name=bench_synthetic", f"+data.task={'yolo' if yolo else 'classification'}",
            f"+data.size={size}", f"+data.batches={args.warmup + args.iters}",
            "data.in_chans=3", f"data.num_classes={80 if yolo else 1000}",
            f"train.batch_size={batch}", "train.epochs=1000", "train.log_every=100000000",
            f"train.precision={prec}", f"train.compile={str(args.compile).lower()}"]
    if args.small:
        over += ["model.width=0.125"] + (["model.depth=0.34"] if yolo else ["model.depth=14"])
    if yolo:
        over += [f"model.anchor_scale={size / 416:.4f}", "train.bn_group_size=null"]
    torch.manual_seed(0)
    dist = DistInfo(device=device)
    b = build(compose(over), dist)
    batches = b.train_loader.batches if yolo else list(b.train_loader)
    flops = train_flops_per_image(b.model, batches[0])
    trainer = Trainer(b, dist, Path("/nonexistent"), seed=0)
    b.train_loader = CachedLoader(batches[:args.warmup])
    trainer.state.iters_per_epoch = args.warmup
    trainer.train_epoch()  # warm-up: cuDNN autotuning, allocator, compilation
    b.train_loader = CachedLoader(batches[args.warmup:])
    trainer.state.iters_per_epoch = args.iters
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    row = trainer.train_epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    ips = batch * args.iters / dt
    peak = peak_tflops(prec, args.peak_tflops)
    mem = f"{torch.cuda.max_memory_allocated() / 2**30:.1f}" if device.type == "cuda" else "–"
    mfu = f"{100 * ips * flops / (peak * 1e12):.1f} %" if peak else "–"
    return [model_name, f"{prec} + channels_last", batch, size, f"{ips:,.0f}",
            f"{flops / 1e9:.3g}", f"{ips * flops / 1e12:.3g}", mfu,
            f"{100 * row['data_wait_share']:.1f} %", mem]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet50_d", "yolov3"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-resnet", type=int, default=256)
    ap.add_argument("--size-resnet", type=int, default=224)
    ap.add_argument("--batch-yolo", type=int, default=32)
    ap.add_argument("--size-yolo", type=int, default=416)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--small", action="store_true", help="tiny models (a CPU check)")
    args = ap.parse_args()
    class Synthetic(DataSource):  # takes any data key: the config is another dataset's
        def build(self, **kw):
            return synthetic_loaders(**kw)

        def check(self, **kw):
            return None

    DATASETS.register("bench_synthetic")(Synthetic("bench_synthetic", "", "",
                                                   ("classification", "yolo")))
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        torch.set_flush_denormal(True)
    rows = []
    for model_name in args.models:
        for prec in args.precisions:
            rows.append(measure(model_name, prec, args, device))
            print(" | ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    print(f"\nMachine: {machine()}\n")
    print(f"{args.iters} timed iterations after {args.warmup}; compile {args.compile}\n")
    print(table(["model", "precision", "batch", "size", "img/s", "train GFLOP/img",
                 "TFLOP/s", "MFU", "data wait", "peak GiB"], rows))


if __name__ == "__main__":
    main()
