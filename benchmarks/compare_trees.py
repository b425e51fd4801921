"""One benchmark script run in two source trees in turn (old, new, new, old, …), so that a
restructure is timed against the commit before it on the same machine at the same time.

Each run's Markdown table rows whose first cell is ``ablate``, a precision (``fp32 …``,
``bf16 …``) or an epoch number give a figure (the row's second cell, img/s); the report is
the median of each figure per tree and the median of the per-round new/old ratios (min–max).

Usage: python benchmarks/compare_trees.py OLD_TREE [--rounds 3] -- SCRIPT [ARGS…]
       e.g. OLD_TREE = a ``git worktree add /tmp/old <commit>`` of the commit before
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

NEW = Path(__file__).resolve().parents[1]
ROW = re.compile(r"^\| (ablate|fp32[^|]*|bf16[^|]*|fp16[^|]*|\d+) \| ([\d,.]+) \|", re.M)


def figures(tree: Path, script: list[str]) -> dict[str, float]:
    """Run ``script`` with ``tree`` first on the import path; its table figures."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(tree / script[0]), *script[1:]], cwd=tree,
                         env=env, capture_output=True, text=True, check=True).stdout
    rows = {}
    for first, value in ROW.findall(out):
        key = f"epoch {first}" if first.isdigit() else first.strip()
        rows.setdefault(key, float(value.replace(",", "")))
    if not rows:
        raise SystemExit(f"no figure in the output of {' '.join(script)} in {tree}:\n{out}")
    return rows


def main() -> None:
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("old", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv[:cut])
    script = argv[cut + 1:]
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for side in order:
            runs[side].append(figures(args.old.resolve() if side == "old" else NEW, script))
    print(f"{machine()}\n\n`{' '.join(script)}`, {args.rounds} rounds (old, new alternating)\n")
    print("| figure | old | new | new / old (min–max) |\n|---|---:|---:|---|")
    for key in runs["new"][0]:
        old = [r[key] for r in runs["old"]]
        new = [r[key] for r in runs["new"]]
        ratios = [n / o for n, o in zip(new, old)]
        print(f"| {key} | {statistics.median(old):,.0f} | {statistics.median(new):,.0f} | "
              f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
