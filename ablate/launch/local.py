"""Processes on this machine, and the in-process launcher.

- ``local``: ``torchrun --standalone --nproc-per-node N -m ablate.worker config.yaml`` (CPU/gloo
  here, CUDA/nccl where GPUs exist). With ``mode: auto`` a single-process run is instead forked
  from a server that has imported torch once: starting torchrun's agent and a fresh worker
  interpreter costs ~4–5 s per step on a small CPU (two torch imports), more than the 5 s
  budget of harness overhead per step. The worker code and its environment contract are the
  same either way (no RANK/WORLD_SIZE = one process). ``mode: torchrun`` always uses torchrun,
  and so does a run given GPUs of its own (``--parallel``): only a fresh process reliably
  honours ``CUDA_VISIBLE_DEVICES``.
  Output goes to ``stdout.log``; progress lines are handed to a callback.
- ``inprocess``: calls the worker in this process (tests; one process, one run at a time).

Every function here blocks until its run ends and may be called from several threads at once
(``ablate run --parallel``); ``env`` adds variables to the worker's environment
(``CUDA_VISIBLE_DEVICES``, ``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ablate.engine.run_io import open_log
from ablate.launch._proc import Lines, OnLine, tracked


def torchrun_command(config: Path, nproc: int, module: str = "ablate.worker") -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", module, str(config)]


def run_command(cmd: Sequence[str], log_path: Path, on_line: OnLine | None = None,
                env: Mapping[str, str] | None = None) -> int:
    """Run ``cmd`` (torchrun), tee its output into ``log_path``; return its exit code."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open_log(log_path) as log:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=full_env)
        try:
            with tracked(lambda: proc.send_signal(signal.SIGTERM)):
                assert proc.stdout is not None
                for line in proc.stdout:
                    log.write(line.encode())
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


def run_local(config: Path, nproc: int, on_line: OnLine | None = None,
              env: Mapping[str, str] | None = None) -> int:
    """``torchrun --standalone`` with ``nproc`` workers; output into the run's ``stdout.log``."""
    return run_command(torchrun_command(config, nproc), config.parent / "stdout.log", on_line, env)


def _die_with(pid: int) -> None:
    """Leave as soon as process ``pid`` (the driver) is gone, however it died.

    A forked worker's parent is the forkserver, not the driver, and the server outlives a killed
    driver: each child holds the server's liveness pipe, so neither ever sees the other end
    close and ``PR_SET_PDEATHSIG`` never fires. A thread waits on a pidfd of the driver instead
    (polling once a second where pidfds are missing), then kills the worker's process group —
    itself and what it started: DataLoader workers, whose own liveness check watches their
    forkserver and would not notice. The checkpoint of the last finished epoch stays; the run
    resumes from it.
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
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-driver", daemon=True).start()


def _forked_worker(config: str, driver_pid: int | None = None,
                   env: dict[str, str] | None = None) -> None:
    """Child side of a forkserver launch: output into the run's stdout.log, run the worker."""
    import traceback

    os.setpgrp()  # a group of its own: stopping the run stops everything it started
    if driver_pid is not None:
        _die_with(driver_pid)
    if env:
        # the server imported torch but never touched CUDA, so CUDA_VISIBLE_DEVICES still counts
        os.environ.update(env)
        if env.get("OMP_NUM_THREADS"):
            import torch

            torch.set_num_threads(int(env["OMP_NUM_THREADS"]))

    log = open_log(Path(config).parent / "stdout.log")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    log.close()
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


def _stop_group(proc: Any, grace: float = 30.0) -> None:
    """SIGTERM the worker's process group (the worker and its DataLoader workers), SIGKILL what
    is left after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # gone, or not yet its own group
            if proc.is_alive():
                proc.terminate()
        proc.join(wait)
        if not proc.is_alive():
            break


def _reap_group(pid: int) -> None:
    """Kill whatever is left of a finished worker's group (children of a worker that ended on
    an exception)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_forked(config: Path, on_line: OnLine | None = None,
               env: Mapping[str, str] | None = None) -> int:
    """Run one worker process forked from a preloaded server; follow its stdout.log."""
    log_path = config.parent / "stdout.log"
    open_log(log_path).close()
    with os.fdopen(os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as log:
        log.seek(0, os.SEEK_END)
        proc = _forkserver().Process(target=_forked_worker,
                                     args=(str(config), os.getpid(), dict(env or {})))
        proc.start()
        lines = Lines(on_line)
        try:
            with tracked(lambda: _stop_group(proc)):
                while True:
                    alive = proc.is_alive()
                    chunk = log.read()
                    if chunk:
                        lines.feed(chunk)
                    elif not alive:
                        break
                    else:
                        proc.join(0.05)  # wakes at once when the worker ends
                proc.join()
                _reap_group(proc.pid)
                return proc.exitcode if proc.exitcode is not None else 1
        except BaseException:  # Ctrl-C or an error here: stop the worker, keep its checkpoint
            if proc.is_alive():
                _stop_group(proc)
            _reap_group(proc.pid)
            raise


def run_inprocess(config: Path, on_line: OnLine | None = None) -> int:
    import contextlib
    import io

    from ablate.worker import run

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):  # as the log of a
        result = run(config)                                            # worker process
    with open_log(config.parent / "stdout.log") as log:
        log.write(buf.getvalue().encode())
    if on_line is not None:
        for line in buf.getvalue().splitlines(keepends=True):
            on_line(line)
    return 0 if result["status"] == "completed" else 1
