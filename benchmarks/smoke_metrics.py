"""Every proxy study (``fmnist_*``, ``fscenes_*``) at ``--scale smoke``: run them, then write
each run's metrics to one JSON file; or compare two such files. A restructure proves it changed
no number by comparing the files of the commit before it and after it, made on one machine.

Usage: python benchmarks/smoke_metrics.py run OUT.json [--tree DIR] [--results DIR]
                                                    [--studies GLOB …]
       python benchmarks/smoke_metrics.py compare BEFORE.json AFTER.json

``--tree`` runs the studies of another source tree with its code (e.g. a ``git worktree`` of
the commit before), default this one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collect(results: Path) -> dict[str, dict[str, float]]:
    """``study/scale/step/seed`` → the ``metrics`` of its metrics.json (no timings)."""
    out = {}
    for f in sorted(results.rglob("metrics.json")):
        doc = json.loads(f.read_text())
        out[str(f.parent.relative_to(results))] = {"status": doc["status"], **doc["metrics"]}
    return out


def run(args: argparse.Namespace) -> None:
    tree = Path(args.tree).resolve() if args.tree else ROOT
    env = {**os.environ, "PYTHONPATH": str(tree)}
    studies = sorted(p for pattern in args.studies for p in (tree / "studies").glob(pattern))
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(args.results or tmp)
        t0 = time.perf_counter()
        for study in studies:
            subprocess.run([sys.executable, "-m", "ablate", "run", str(study), "--scale", "smoke",
                            "--results", str(results)], check=True, cwd=tree, env=env,
                           stdout=subprocess.DEVNULL)
        metrics = collect(results)
    Path(args.out).write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n")
    print(f"{len(studies)} studies, {len(metrics)} runs in {time.perf_counter() - t0:.0f} s "
          f"-> {args.out}")


def compare(args: argparse.Namespace) -> None:
    before, after = (json.loads(Path(p).read_text()) for p in (args.before, args.after))
    differ = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    for k in differ:
        print(f"differs: {k}: {before.get(k)} -> {after.get(k)}")
    print(f"{len(before)} runs before, {len(after)} after, {len(differ)} differ")
    sys.exit(1 if differ else 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--tree")
    r.add_argument("--results")
    r.add_argument("--studies", nargs="+", default=["fmnist_*.yaml", "fscenes_*.yaml"])
    c = sub.add_parser("compare")
    c.add_argument("before")
    c.add_argument("after")
    args = ap.parse_args()
    (run if args.cmd == "run" else compare)(args)


if __name__ == "__main__":
    main()
