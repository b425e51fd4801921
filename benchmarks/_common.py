"""Shared helpers for the benchmark scripts: machine description, Markdown tables, paired
ratios, per-item worker cost."""

from __future__ import annotations

import os
import platform
import statistics
import time


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")


def table(head: list[str], rows: list[list[object]]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) and abs(v) < 1e3 else (  # noqa: E731
        f"{v:,.0f}" if isinstance(v, float) else str(v))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def paired_ratio(other: list[float], ours: list[float]) -> str:
    """Median over rounds of the round's time ratio other / ours (= our speed / theirs), with
    its min–max: the sides of one round share the machine's state, so paired ratios are
    steadier than a ratio of medians on a shared machine."""
    r = [o / a for o, a in zip(other, ours)]
    return f"{statistics.median(r):.2f}× ({min(r):.2f}–{max(r):.2f})"


def item_costs(datasets: dict, items: int, rounds: int) -> dict[str, float]:
    """Median seconds per item of indexing each dataset in one thread, as one DataLoader worker
    does (``items`` items per dataset and round, the datasets alternated within each round)."""
    import torch

    times: dict[str, list[float]] = {k: [] for k in datasets}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(rounds):
            for name, ds in datasets.items():
                n = min(items, len(ds))
                t = time.perf_counter()
                for i in range(n):
                    ds[i]
                times[name].append((time.perf_counter() - t) / n)
    finally:
        torch.set_num_threads(threads)
    return {k: statistics.median(v) for k, v in times.items()}


class CachedLoader:
    """The loader interface (``set_epoch``, ``len``, iteration) over batches held in memory or
    on the device, so that only the training step is timed."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)
