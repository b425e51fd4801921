"""``launcher=slurm``: every run is one SLURM job, submitted through submitit.

The job asks for ``nodes`` nodes with ``gpus_per_node`` GPUs each and starts one task (process)
per GPU (``--ntasks-per-node`` = GPUs per node; without GPUs, ``nproc`` tasks). No torchrun is
involved: ``srun`` starts the tasks, and each maps SLURM's view of itself (submitit's
``JobEnvironment``: global rank, local rank, number of tasks, node, the job's first host) onto
the worker's environment contract — RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT, ABLATE_NODE_RANK — and runs the worker in-process.

``ablate run`` waits for the job: it follows task 0's output (``<run>/slurm/<job>_0_log.out``,
which carries the worker's ``@ablate`` progress lines) into the run's ``stdout.log`` and the
progress display, and records the job in ``<run>/slurm_job.json`` (id, config hash, how much of
the output it has copied). If ``ablate run`` stops (Ctrl-C, a lost login session) the job keeps
running; ``ablate run`` again re-attaches to a job that is still queued or running instead of
submitting another, and picks up a finished one's result. A preempted or timed-out job is
requeued by submitit (up to ``max_requeues`` times) and resumes from the run's last checkpoint.

``executor: local`` runs the same job function and files through submitit's local executor
(one machine, no SLURM): for trying the launcher, and for the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from submitit.helpers import Checkpointable

from ablate.engine.run_io import atomic_write_text, open_log
from ablate.errors import AblateError
from ablate.launch._proc import STOP, Lines, OnLine

RECORD = "slurm_job.json"
FOLDER = "slurm"  # submitit's files, inside the run folder (on the shared filesystem)
EXECUTORS = ("slurm", "local")
# sacct states of a job that is not over yet (UNKNOWN: sacct does not list it yet)
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "CONFIGURING",
          "COMPLETING", "SUSPENDED", "RESIZING", "READY", "PREEMPTED", "SIGNALING", "STAGE_OUT",
          "UNKNOWN"}
OWN_KEYS = ("name", "executor", "nproc", "device", "nodes", "gpus_per_node", "cpus_per_task",
            "mem_gb", "timeout_min", "partition", "account", "qos", "constraint", "job_name",
            "additional_parameters", "setup", "python", "master_port", "max_requeues", "poll_s")


# --- job settings -------------------------------------------------------------------------------

def tasks_per_node(cfg: Mapping[str, Any], nproc: int | str | None = None) -> int:
    """Processes per node: one per GPU (``gpus_per_node``), else ``nproc`` (``auto`` = 1)."""
    gpus = int(cfg.get("gpus_per_node") or 0)
    value = nproc if nproc is not None else cfg.get("nproc", "auto")
    if str(value) == "auto":
        return gpus or 1
    try:
        n = int(value)
    except ValueError:
        raise AblateError(f"nproc must be a positive integer or 'auto', got '{value}'") from None
    if n < 1:
        raise AblateError(f"nproc must be a positive integer or 'auto', got '{value}'")
    if gpus and n != gpus:
        raise AblateError(f"launcher=slurm starts one process per GPU: nproc {n} ≠ "
                          f"launcher.gpus_per_node {gpus} (set launcher.gpus_per_node={n})")
    return n


def job_parameters(cfg: Mapping[str, Any], ntasks: int, run_dir: Path,
                   devices: Sequence[int | str] | None = None) -> dict[str, Any]:
    """The parameters handed to submitit's executor (its own names: sbatch's for SLURM)."""
    unknown = sorted(set(cfg) - set(OWN_KEYS))
    if unknown:
        from ablate.errors import did_you_mean

        raise AblateError(f"launcher.{unknown[0]}: not a slurm launcher option"
                          f"{did_you_mean(unknown[0], OWN_KEYS)}; pass other sbatch options "
                          "through launcher.additional_parameters")
    gpus = int(cfg.get("gpus_per_node") or 0)
    timeout = int(cfg.get("timeout_min") or 60)
    extra = cfg.get("additional_parameters") or {}
    if not isinstance(extra, Mapping):
        raise AblateError("launcher.additional_parameters must be a mapping of sbatch option: "
                          "value, e.g. {mail-type: END}")
    if cfg.get("executor", "slurm") == "local":
        if int(cfg.get("nodes") or 1) != 1:
            raise AblateError("launcher.executor=local runs on this machine: launcher.nodes "
                              "must be 1")
        params: dict[str, Any] = {"timeout_min": timeout, "tasks_per_node": ntasks,
                                  "gpus_per_node": gpus, "stderr_to_stdout": True}
        if devices is not None and all(str(d).isdigit() for d in devices):
            params["visible_gpus"] = [int(d) for d in devices]
        if cfg.get("setup"):
            params["setup"] = list(cfg["setup"])
        return params
    from submitit.slurm.slurm import _convert_mem

    params = {"job_name": cfg.get("job_name") or f"ablate-{run_dir.parent.name}-{run_dir.name}",
              "time": timeout, "nodes": int(cfg.get("nodes") or 1), "ntasks_per_node": ntasks,
              "stderr_to_stdout": True}
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("cpus_per_task", "partition", "account", "qos", "constraint"):
        if cfg.get(key) is not None:
            params[key] = cfg[key]
    if cfg.get("mem_gb"):
        params["mem"] = _convert_mem(float(cfg["mem_gb"]))
    if extra:
        params["additional_parameters"] = dict(extra)
    if cfg.get("setup"):
        params["setup"] = list(cfg["setup"])
    return params


def sbatch_lines(cfg: Mapping[str, Any], ntasks: int, run_dir: Path) -> list[str]:
    """The ``#SBATCH`` lines of the job's batch script, exactly as submitit writes them."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = job_parameters(cfg, ntasks, run_dir)
    try:
        text = _make_sbatch_string(command="", folder=run_dir / FOLDER, **params)
    except (TypeError, ValueError) as e:
        raise AblateError(f"launcher=slurm: {e}") from None
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def check(cfg: Mapping[str, Any], ntasks: int, run_dir: Path | None = None,
          strict: bool = True) -> None:
    """Every setting is usable (``strict``: and this machine can submit)."""
    executor = cfg.get("executor", "slurm")
    if executor not in EXECUTORS:
        raise AblateError(f"launcher.executor must be one of {', '.join(EXECUTORS)}, "
                          f"got '{executor}'")
    run_dir = run_dir or Path("run")
    if executor == "slurm":
        sbatch_lines(cfg, ntasks, run_dir)
        if strict and shutil.which("sbatch") is None:
            raise AblateError("launcher=slurm: no `sbatch` here: submit from a SLURM login "
                              "node (launcher.executor=local runs the same jobs on this "
                              "machine)")
    else:
        job_parameters(cfg, ntasks, run_dir)


