"""Launching a study's runs: one at a time, or ``--parallel K`` at once on disjoint devices,
with shared runs (``ablate.study.share``) filled in once their twin has finished. ``execute``
runs a study's decided plans (``ablate.study.driver`` plans and decides; it imports nothing from
here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.engine.run_io import atomic_write, atomic_write_text
from ablate.study.driver import (COMPLETED, FAILED, SOURCE, RunPlan, set_aside,
                                 write_run_files)
from ablate.study.share import link_results, mark_shared, read_metrics, source_dir
from ablate.study.spec import Study


def check_launches(plans: list[RunPlan], nproc: int | str | None, parallel: int
                   ) -> tuple[dict[int, int], list[list[str]] | None]:
    """Check how every plan that would be launched is launched, before anything runs.

    Returns:
        ``id(plan) → processes per run``, and the device set of each concurrent slot (None
        where runs need no devices of their own).
    """
    from ablate.launch import check, check_layout, device_slots, nproc_for

    launches = [p for p in plans if p.action not in ("skip", "share", "refuse")]
    counts = {id(p): nproc_for(p.cfg.launcher, nproc) for p in launches}
    for p in launches:
        check(p.cfg.launcher, counts[id(p)], parallel)
        try:
            check_layout(p.cfg, counts[id(p)])
        except AblateError as e:
            raise AblateError(f"step '{p.step.id}' (seed {p.seed}): {e}") from None
        if p.action == "rerun" and (p.run_dir / "slurm_job.json").is_file():
            from ablate.launch.slurm import active_job

            job = active_job(p.run_dir)
            if job is not None:
                raise AblateError(f"{p.run_dir}: SLURM job {job} is still running it; "
                                  f"`scancel {job}` first")
    if not launches:
        return counts, None
    return counts, device_slots(launches[0].cfg.launcher, max(counts.values()), parallel)


def exit_reason(code: int) -> str:
    """What a worker's exit code says when it left no ``metrics.json``: a signal (negative
    code, or 128 + the signal's number from a shell or torchrun), or a plain exit."""
    import signal

    number = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else None
    try:
        name = signal.Signals(number).name if number else None
    except ValueError:
        name = None
    if name is None:
        return f"worker exited with code {code} before writing metrics.json"
    hint = " (out of memory? or killed by hand)" if name == "SIGKILL" else ""
    return f"worker killed by {name}{hint}"


def failure_reason(run_dir: Path, code: int, result: dict[str, Any]) -> str:
    """Why a run failed, for the console: its ``metrics.json``'s reason, else what the exit code
    says, where the log is and whether the next ``ablate run`` resumes it."""
    if result.get("reason"):
        return str(result["reason"])
    resumes = (run_dir / "checkpoints" / "last.pt").is_file()
    return (f"{exit_reason(code)}; see {run_dir / 'stdout.log'}"
            + ("; `ablate run` again resumes from its last checkpoint" if resumes else ""))


