"""The training worker: ``torchrun … -m ablate.worker RUN_DIR/config.yaml``.

Hydra-free: it reads the resolved config the driver wrote. Every rank trains; the main rank
(rank 0 on one node; the first rank of node 0 on several) writes ``log.csv``,
``checkpoints/last.pt`` and finally ``metrics.json`` (atomically). Any failure once the run
folder is locked — in setup, training or evaluation — is a result too: ``metrics.json`` with
status ``failed`` and the reason (the traceback goes to the log); only an interruption
(Ctrl-C, SIGTERM, a kill) leaves none, so that the next ``ablate run`` resumes. An interrupted
run resumes from its last checkpoint when the config hash matches: the main rank reads it and
sends it to the others, so other nodes need not see the run folder, and a checkpoint written by
another number of processes resumes too (same global batch; see ``engine.dist``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf

from ablate.config import config_hash, matches
from ablate.engine import run_io
from ablate.engine.dist import (DistInfo, all_gather_object, barrier, broadcast_object, cleanup,
                                init_distributed)
from ablate.engine.setup import build
from ablate.engine.trainer import Diverged, NonFiniteLoss, Trainer
from ablate.errors import AblateError

PRIMARY = {"classification": "top1", "yolo": "map", "rcnn": "map"}  # metrics.json primary_metric


def primary_metric(cfg: Any) -> str:
    """The run's headline metric: the task's, or AR at the largest N for an RPN's proposals."""
    kw = cfg.model.get("task_kwargs") or {}
    if cfg.model.task == "rcnn" and kw.get("metric") == "proposals":
        from ablate.eval.proposal_recall import PROPOSAL_NUMS

        return f"ar{max(int(n) for n in kw.get('proposal_nums', PROPOSAL_NUMS))}"
    return PRIMARY.get(cfg.model.task, "top1")


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _device_name(dist: DistInfo) -> str:
    if dist.device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dist.device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when its launcher dies. torchrun starts workers in a
    session of their own, so a hard-killed `ablate run` would otherwise leave a worker training
    and writing into the run folder while the next `ablate run` resumes it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() == 1:  # the launcher is already gone
        sys.exit(1)


@contextlib.contextmanager
def run_lock(run_dir: Path, dist: DistInfo) -> Iterator[None]:
    """One worker group per run folder (rank 0 holds an exclusive lock)."""
    if not dist.is_main:
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(run_dir / ".run.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW
                           | os.O_CLOEXEC, 0o666), "r+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AblateError(f"{run_dir} is being trained by another worker") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run(config_path: str | Path) -> dict[str, Any]:
    """Train the run described by ``config_path``; return (and, on rank 0, write) its metrics."""
    config_path = Path(config_path)
    run_dir = config_path.parent
    cfg = OmegaConf.load(config_path)
    chash = config_hash(cfg)
    dist = init_distributed(cfg.launcher.get("device", "auto"))
    hashes = all_gather_object(chash)
    if len(set(hashes)) > 1:  # e.g. nodes that started different steps
        raise AblateError(f"the processes of this run read different configs ({hashes}); "
                          "every node must run the same step of the same study")
    with run_lock(run_dir, dist):
        return _run(cfg, run_dir, chash, dist)


def exception_reason(e: BaseException) -> str:
    """One line for ``metrics.json`` and the console: the message of a user error, else the
    exception's type and the first line of its message."""
    if isinstance(e, AblateError):
        return str(e)
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__


