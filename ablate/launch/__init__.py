"""Launchers start one run (a resolved ``config.yaml`` in its run folder) and wait for it.

- ``local``: ``torchrun --standalone --nproc-per-node N -m ablate.worker config.yaml`` (CPU/gloo
  here, CUDA/nccl where GPUs exist). Its output goes to ``stdout.log`` and progress lines are
  handed to a callback.
- ``inprocess``: calls the worker in this process (tests; one process only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from ablate.engine.run_io import PROGRESS_PREFIX
from ablate.errors import AblateError

OnLine = Callable[[str], None]


def resolve_nproc(nproc: str | int) -> int:
    """``auto`` = the visible GPUs, else 1."""
    if str(nproc) == "auto":
        import torch

        return max(torch.cuda.device_count(), 1)
    try:
        n = int(nproc)
    except ValueError:
        raise AblateError(f"nproc must be a positive integer or 'auto', got '{nproc}'") from None
    if n < 1:
        raise AblateError(f"nproc must be a positive integer or 'auto', got '{nproc}'")
    return n


def torchrun_command(config: Path, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "ablate.worker", str(config)]


def run_local(config: Path, nproc: int, on_line: OnLine | None = None) -> int:
    """Run torchrun, tee its output into ``stdout.log``; return its exit code."""
    log_path = config.parent / "stdout.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "a") as log:
        proc = subprocess.Popen(torchrun_command(config, nproc), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if on_line is not None:
                    on_line(line)
            return proc.wait()
        except BaseException:  # Ctrl-C or an error here: torchrun stops its workers on SIGTERM
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            raise


def run_inprocess(config: Path, on_line: OnLine | None = None) -> int:
    import contextlib
    import io

    from ablate.worker import run

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = run(config)
    (config.parent / "stdout.log").open("a").write(buf.getvalue())
    if on_line is not None:
        for line in buf.getvalue().splitlines(keepends=True):
            on_line(line)
    return 0 if result["status"] == "completed" else 1


def launch(config: Path, launcher: str, nproc: int, on_line: OnLine | None = None) -> int:
    if launcher == "local":
        return run_local(config, nproc, on_line)
    if launcher == "inprocess":
        if nproc != 1:
            raise AblateError("the inprocess launcher runs one process; use launcher=local")
        return run_inprocess(config, on_line)
    raise AblateError(f"unknown launcher '{launcher}' (known: local, inprocess)")


def is_progress(line: str) -> bool:
    return line.startswith(PROGRESS_PREFIX)