class Runner:
    """Launches plans (one at a time, or several on disjoint devices) and collects results."""

    def __init__(self, todo: list[RunPlan], out_dir: Path, nproc: int | str | None,
                 parallel: int) -> None:
        self.todo, self.out_dir, self.parallel = todo, out_dir, parallel
        self.nproc, self.slots = check_launches(todo, nproc, parallel)
        launches = [p for p in todo if p.action not in ("skip", "share")]
        self.env: dict[str, str] = {}
        if parallel > 1 and self.slots is None and launches and \
                launches[0].cfg.launcher.name in ("local", "multinode"):
            # K runs share the cores: without this each would start one thread per core
            most = max(self.nproc.values())
            self.env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (parallel * most)))

    def start(self, plan: RunPlan) -> Path:
        if plan.action == "rerun":
            set_aside(plan, self.out_dir)
        return write_run_files(plan)

    def launch(self, plan: RunPlan, config: Path, view: Any, slot: list[str] | None) -> int:
        from ablate.launch import launch_run

        return launch_run(config, plan.cfg.launcher, self.nproc[id(plan)], view.line, slot,
                          self.env)

    def collect(self, plan: RunPlan, code: int, view: Any) -> bool:
        plan.result = read_metrics(plan.run_dir) or {}
        if plan.result.get("diverged") is not None:  # the worker's result, not a failure
            view.note(f"DIVERGED (a result): {plan.result.get('reason')}")
            return True
        if code != 0 or plan.result.get("status") != COMPLETED:
            reason = failure_reason(plan.run_dir, code, plan.result)
            plan.result = {**plan.result, "status": FAILED, "reason": reason}
            view.note(f"FAILED: {reason}")
            return False
        m = plan.result.get("metrics", {})
        view.note("done: " + ", ".join(f"{k} {v:.2f}" for k, v in m.items()
                                       if isinstance(v, (int, float))))
        return True

    def share(self, plan: RunPlan, view: Any) -> bool:
        src = source_dir(plan)
        if isinstance(plan.source, RunPlan) and plan.source.result.get("status") != COMPLETED \
                and plan.source.result.get("diverged") is None:
            plan.result = {"status": FAILED,
                           "reason": f"the run with the same config ({src}) failed"}
            view.note(f"FAILED: {plan.result['reason']}")
            return False
        write_run_files(plan)
        plan.result = link_results(src, plan.run_dir)
        view.note(f"shared: same config as {src}")
        return True

    def in_order(self, progress: Any, keep_going: bool) -> list[RunPlan]:
        """One run at a time, in this thread (Ctrl-C stops the running worker)."""
        failed = []
        for i, plan in enumerate(self.todo, 1):
            progress.start_run(i, plan.step.id, plan.seed, plan.action)
            if plan.action == "share":
                ok = self.share(plan, progress)
            else:
                config = self.start(plan)
                ok = self.collect(plan, self.launch(plan, config, progress, None), progress)
            if not ok:
                failed.append(plan)
                if not keep_going:
                    break
        return failed

    def at_once(self, keep_going: bool) -> list[RunPlan]:
        """Up to ``parallel`` runs at once, started in plan order, each on its own devices;
        progress lines are prefixed with the run's step."""
        import threading
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        from ablate.launch import cancel_all
        from ablate.launch._proc import STOP

        lock = threading.Lock()
        index = {id(p): i for i, p in enumerate(self.todo, 1)}
        slots: list[list[str] | None] = list(self.slots or [None] * self.parallel)
        free = list(range(len(slots)))  # indices into slots, lowest first
        pending, running, settled, failed = list(self.todo), {}, set(), []

        def view(plan: RunPlan) -> View:
            v = View(len(self.todo), lock)
            v.start_run(index[id(plan)], plan.step.id, plan.seed, plan.action)
            return v

        def start_ready(pool: ThreadPoolExecutor) -> None:
            """Start launches in order while slots are free; fill in shares whose twin is
            done (they take no slot)."""
            for plan in list(pending):
                if failed and not keep_going:
                    return
                if plan.action == "share":
                    if isinstance(plan.source, RunPlan) and id(plan.source) not in settled:
                        continue  # its twin is still running
                    pending.remove(plan)
                    settled.add(id(plan))
                    if not self.share(plan, view(plan)):
                        failed.append(plan)
                    continue
                if not free:
                    return
                pending.remove(plan)
                slot, v = free.pop(0), view(plan)
                config = self.start(plan)
                running[pool.submit(self.launch, plan, config, v, slots[slot])] = (plan, slot, v)

        STOP.clear()
        try:
            with ThreadPoolExecutor(self.parallel, thread_name_prefix="ablate-run") as pool:
                try:
                    while running or (pending and not (failed and not keep_going)):
                        start_ready(pool)
                        if not running:
                            break
                        done, _ = wait(running, return_when=FIRST_COMPLETED)
                        for fut in done:
                            plan, slot, v = running.pop(fut)
                            free.append(slot)
                            free.sort()
                            settled.add(id(plan))
                            if not self.collect(plan, fut.result(), v):
                                failed.append(plan)
                except BaseException:  # Ctrl-C or an error here: stop every run, then leave
                    cancel_all()
                    raise
        finally:
            STOP.clear()  # only once every thread is done
        return sorted(failed, key=lambda p: index[id(p)])


class View:
    """One run's progress during a parallel execution: plain lines, prefixed with the step
    (``[2/6] cosine seed 0: epoch 1/5 …``), printed one at a time."""

    def __init__(self, total: int, lock: Any) -> None:
        from rich.console import Console

        from ablate.study.progress import StudyProgress

        self.progress = StudyProgress(total, Console(force_terminal=False))
        self.lock = lock

    def start_run(self, *args: Any) -> None:
        with self.lock:
            self.progress.start_run(*args)

    def line(self, line: str) -> None:
        with self.lock:
            self.progress.line(line)

    def note(self, text: str) -> None:
        with self.lock:
            self.progress.note(text)


def execute(study: Study, plans: list[RunPlan], *, out_dir: Path, keep_going: bool,
            nproc: int | str | None, progress: Any, parallel: int = 1) -> list[RunPlan]:
    """Run every plan (after ``decide``), ``parallel`` at a time; stop launching at the first
    failure unless ``keep_going`` (runs already started finish). Steps whose config is done or
    about to be done elsewhere are shared (``ablate.study.share``). Returns the plans with
    their results; raises ``StepFailed`` for the first failure (in plan order)."""
    snapshot = out_dir / "study.yaml"
    if not snapshot.is_file() or snapshot.read_bytes() != study.path.read_bytes():
        atomic_write(snapshot, study.path.read_bytes())
    atomic_write_text(out_dir / SOURCE, f"{study.path.resolve()}\n")
    todo = [p for p in plans if p.action != "skip"]
    if not todo:
        return plans
    mark_shared(todo, Path(str(todo[0].cfg.paths.results)))
    runner = Runner(todo, out_dir, nproc, parallel)
    if parallel == 1:
        failed = runner.in_order(progress, keep_going)
    else:
        failed = runner.at_once(keep_going)
    if failed:
        first = failed[0]
        raise StepFailed(f"step '{first.step.id}' (seed {first.seed}) failed: "
                         f"{first.result.get('reason')}")
    return plans


class StepFailed(RuntimeError):
    """A run failed (exception or non-finite loss); the study stopped."""
