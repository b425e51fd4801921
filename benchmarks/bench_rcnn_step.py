"""Faster R-CNN training step: `ablate`'s engine vs the plainest correct PyTorch loop vs
torchvision's detection reference loop, side by side.

Every side trains a copy of the same network (the C4 model of ``--model``, same weights at the
start) on the same batches — FashionScenes through `ablate`'s rcnn pipeline (shorter side 128,
flip; ``--short-side 600 --max-side 1000`` for the paper's sizes), decoded once and held in
memory so that only the step is timed — timed alternately in one process, the order rotated
every round. Reported: the median img/s of each side and the median over rounds of the round's
time ratio (paired within a round, steadier on a shared machine), with its min–max.

- `ablate`: the real ``Trainer.train_epoch`` (per-iteration LR from the schedule, the rcnn task's
  targets, the precision object, loss accumulation) over the cached batches.
- plain: per-image targets from the padded batch, ``losses = model(images, image_sizes,
  targets)``; ``sum``; ``zero_grad``; ``backward``; ``step`` — our model, nothing else.
- torchvision ref: ``train_one_epoch`` of ``references/detection/engine.py`` on torchvision's
  ``FasterRCNN`` (``GeneralizedRCNN``: its own transform normalises, resizes and pads a list
  of images) holding the same backbone, RPN and RoI head modules: autocast forward, sum of the
  loss dict, the reduced losses' ``.item()`` and finiteness check, ``zero_grad``, backward,
  step, its warmup ``LambdaLR`` step and the metric logger's updates.
- torchvision ref, stock RoIAlign: the same with torchvision's ``MultiScaleRoIAlign`` in place
  of the model's pooler (what a torchvision user of this model gets; only run where
  ``rcnn.roi_align`` is ``separable``, elsewhere it is the previous side).

Usage: python benchmarks/bench_rcnn_step.py [--model faster_rcnn_tiny] [--batch 8] [--iters 6]
       [--rounds 3] [--threads 2] [--data-dir data_cache] [--short-side S --max-side M]
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torchvision.models.detection import FasterRCNN as TVFasterRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import MultiScaleRoIAlign

sys.path.insert(0, str(Path(__file__).parent))
from _common import CachedLoader, machine, paired_ratio, table  # noqa: E402

from ablate.config import compose  # noqa: E402
from ablate.data.loading import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ablate.engine.dist import DistInfo  # noqa: E402
from ablate.engine.setup import build  # noqa: E402
from ablate.engine.trainer import Trainer  # noqa: E402


def build_ablate(args):
    cfg = compose([f"model={args.model}", "data=fashion_scenes", f"paths.data={args.data_dir}",
                   f"data.num_train={args.batch * args.iters}", "data.num_test=8",
                   "data.num_workers=0", f"train.batch_size={args.batch}", f"optim.lr={args.lr}",
                   "optim.nesterov=false", "optim.weight_decay=5e-4", "train.epochs=1000",
                   "tricks=[data_augmentation]", "train.log_every=1000000",
                   *([f"data.short_side={args.short_side}"] if args.short_side else []),
                   *([f"data.max_side={args.max_side}"] if args.max_side else [])])
    torch.manual_seed(0)
    b = build(cfg, DistInfo())
    batches = list(b.train_loader)
    b.train_loader = CachedLoader(batches)
    trainer = Trainer(b, DistInfo(), Path("/nonexistent"), seed=0)
    return cfg, b, batches, trainer


def plain_runner(model, batches, task, lr: float):
    model = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9, weight_decay=5e-4)
    def epoch() -> float:
        model.train()
        t0 = time.perf_counter()
        for x in batches:  # targets from the padded batch, as the rcnn task does
            losses = model(x["image"], x["image_sizes"], task.targets(x))
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - t0

    return epoch


def torchvision_model(ours, cfg, stock_pool: bool) -> TVFasterRCNN:
    """torchvision's FasterRCNN around copies of our modules, with the same settings."""
    m = copy.deepcopy(ours)
    r, c = cfg.model.rpn, cfg.model.rcnn
    rpn = RegionProposalNetwork(
        m.rpn.anchor_generator, m.rpn.head, r.fg_iou, r.bg_iou, r.batch, r.pos_fraction,
        dict(training=r.pre_nms_train, testing=r.pre_nms_test),
        dict(training=r.post_nms_train, testing=r.post_nms_test), r.nms)
    rpn.min_size = float(r.min_size)
    pool = (MultiScaleRoIAlign(["0"], c.roi_size, c.sampling_ratio) if stock_pool
            else m.roi_heads.box_roi_pool)
    heads = RoIHeads(pool, m.roi_heads.box_head, m.roi_heads.box_predictor, c.fg_iou, c.bg_iou,
                     c.batch, c.pos_fraction, None, c.score_thresh, c.nms, c.max_det)
    tv = TVFasterRCNN(m.backbone, num_classes=None, min_size=cfg.data.short_side,
                      max_size=cfg.data.max_side, image_mean=list(IMAGENET_MEAN),
                      image_std=list(IMAGENET_STD), rpn_anchor_generator=m.rpn.anchor_generator,
                      rpn_head=m.rpn.head, box_roi_pool=pool, box_head=m.roi_heads.box_head,
                      box_predictor=m.roi_heads.box_predictor)
    tv.rpn, tv.roi_heads = rpn, heads
    return tv