def _run(cfg: Any, run_dir: Path, chash: str, dist: DistInfo) -> dict[str, Any]:
    started = time.time()
    built = trainer = None
    setup_time, resumed_from = 0.0, None
    status, reason, metrics, unexpected = "completed", None, {}, False
    diverged: int | None = None
    try:
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        if dist.device.type == "cpu":
            # fp32 training drifts into denormal numbers, which x86 CPUs process ~2-10× slower
            # (measured: 627 → 1469 img/s for the tiny ResNet after 40 steps); flush them.
            torch.set_flush_denormal(True)
        if cfg.train.get("threads"):
            torch.set_num_threads(int(cfg.train.threads))
        built = build(cfg, dist)
        setup_time = time.time() - started
        trainer = Trainer(built, dist, run_dir, seed=cfg.seed, eval_every=cfg.train.eval_every,
                          log_every=cfg.train.log_every, extra_state={"config_hash": chash},
                          diverge_factor=cfg.train.get("diverge_factor"))
        ckpt = run_io.load_checkpoint(trainer.ckpt_path) \
            if dist.is_main and trainer.ckpt_path.is_file() else None
        ckpt = broadcast_object(ckpt, dist.main_rank)
        if ckpt is not None:
            if not matches(ckpt.get("config_hash"), cfg):
                raise AblateError(f"{trainer.ckpt_path} belongs to another config "
                                  f"({ckpt.get('config_hash')} ≠ {chash}); refusing to resume")
            trainer.load_state_dict(ckpt)
            resumed_from = trainer.state.epoch
            if dist.is_main:
                run_io.emit("resume", epoch=resumed_from)
        metrics = trainer.fit()
    except Diverged as e:
        status, reason, diverged = "failed", str(e), e.iteration
    except NonFiniteLoss as e:
        status, reason = "failed", str(e)
    except Exception as e:  # noqa: BLE001  (any failure is recorded as the run's result)
        status, reason, unexpected = "failed", exception_reason(e), True
        traceback.print_exc()
    finally:
        if built is not None:
            close_loaders(built.train_loader, built.eval_loader)
    history = trainer.history if trainer is not None else []
    last = history[-1] if history else {}
    train_time = trainer.train_time if trainer is not None else 0.0
    result = {
        "schema_version": run_io.SCHEMA_VERSION,
        "status": status,
        "reason": reason,
        "task": cfg.model.task,
        "primary_metric": primary_metric(cfg),
        "metrics": {**metrics, "train_loss": last.get("train_loss")},
        "seed": int(cfg.seed),
        "epochs": int(trainer.state.epoch) if trainer is not None else 0,
        "iterations": int(trainer.state.iteration) if trainer is not None else 0,
        "wall_time_s": round(time.time() - started, 3),
        "setup_time_s": round(setup_time, 3),
        "train_time_s": round(train_time, 3),
        "eval_time_s": round(trainer.eval_time, 3) if trainer is not None else 0.0,
        "data_wait_s": round(trainer.data_wait, 3) if trainer is not None else 0.0,
        "data_wait_share": round(trainer.data_wait / train_time, 4) if train_time else 0.0,
        "images_per_s": round(trainer.images / train_time, 1) if train_time else 0,
        "precision": built.precision.name if built is not None else None,
        "tricks": {t.name: t.describe() for t in built.tricks} if built is not None else {},
        "config_hash": chash,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "device": _device_name(dist),
        "world_size": dist.world_size,
        "resumed_from_epoch": resumed_from,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if diverged is not None:
        result["diverged"] = diverged  # the iteration: a result, the study goes on
    if dist.is_main:
        run_io.atomic_write_json(run_dir / "metrics.json", result)
        run_io.emit("done", status=status, reason=reason, metrics=result["metrics"])
    if not unexpected:  # after an error on one rank the others may never get here
        barrier()
    return result


def close_loaders(*loaders: Any) -> None:
    """Shut down DataLoader workers (a dict holds one loader per eval size)."""
    import gc

    for loader in loaders:
        for one in (loader.values() if isinstance(loader, dict) else [loader]):
            if hasattr(one, "close"):
                one.close()
    gc.collect()  # their queues' finalizers unregister the semaphores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ablate.worker")
    parser.add_argument("config", help="resolved config.yaml inside the run folder")
    args = parser.parse_args(argv)
    _die_with_parent()
    try:
        result = run(args.config)
    except AblateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        cleanup()
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
