"""Runs with the same config are trained once and shared.

The config hash (``ablate.config.config_hash``) covers everything a run computes and nothing
about where or how it executes, so two runs with the same hash give the same result:

- a step whose hash matches a completed run anywhere under the results root
  (``<root>/<study>/<scale>/<step>/seed<k>/``: the same baseline in another study, or in
  another scale whose settings coincide) is not trained again;
- within one ``ablate run``, the first of several steps with the same hash runs and the others
  wait for it, then share it.

Sharing makes the step's own run folder a complete run: its own ``config.yaml`` and
``overrides.yaml``, the source's other files hard-linked (copied across filesystems) —
checkpoints, ``log.csv``, ``stdout.log`` — and the source's ``metrics.json`` with
``shared_from`` added, written last. From then on it is an ordinary completed run: skipped on
re-runs, unaffected when the source is later replaced (``--force`` moves it aside) or deleted.

Only steps that would start from scratch (``run``) are shared: an interrupted run resumes its
own checkpoint, a failed one is retried, and ``--force`` retrains.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ablate.engine.run_io import atomic_write_text

COMPLETED = "completed"
OWN_FILES = {"config.yaml", "overrides.yaml", "inputs.json", "metrics.json", "slurm_job.json"}


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def completed_runs(results_root: Path) -> dict[str, Path]:
    """``config hash → run folder`` of every completed study run under ``results_root`` (the
    first in path order where several have the same hash)."""
    out: dict[str, Path] = {}
    for m in sorted(Path(results_root).glob("*/*/*/seed*/metrics.json")):
        run_dir = m.parent
        if any(part.startswith(".") for part in run_dir.relative_to(results_root).parts):
            continue  # .replaced/ and other hidden folders
        metrics = read_metrics(run_dir)
        if metrics and metrics.get("status") == COMPLETED and metrics.get("config_hash"):
            out.setdefault(metrics["config_hash"], run_dir)
    return out


def mark_shared(plans: Iterable[Any], results_root: Path) -> None:
    """Set ``action = "share"`` and ``source`` (a completed run folder, or an earlier plan of
    this list) on every plan that would run a config that is done or about to be done."""
    done = completed_runs(results_root)
    owners: dict[str, Any] = {}
    for p in plans:
        if p.action in ("run", "share"):
            src = done.get(p.hash)
            if src is not None and src.resolve() != p.run_dir.resolve():
                p.action, p.source, p.reason = "share", src, f"same config as {src}"
            elif p.hash in owners:
                owner = owners[p.hash]
                p.action, p.source = "share", owner
                p.reason = f"same config as {owner.run_dir}, which runs first"
            else:
                p.action, p.source, p.reason = "run", None, p.reason if p.action == "run" else ""
                owners[p.hash] = p
        elif p.action in ("resume", "rerun"):
            owners.setdefault(p.hash, p)


def source_dir(plan: Any) -> Path:
    return plan.source if isinstance(plan.source, Path) else plan.source.run_dir


def link_results(source: Path, run_dir: Path) -> dict[str, Any]:
    """Fill ``run_dir`` (which already holds its own config) with ``source``'s results; returns
    the metrics written."""
    for f in sorted(source.rglob("*")):
        rel = f.relative_to(source)
        if (not f.is_file() or rel.parts[0] in ("slurm",) or f.name in OWN_FILES
                or any(part.startswith(".") for part in rel.parts)):
            continue
        dest = run_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)
        try:
            os.link(f, dest)
        except OSError:
            shutil.copy2(f, dest)
    metrics = {**(read_metrics(source) or {}), "shared_from": str(source)}
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