def torchvision_runner(ours, cfg, batches, task, stock_pool: bool):
    model = torchvision_model(ours, cfg, stock_pool)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr, momentum=0.9, weight_decay=5e-4)
    warmup_iters = 1000  # references/detection/engine.py: epoch 0 warms up over 1000 iterations

    def f(x):
        if x >= warmup_iters:
            return 1
        alpha = float(x) / warmup_iters
        return 0.001 * (1 - alpha) + alpha

    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=f)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    data = []
    for x in batches:  # the unpadded 0–1 images and target dicts its data loader yields
        images = [(img[:, :h, :w] * std + mean) for img, (h, w) in
                  zip(x["image"], x["image_sizes"].tolist())]
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in task.targets(x)]
        data.append((images, targets))

    def epoch() -> float:
        model.train()
        meters: dict[str, list[float]] = {}
        t0 = time.perf_counter()
        for images, targets in data:
            images = list(image for image in images)
            targets = [{k: v for k, v in t.items()} for t in targets]
            with torch.autocast("cpu", enabled=False):
                loss_dict = model(images, targets)
                losses = sum(loss for loss in loss_dict.values())
            loss_dict_reduced = loss_dict  # utils.reduce_dict: one process
            losses_reduced = sum(loss for loss in loss_dict_reduced.values())
            loss_value = losses_reduced.item()
            if not math.isfinite(loss_value):
                sys.exit(f"Loss is {loss_value}, stopping training")
            optimizer.zero_grad()
            losses.backward()
            optimizer.step()
            lr_scheduler.step()
            for k, v in {"loss": losses_reduced, **loss_dict_reduced}.items():
                meters.setdefault(k, []).append(v.item())
            meters.setdefault("lr", []).append(optimizer.param_groups[0]["lr"])
        return time.perf_counter() - t0

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="faster_rcnn_tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default="data_cache")
    ap.add_argument("--lr", type=float, default=0.01,
                    help="every side's; lower it for a C4 model without backbone weights")
    ap.add_argument("--short-side", type=int, default=None, help="data.short_side")
    ap.add_argument("--max-side", type=int, default=None, help="data.max_side")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as ablate's worker does on CPU (process-wide: all sides)
    cfg, b, batches, trainer = build_ablate(args)
    ours = copy.deepcopy(b.model)  # the start weights of every other side
    names = ["ablate", "plain loop", "torchvision ref", "torchvision ref, stock RoIAlign"]
    sides = [lambda: trainer.train_epoch()["epoch_time_s"],
             plain_runner(ours, batches, b.task, cfg.optim.lr),
             torchvision_runner(ours, cfg, batches, b.task, stock_pool=False),
             torchvision_runner(ours, cfg, batches, b.task, stock_pool=True)]
    if cfg.model.rcnn.roi_align != "separable":  # the model's pooler is torchvision's already
        names, sides = names[:3], sides[:3]
    for side in sides:
        side()  # warm-up (oneDNN primitives)
    times: list[list[float]] = [[] for _ in sides]
    for r in range(args.rounds):
        for k in range(len(sides)):
            i = (r + k) % len(sides)
            times[i].append(sides[i]())
    n = args.batch * len(batches)
    ips = [n / statistics.median(t) for t in times]
    print(f"Machine: {machine()}; {args.threads} threads\n")
    print(f"{args.model} (roi_align: {cfg.model.rcnn.roi_align}), FashionScenes at "
          f"{cfg.data.short_side}/{cfg.data.max_side}, batch {args.batch}, {len(batches)} "
          f"iterations × {args.rounds} rounds (rotated order), medians, fp32, lr {args.lr}\n")
    print(table(["side", "img/s", "ablate / side (min–max)"],
                [[name, v, paired_ratio(t, times[0])] for name, v, t in zip(names, ips, times)]))


if __name__ == "__main__":
    main()
