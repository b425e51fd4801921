"""Progress display for ``ablate run``: rich bars on a terminal, plain lines otherwise.

Workers print one JSON event per line (``@ablate {...}``); this module turns them into a bar
(step k/n, epoch, loss, lr, img/s, ETA) or into one plain line per epoch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

from ablate.engine.run_io import PROGRESS_PREFIX


class StudyProgress:
    def __init__(self, total_runs: int, console: Console | None = None) -> None:
        self.console = console or Console(stderr=False)
        self.total = total_runs
        self.live = self.console.is_terminal
        self.progress: Progress | None = None
        self.task: Any = None
        self.label = ""

    def __enter__(self) -> "StudyProgress":
        if self.live:
            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=self.console)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def start_run(self, index: int, step_id: str, seed: int, action: str) -> None:
        self.label = f"[{index}/{self.total}] {step_id} seed {seed}"
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(self.label, total=None, info=action)
        else:
            print(f"{self.label}: {action}", flush=True)

    def line(self, line: str) -> None:
        if not line.startswith(PROGRESS_PREFIX):
            return
        try:
            ev = json.loads(line[len(PROGRESS_PREFIX):])
        except json.JSONDecodeError:
            return
        kind = ev.get("event")
        if kind == "step" and self.progress is not None:
            done = (ev["epoch"] - 1) * ev["steps"] + ev["step"]
            self.progress.update(self.task, completed=done, total=ev["epochs"] * ev["steps"],
                                 info=f"epoch {ev['epoch']}/{ev['epochs']} loss {ev['loss']:.3f}"
                                      f" lr {ev['lr']:.4g} {ev['ips']:.0f} img/s")
        elif kind == "epoch":
            metrics = " ".join(f"{k} {ev[k]:.2f}" for k in ("top1", "top5", "map") if k in ev)
            text = (f"epoch {ev['epoch']}/{ev['epochs']} loss {ev['train_loss']:.3f} "
                    f"lr {ev['lr']:.4g} {ev['images_per_s']:.0f} img/s "
                    f"data {100 * ev.get('data_wait_share', 0.0):.0f}% {metrics}")
            if self.progress is not None:
                self.progress.update(self.task, info=text)
            else:
                print(f"{self.label}: {text}", flush=True)
        elif kind == "resume":
            self.note(f"resuming after epoch {ev['epoch']}")

    def note(self, text: str) -> None:
        if self.progress is not None:
            self.progress.console.print(f"{self.label}: {text}")
        else:
            print(f"{self.label}: {text}", file=sys.stdout, flush=True)
