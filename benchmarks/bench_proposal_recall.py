"""Proposal recall evaluation time: MMDetection's AR@N (``ablate.eval.proposal_recall.
average_recall``, the greedy one-to-one matching) vs pycocotools' ``COCOeval`` with
``useCats = 0`` (``coco_average_recall``), on the same proposals, side by side in one process.

Synthetic COCO-like set: ``--images`` images of 640×480 with ``--gt`` boxes each (sizes 16–300
px), ``--proposals`` proposals an image (half jittered copies of the boxes, half random, random
scores), AR at N = 100, 300, 1000. Both sides get the ground truth ready-made (boxes for one,
a ``COCO`` object for the other) and are timed alternately, the order rotated every round;
reported: the median seconds of each side and the median paired ratio.

Usage: python benchmarks/bench_proposal_recall.py [--images 500] [--gt 7] [--proposals 1000]
       [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, paired_ratio, table  # noqa: E402

from ablate.eval.coco_map import build_coco_gt, detections_to_coco_results  # noqa: E402
from ablate.eval.proposal_recall import average_recall, coco_average_recall  # noqa: E402


def synthetic(images: int, gt: int, proposals: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gts, props, scores = [], [], []
    for _ in range(images):
        wh = rng.uniform(16, 300, (gt, 2))
        xy = rng.uniform(0, 1, (gt, 2)) * (np.array([640, 480]) - wh)
        boxes = np.concatenate([xy, xy + wh], 1)
        k = proposals // 2
        near = boxes[rng.integers(0, gt, k)] + rng.normal(0, 8, (k, 4))
        far_wh = rng.uniform(8, 400, (proposals - k, 2))
        far_xy = rng.uniform(0, 1, (proposals - k, 2)) * np.array([640, 480])
        far = np.concatenate([far_xy, far_xy + far_wh], 1)
        p = np.concatenate([near, far])
        p[:, 2:] = np.maximum(p[:, 2:], p[:, :2] + 1)
        gts.append(boxes)
        props.append(p)
        scores.append(rng.uniform(0, 1, proposals))
    return gts, props, scores


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--gt", type=int, default=7)
    ap.add_argument("--proposals", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    nums = (100, 300, 1000)
    gts, props, scores = synthetic(args.images, args.gt, args.proposals)
    ids = list(range(1, args.images + 1))
    coco = build_coco_gt([{"boxes": g, "labels": np.zeros(len(g), np.int64)} for g in gts], ids,
                         category_names=["object"])
    results = detections_to_coco_results(
        [{"boxes": p, "scores": s, "labels": np.zeros(len(s), np.int64)}
         for p, s in zip(props, scores)], ids, [1])
    out = {}

    def ours() -> float:
        t0 = time.perf_counter()
        out["ours"] = average_recall(gts, props, scores, nums)
        return time.perf_counter() - t0

    def cocoeval() -> float:
        t0 = time.perf_counter()
        out["coco"] = coco_average_recall(coco, results, nums)
        return time.perf_counter() - t0

    sides = [ours, cocoeval]
    times: list[list[float]] = [[], []]
    for r in range(args.rounds):
        for k in range(2):
            i = (r + k) % 2
            times[i].append(sides[i]())
    print(f"Machine: {machine()}\n")
    print(f"{args.images} images × {args.gt} boxes, {args.proposals} proposals an image, "
          f"AR@{','.join(map(str, nums))}, {args.rounds} rounds (rotated), medians\n")
    names = ["MMDetection AR@N (ablate)", "COCOeval useCats=0 (pycocotools)"]
    print(table(["side", "s", "COCOeval / side (min–max)", "AR@100 / 300 / 1000 (%)"],
                [[n, statistics.median(t), paired_ratio(times[1], t),
                  " / ".join(f"{100 * out[k][n]:.2f}" for n in nums)]
                 for n, t, k in zip(names, times, ["ours", "coco"])]))


if __name__ == "__main__":
    main()
