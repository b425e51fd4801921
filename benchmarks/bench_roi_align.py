"""RoIAlign forward + backward: torchvision's ``roi_align`` vs ``roi_align_separable``.

The same features, boxes and output gradient on both sides (``aligned=False``, the C4 model's
settings), alternated, median of ``--rounds``; the largest difference of outputs and input
gradients is printed beside the times.

Usage: python benchmarks/bench_roi_align.py [--images 8] [--rois 32] [--channels 256]
       [--height 14] [--width 12] [--out 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.ops import roi_align

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

from ablate.models.roi_align import roi_align_separable  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    for k, v in dict(images=8, rois=32, channels=256, height=14, width=12, out=7, sampling=2,
                     threads=1, rounds=7).items():
        ap.add_argument(f"--{k}", type=int, default=v)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(args.images, args.channels, args.height, args.width, generator=g,
                       requires_grad=True)
    size = torch.tensor([args.width * 16.0, args.height * 16.0])
    boxes = []
    for _ in range(args.images):
        xy = torch.rand(args.rois, 2, generator=g) * size
        wh = torch.rand(args.rois, 2, generator=g) * size / 2 + 2
        boxes.append(torch.cat([xy, torch.minimum(xy + wh, size)], 1))
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1)
                      for i, b in enumerate(boxes)])
    sides = {"torchvision roi_align": lambda: roi_align(feat, rois, args.out, 1 / 16,
                                                        args.sampling),
             "separable": lambda: roi_align_separable(feat, boxes, args.out, 1 / 16,
                                                      args.sampling)}
    grad = torch.randn(len(rois), args.channels, args.out, args.out, generator=g)
    outs = {k: fn() for k, fn in sides.items()}
    grads = {k: torch.autograd.grad(o, feat, grad)[0] for k, o in outs.items()}
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.rounds + 1):
        for k, fn in sides.items():
            t0 = time.perf_counter()
            fn().backward(grad)
            times[k].append(time.perf_counter() - t0)
    ms = {k: 1e3 * statistics.median(v[1:]) for k, v in times.items()}
    a, b = (o.detach() for o in outs.values())
    ga, gb = grads.values()
    print(f"Machine: {machine()}; {args.threads} thread(s)\n")
    print(f"{args.images} images × {args.rois} RoIs, {args.channels} × {args.height} × "
          f"{args.width} map, {args.out} × {args.out} bins × {args.sampling}² samples; max |Δ| "
          f"output {float((a - b).abs().max()):.1e}, input grad {float((ga - gb).abs().max()):.1e}"
          "\n")
    base = ms["torchvision roi_align"]
    print(table(["RoIAlign forward + backward", "ms", "speed-up"],
                [[k, v, f"{base / v:.1f}×"] for k, v in ms.items()]))


if __name__ == "__main__":
    main()