def describe(cfg: Mapping[str, Any], ntasks: int, config: Path | None = None) -> str:
    run_dir = config.parent if config is not None else Path("run")
    if cfg.get("executor", "slurm") == "local":
        p = job_parameters(cfg, ntasks, run_dir)
        return (f"submitit local executor: tasks_per_node={p['tasks_per_node']} "
                f"gpus_per_node={p['gpus_per_node']} timeout_min={p['timeout_min']} "
                f"(files in {run_dir / FOLDER})")
    return "\n".join(["one SLURM job (submitit), sbatch settings:",
                      *sbatch_lines(cfg, ntasks, run_dir)])


# --- inside the job -----------------------------------------------------------------------------

def dist_env(job_env: Any, master_port: int | None = None) -> dict[str, str]:
    """The worker's environment (``engine.dist``) from submitit's ``JobEnvironment``."""
    port = master_port or os.environ.get("MASTER_PORT") or \
        20000 + int(hashlib.sha256(str(job_env.job_id).encode()).hexdigest(), 16) % 40000
    local = job_env.cluster == "local"
    return {"RANK": str(job_env.global_rank), "WORLD_SIZE": str(job_env.num_tasks),
            "LOCAL_RANK": str(job_env.local_rank),
            "LOCAL_WORLD_SIZE": str(job_env.num_tasks // max(job_env.num_nodes, 1)),
            "MASTER_ADDR": "127.0.0.1" if local else job_env.hostnames[0],
            "MASTER_PORT": str(port), "ABLATE_NODE_RANK": str(job_env.node)}


class WorkerJob(Checkpointable):
    """What each task of the job runs. Checkpointable: on preemption or time-out submitit
    requeues the job with the same arguments, and the worker resumes from ``last.pt``."""

    def __call__(self, config: str, master_port: int | None = None) -> int:
        import submitit

        os.environ.update(dist_env(submitit.JobEnvironment(), master_port))
        from ablate.worker import main

        return main([config])


# --- the driver's side --------------------------------------------------------------------------

_LOCAL_PROCS: dict[str, Any] = {}  # local executor: the controller processes started here


class Job:
    """A submitted job, found again from its id."""

    def __init__(self, executor: str, job_id: str, folder: Path) -> None:
        from submitit.core.utils import JobPaths

        self.executor, self.job_id, self.folder = executor, str(job_id), Path(folder)
        self.paths = JobPaths(self.folder, job_id=self.job_id, task_id=0)

    def state(self) -> str:
        if self.executor == "local":
            proc = _LOCAL_PROCS.get(self.job_id)
            if proc is not None:
                return "RUNNING" if proc.poll() is None else "FINISHED"
            return "RUNNING" if _local_controller_alive(int(self.job_id)) else "FINISHED"
        from submitit import SlurmJob

        state = (SlurmJob.watcher.get_state(self.job_id, mode="force") or "UNKNOWN").upper()
        if state == "UNKNOWN":  # not in sacct (not yet, or accounting is off): ask the queue
            state = _squeue_state(self.job_id)
        return state.split()[0]

    def active(self) -> bool:
        state = self.state()
        if state == "UNKNOWN" and self.paths.result_pickle.exists():
            return False
        return state in ACTIVE

    def exit_code(self, wait_s: float = 0.0) -> int:
        """The worker's exit code from submitit's result file (1 without one)."""
        from submitit.core.utils import pickle_load

        deadline = time.time() + wait_s
        while not self.paths.result_pickle.exists() and time.time() < deadline:
            time.sleep(0.5)  # a shared filesystem may show it late
        try:
            outcome, value = pickle_load(self.paths.result_pickle)
        except Exception:  # noqa: BLE001  (missing or unreadable: the job did not finish)
            return 1
        if outcome != "success":
            return 1
        return int(value) if isinstance(value, int) else 0

    def cancel(self) -> None:
        if self.executor == "local":
            proc = _LOCAL_PROCS.get(self.job_id)
            if proc is not None and proc.poll() is None:
                import signal

                proc.send_signal(signal.SIGINT)
        else:
            import subprocess

            subprocess.run(["scancel", self.job_id], check=False)


def _squeue_state(job_id: str) -> str:
    """The job's state from ``squeue``: ``GONE`` when the queue does not know it (any more),
    ``UNKNOWN`` when squeue cannot be asked."""
    import subprocess

    try:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "UNKNOWN"
    if out.returncode != 0:
        return "GONE" if "Invalid job id" in out.stderr else "UNKNOWN"
    return out.stdout.split()[0].upper() if out.stdout.split() else "GONE"


def _local_controller_alive(pid: int) -> bool:
    """A local executor's controller started by another `ablate run` (not a zombie, and still
    submitit's controller rather than a reused pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X") and b"submitit.local._local" in cmdline


def _write_record(run_dir: Path, record: Mapping[str, Any]) -> None:
    atomic_write_text(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def active_job(run_dir: Path) -> str | None:
    """The id of a job recorded in ``run_dir`` that is still queued or running, if any."""
    record = _read_record(run_dir)
    if not record:
        return None
    job = Job(record["executor"], record["job_id"], run_dir / record.get("folder", FOLDER))
    return job.job_id if job.active() else None


def submit(config: Path, cfg: Mapping[str, Any], ntasks: int,
           devices: Sequence[int | str] | None = None) -> tuple[Job, dict[str, Any]]:
    """Submit the run in ``config``'s folder as one job; record it in ``slurm_job.json``."""
    import submitit
    from omegaconf import OmegaConf

    from ablate.config import config_hash

    run_dir = config.parent
    executor = cfg.get("executor", "slurm")
    params = job_parameters(cfg, ntasks, run_dir, devices)
    folder = run_dir / FOLDER
    python = cfg.get("python") or None
    try:
        if executor == "local":
            ex: Any = submitit.LocalExecutor(folder=folder, python=python)
        else:
            ex = submitit.SlurmExecutor(folder=folder, python=python,
                                        max_num_timeout=int(cfg.get("max_requeues", 3) or 0))
        ex.update_parameters(**params)
    except (RuntimeError, ValueError) as e:
        raise AblateError(f"launcher=slurm: {str(e).splitlines()[0]}") from None
    try:
        job = ex.submit(WorkerJob(), str(config.resolve()), cfg.get("master_port"))
    except Exception as e:  # noqa: BLE001  (sbatch's own message says what is wrong)
        lines = [line for line in str(e).splitlines() if line.strip()]
        raise AblateError(f"{run_dir}: the job was not submitted: "
                          f"{lines[-1] if lines else type(e).__name__}") from None
    if executor == "local":
        _LOCAL_PROCS[str(job.job_id)] = job._process
    record = {"job_id": str(job.job_id), "executor": executor, "folder": FOLDER,
              "config_hash": config_hash(OmegaConf.load(config)),
              "submitted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "offset": 0}
    _write_record(run_dir, record)
    return Job(executor, job.job_id, folder), record


def attach(run_dir: Path, chash: str) -> tuple[Job, dict[str, Any]] | None:
    """The recorded job of this run and config if it is still queued or running."""
    record = _read_record(run_dir)
    if not record or record.get("config_hash") != chash:
        return None
    job = Job(record["executor"], record["job_id"], run_dir / record.get("folder", FOLDER))
    return (job, record) if job.active() else None


def follow(job: Job, record: dict[str, Any], run_dir: Path, on_line: OnLine | None = None,
           poll_s: float = 30.0) -> int:
    """Copy the job's output into ``stdout.log`` and ``on_line`` until it ends; its exit code.

    The output is read from where the last ``ablate run`` left off (``offset`` in the record),
    so a re-attached run's ``stdout.log`` has every line once.
    """
    src = job.paths.stdout
    offset = int(record.get("offset") or 0)
    lines = Lines(on_line)
    # SLURM: ask sacct every poll_s (often once the worker wrote its metrics); local: always
    every = 0.0 if job.executor == "local" else poll_s
    next_check, saved, active = 0.0, time.time(), True
    with open_log(run_dir / "stdout.log") as log:
        while True:
            now = time.time()
            if now >= next_check:
                active = job.active()
                soon = (run_dir / "metrics.json").is_file()
                next_check = now + (min(every, 1.0) if soon else every)
            chunk = b""
            if src.is_file():
                with open(src, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            if chunk:
                log.write(chunk)
                log.flush()
                offset += len(chunk)
                lines.feed(chunk)
                if time.time() - saved > 2.0:
                    _write_record(run_dir, {**record, "offset": offset})
                    saved = time.time()
            elif not active:
                break
            else:
                if STOP.is_set():
                    raise KeyboardInterrupt
                time.sleep(0.2)
    lines.close()
    _write_record(run_dir, {**record, "offset": offset})
    return job.exit_code(wait_s=0.0 if job.executor == "local" else 30.0)


def run(config: Path, cfg: Mapping[str, Any], ntasks: int, on_line: OnLine | None = None,
        devices: Sequence[int | str] | None = None) -> int:
    """Submit the run as a job (or re-attach to its job still running) and wait for it."""
    from omegaconf import OmegaConf

    from ablate.config import config_hash

    run_dir = config.parent
    found = attach(run_dir, config_hash(OmegaConf.load(config)))
    if found is None:
        job, record = submit(config, cfg, ntasks, devices)
        _say(f"{run_dir}: submitted job {job.job_id}")
    else:
        job, record = found
        _say(f"{run_dir}: re-attached to job {job.job_id} (still {job.state().lower()})")
    try:
        return follow(job, record, run_dir, on_line, float(cfg.get("poll_s") or 30))
    except BaseException:
        if job.executor == "local":
            job.cancel()  # a local job belongs to this machine's session
        else:
            _say(f"job {job.job_id} keeps running: `ablate run` again re-attaches to it, "
                 f"`scancel {job.job_id}` stops it")
        raise


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
