"""Harness overhead of `ablate run`: everything that is not training or evaluation compute.

Runs a study end to end (as a user would, through torchrun) in a fresh results folder, then
splits the wall time using each run's metrics.json:

  compute  = Σ train_time_s + eval_time_s         (the step loop and evaluation)
  overhead = driver wall − compute                (Python start-up, compose, torchrun launch,
                                                    worker imports, data loading, model build,
                                                    checkpoint and result writes)

Usage: python benchmarks/bench_harness.py [--study studies/fmnist_refinements.yaml]
       [--scale proxy|smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", default=str(ROOT / "studies" / "fmnist_refinements.yaml"))
    ap.add_argument("--scale", default="proxy")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ablate", "run", args.study, "--scale", args.scale,
                        "--results", tmp], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        runs = sorted(Path(tmp).glob("*/*/*/seed*/metrics.json"))
        rows, compute = [], 0.0
        for p in runs:
            m = json.loads(p.read_text())
            c = m["train_time_s"] + m["eval_time_s"]
            compute += c
            rows.append([p.parent.parent.name, m["setup_time_s"], m["train_time_s"],
                         m["eval_time_s"], m["wall_time_s"], m["images_per_s"]])
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ablate", "run", args.study, "--scale", args.scale,
                        "--results", tmp], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        rerun = time.perf_counter() - t0
    overhead = wall - compute
    print(f"Machine: {machine()}\n")
    print(f"Study {Path(args.study).stem} at scale {args.scale}: {len(runs)} runs\n")
    print(table(["step", "setup s", "train s", "eval s", "worker wall s", "img/s"], rows))
    print()
    print(table(["driver wall s", "compute s", "overhead s", "overhead / step s",
                 "overhead share", "re-run (all skipped) s"],
                [[wall, compute, overhead, overhead / len(runs), f"{100 * overhead / wall:.1f}%",
                  rerun]]))


if __name__ == "__main__":
    main()
