"""Benchmark detection evaluation: ablate's VOC devkit mAP and COCO wrapper.

Synthetic VOC-sized test set (default 5,000 images x 100 detections, 20 classes, ~3 GT per
image, fixed seed): detections are jittered copies of the GT (mostly right class, higher scores)
plus random boxes. Times, best of ``--repeats``:

* ``voc_eval`` with the VOC07 11-point and VOC2010 area metrics, against a plain-loop
  transcription of the devkit's ``voc_eval.py`` (py-faster-rcnn), whose APs must agree to 1e-12;
* ``coco_eval`` with each engine against calling pycocotools directly (loadRes +
  evaluate/accumulate/summarize): with ``backend="pycocotools"`` the 12 stats must be identical,
  with faster-coco-eval (the default) equal to 1e-15 (it omits pycocotools' ``np.spacing(1)`` in
  the precision denominator, so a precision of 1/(1 + 2^-52) is 1 there).

Prints a Markdown table. Usage: ``python benchmarks/bench_eval.py [--images N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ablate.eval.coco_map import (STAT_NAMES, build_coco_gt, coco_eval,  # noqa: E402
                                  detections_to_coco_results)
from ablate.eval.voc_map import voc_eval  # noqa: E402


def make_data(n_images: int, n_dets: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_images):
        W, H = 500.0, 375.0
        g = max(1, int(rng.poisson(3)))
        wh = np.exp(rng.uniform(np.log(12), np.log(300), (g, 2)))   # small to large objects
        xy = rng.uniform(0, 1, (g, 2)) * np.maximum([W, H] - wh, 1)
        boxes = np.round(np.concatenate([xy, xy + wh], 1))
        labels = rng.integers(0, n_classes, g)
        gts.append({"boxes": boxes, "labels": labels, "difficult": rng.random(g) < 0.1})
        k = min(n_dets, int(rng.integers(1, 5)) * g)                  # jittered true detections
        src = rng.integers(0, g, k)
        size = np.tile(boxes[src, 2:] - boxes[src, :2], 2)
        jb = boxes[src] + rng.normal(0, 0.08, (k, 4)) * size
        jl = np.where(rng.random(k) < 0.9, labels[src], rng.integers(0, n_classes, k))
        r = n_dets - k                                                 # background clutter
        rwh = np.exp(rng.uniform(np.log(8), np.log(300), (r, 2)))
        rxy = rng.uniform(0, 1, (r, 2)) * np.maximum([W, H] - rwh, 1)
        b = np.concatenate([jb, np.concatenate([rxy, rxy + rwh], 1)]).astype(np.float32)
        s = np.concatenate([rng.beta(5, 2, k), rng.beta(1, 6, r)]).astype(np.float32)
        dets.append({"boxes": b, "scores": s, "labels": np.concatenate([jl, rng.integers(
            0, n_classes, r)])})
    return gts, dets


def devkit_loop(gts, dets, n_classes, use_07_metric):
    """py-faster-rcnn voc_eval/voc_ap, one Python iteration per detection (the baseline)."""
    aps = []
    for cls in range(n_classes):
        recs, npos = {}, 0
        for i, g in enumerate(gts):
            m = g["labels"] == cls
            recs[i] = (g["boxes"][m], g["difficult"][m], np.zeros(int(m.sum()), bool))
            npos += int((~g["difficult"][m]).sum())
        ids, conf, bbs = [], [], []
        for i, d in enumerate(dets):
            m = d["labels"] == cls
            ids += [i] * int(m.sum())
            conf.append(d["scores"][m])
            bbs.append(d["boxes"][m])
        conf, BB = np.concatenate(conf), np.concatenate(bbs).astype(np.float64)
        order = np.argsort(-conf, kind="stable")
        tp, fp = np.zeros(len(order)), np.zeros(len(order))
        for n, j in enumerate(order):
            BBGT, diff, seen = recs[ids[j]]
            bb, ovmax = BB[j], -np.inf
            if BBGT.size:
                iw = np.maximum(np.minimum(BBGT[:, 2], bb[2]) - np.maximum(BBGT[:, 0], bb[0]) + 1, 0)
                ih = np.maximum(np.minimum(BBGT[:, 3], bb[3]) - np.maximum(BBGT[:, 1], bb[1]) + 1, 0)
                inters = iw * ih
                uni = ((bb[2] - bb[0] + 1.) * (bb[3] - bb[1] + 1.) + (BBGT[:, 2] - BBGT[:, 0] + 1.)
                       * (BBGT[:, 3] - BBGT[:, 1] + 1.) - inters)
                ov = inters / uni
                ovmax, jmax = ov.max(), ov.argmax()
            if ovmax > 0.5:
                if not diff[jmax]:
                    tp[n], fp[n] = (0, 1) if seen[jmax] else (1, 0)
                    seen[jmax] = True
            else:
                fp[n] = 1
        if npos == 0:
            aps.append(np.nan)
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec, prec = tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        if use_07_metric:
            aps.append(sum((prec[rec >= t].max() if (rec >= t).any() else 0) / 11.
                           for t in np.arange(0., 1.1, 0.1)))
        else:
            mrec, mpre = np.r_[0, rec, 1], np.r_[0, prec, 0]
            for i in range(len(mpre) - 1, 0, -1):
                mpre[i - 1] = max(mpre[i - 1], mpre[i])
            i = np.where(mrec[1:] != mrec[:-1])[0]
            aps.append(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    return np.array(aps)


def best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def pycocotools_direct(gt, results):
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def cpu_name() -> str:
    name = platform.processor()
    if not name or name in ("x86_64", "aarch64"):
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return name or platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3, help="best of R for every timing")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-devkit", action="store_true", help="skip the slow loop baseline")
    args = ap.parse_args(argv)

    import pycocotools
    import torch

    gts, dets = make_data(args.images, args.dets, args.classes, args.seed)
    n_det = sum(len(d["scores"]) for d in dets)
    n_gt = sum(len(g["labels"]) for g in gts)
    rows = []  # (what, ours_s, baseline name, baseline_s, result)
    for metric, use07 in (("voc07", True), ("voc2010", False)):
        t, r = best_of(lambda: voc_eval(gts, dets, args.classes, metric=metric), args.repeats)
        base, base_name = float("nan"), "devkit loop port"
        if not args.skip_devkit:
            base, ref = best_of(lambda: devkit_loop(gts, dets, args.classes, use07), args.repeats)
            err = np.nanmax(np.abs(ref - r["ap"]))
            assert err <= 1e-12, f"{metric}: AP differs from the devkit port by {err}"
        rows.append((f"VOC mAP, {metric}", t, base_name, base, f"mAP {r['map']:.4f}"))

    cat_ids = list(range(1, args.classes + 1))
    img_ids = list(range(1, args.images + 1))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = build_coco_gt(gts, image_ids=img_ids, category_ids=cat_ids,
                           image_sizes=[(375, 500)] * len(gts))
    t_conv, results = best_of(lambda: detections_to_coco_results(dets, img_ids, cat_ids),
                              args.repeats)
    rows.append(("arrays -> COCO results dicts", t_conv, "", float("nan"), f"{len(results)} dicts"))
    t_ours, ours = best_of(lambda: coco_eval(gt, results, backend="pycocotools"), args.repeats)
    t_fast, fast = best_of(lambda: coco_eval(gt, results, backend="faster_coco_eval"),
                           args.repeats)
    direct_times, direct = [], None
    for _ in range(args.repeats):
        res = copy.deepcopy(results)               # loadRes mutates its input; copy off the clock
        t = time.perf_counter()
        direct = pycocotools_direct(gt, res)
        direct_times.append(time.perf_counter() - t)
    assert [ours["stats"][n] for n in STAT_NAMES] == [float(v) for v in direct], \
        "coco_eval stats differ from pycocotools"
    rows.append(("COCO bbox mAP (coco_eval, pycocotools)", t_ours, "pycocotools COCOeval direct",
                 min(direct_times), f"AP {ours['stats']['AP']:.4f}, identical 12 stats"))
    err = max(abs(fast["stats"][n] - float(v)) for n, v in zip(STAT_NAMES, direct))
    assert err <= 1e-15, f"faster-coco-eval differs from pycocotools by {err}"
    rows.append(("COCO bbox mAP (coco_eval, faster-coco-eval: default)", t_fast,
                 "pycocotools COCOeval direct", min(direct_times),
                 f"AP {fast['stats']['AP']:.4f}, 12 stats within {err:.1e}"))

    print(f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
          f"numpy {np.__version__}, torch {torch.__version__}, "
          f"pycocotools {getattr(pycocotools, '__version__', _version('pycocotools'))}, "
          f"faster-coco-eval {_version('faster-coco-eval')}")
    print(f"Data: {args.images} images, {n_gt} GT, {n_det} detections, {args.classes} classes, "
          f"seed {args.seed}; best of {args.repeats}\n")
    print("| task | ablate (s) | baseline | baseline (s) | speed-up (baseline / ablate) | result |")
    print("|---|---:|---|---:|---:|---|")
    for what, t, base_name, base, result in rows:
        known = base == base  # not NaN
        ratio, base_s = (f"{base / t:.2f}x", f"{base:.3f}") if known else ("", "")
        print(f"| {what} | {t:.3f} | {base_name} | {base_s} | {ratio} | {result} |")
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
