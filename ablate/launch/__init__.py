"""Launchers start one run (a resolved ``config.yaml`` in its run folder) and wait for it.

- ``local``: ``torchrun --standalone --nproc-per-node N -m ablate.worker config.yaml`` (CPU/gloo
  here, CUDA/nccl where GPUs exist). With ``mode: auto`` a single-process run is instead forked
  from the driver, which has imported torch once: starting torchrun's agent and a fresh worker
  interpreter costs ~4–5 s per step on a small CPU (two torch imports), more than the 5 s
  budget of harness overhead per step. The worker code and its environment contract are the
  same either way (no RANK/WORLD_SIZE = one process). ``mode: torchrun`` always uses torchrun.
  Output goes to ``stdout.log``; progress lines are handed to a callback.
- ``inprocess``: calls the worker in this process (tests; one process only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

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


def torchrun_command(config: Path, nproc: int, module: str = "ablate.worker") -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", module, str(config)]


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


def _die_with(pid: int) -> None:
    """Leave as soon as process ``pid`` (the driver) is gone, however it died.

    A forked worker's parent is the forkserver, not the driver, and the server outlives a killed
    driver: each child holds the server's liveness pipe, so neither ever sees the other end
    close and ``PR_SET_PDEATHSIG`` never fires. A thread waits on a pidfd of the driver instead
    (polling once a second where pidfds are missing). The checkpoint of the last finished epoch
    stays; the run resumes from it.
    """
    import threading
    import time

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            import select

            select.select([fd], [], [])
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
        os._exit(143)

    threading.Thread(target=watch, name="die-with-driver", daemon=True).start()


def _forked_worker(config: str, driver_pid: int | None = None) -> None:
    """Child side of a forkserver launch: output into the run's stdout.log, run the worker."""
    import traceback

    if driver_pid is not None:
        _die_with(driver_pid)

    fd = os.open(Path(config).parent / "stdout.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    code = 1
    try:
        from ablate.worker import main

        code = main([config])
    except BaseException:  # noqa: BLE001  (report anything, then leave)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


_FORKSERVER = None


def _forkserver():
    """A multiprocessing forkserver with torch and the worker preloaded (started once).

    The server is a fresh interpreter that only imports, never runs torch ops, so forking from
    it is safe (forking a process whose OpenMP pool is running can deadlock the child).
    """
    global _FORKSERVER
    if _FORKSERVER is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        # torch.optim imports torch._dynamo lazily: ~1 s per fresh process, so preload it too.
        ctx.set_forkserver_preload(["torch", "torch._dynamo", "ablate.worker"])
        _FORKSERVER = ctx
    return _FORKSERVER


def prestart() -> None:
    """Start the forkserver now (its imports take seconds), so that it warms up on another core
    while the driver composes and checks the study."""
    from multiprocessing import forkserver

    _forkserver()
    forkserver.ensure_running()


def run_forked(config: Path, on_line: OnLine | None = None) -> int:
    """Run one worker process forked from a preloaded server; follow its stdout.log."""
    import time

    log_path = config.parent / "stdout.log"
    log_path.touch()
    with open(log_path) as log:
        log.seek(0, os.SEEK_END)
        proc = _forkserver().Process(target=_forked_worker, args=(str(config), os.getpid()))
        proc.start()
        try:
            partial = ""
            while True:
                alive = proc.is_alive()
                chunk = log.read()
                if chunk:
                    lines = (partial + chunk).split("\n")
                    partial = lines.pop()
                    for line in lines:
                        if on_line is not None:
                            on_line(line + "\n")
                elif not alive:
                    break
                else:
                    time.sleep(0.05)
            proc.join()
            return proc.exitcode if proc.exitcode is not None else 1
        except BaseException:  # Ctrl-C or an error here: stop the worker, keep its checkpoint
            if proc.is_alive():
                proc.terminate()
                proc.join(30)
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


def launch(config: Path, launcher: str, nproc: int, on_line: OnLine | None = None,
           mode: str = "auto") -> int:
    """Start the run in ``config``'s folder and wait; returns the worker's exit code."""
    if launcher == "local":
        if mode not in ("auto", "torchrun"):
            raise AblateError(f"launcher.mode must be 'auto' or 'torchrun', got '{mode}'")
        if nproc == 1 and mode == "auto":
            return run_forked(config, on_line)
        return run_local(config, nproc, on_line)
    if launcher == "inprocess":
        if nproc != 1:
            raise AblateError("the inprocess launcher runs one process; use launcher=local")
        return run_inprocess(config, on_line)
    raise AblateError(f"unknown launcher '{launcher}' (known: local, inprocess)")
