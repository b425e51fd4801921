"""Time a FashionScenes build and one pass over it with the VOC and COCO loaders.

Usage: python benchmarks/bench_fashion_scenes.py [--num-train 2000] [--num-test 500]
       [--workers N] [--out DIR]   (default: a temporary folder, removed afterwards)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from ablate.data.datasets.fashion_scenes import build_fashion_scenes, fashion_scenes_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="fashion_scenes_"))
    out = args.out or tmp / "scenes"
    try:
        t0 = time.perf_counter()
        build_fashion_scenes(out, num_train=args.num_train, num_test=args.num_test,
                             workers=args.workers, overwrite=True)
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_fashion_scenes(out, num_train=args.num_train, num_test=args.num_test)
        t_cached = time.perf_counter() - t0
        report = {"build_s": round(t_build, 2), "cached_s": round(t_cached, 4)}
        for view in ("voc", "coco"):
            t0 = time.perf_counter()
            ds = fashion_scenes_dataset(out, "train", view)
            report[f"{view}_index_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            for i in range(len(ds)):
                ds[i]
            report[f"{view}_read_ms_per_image"] = round(
                (time.perf_counter() - t0) / len(ds) * 1e3, 3)
        report["stats"] = json.loads((out / ".complete").read_text())["stats"]
        print(json.dumps(report, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
