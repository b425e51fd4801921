"""``ablate run``: plan a study, decide what each run does (skip, resume, refuse, share), take
the study's lock, run what is left (its dependencies first) and print the table. The CLI only
parses the command line and calls :func:`run_study`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

from ablate.errors import AblateError


def run_study(study: str, *, scale: str | None, seeds: int | None, only: list[str] | None,
              nproc: str | None, parallel: int, results_root: Path, force: bool,
              keep_going: bool, dry_run: bool, extra: list[str], console: Any) -> int:
    """Run (or, with ``dry_run``, describe) every step of ``study`` (a file or a name) that is
    not complete yet; returns the exit code. User errors raise ``AblateError``.

    Args:
        only: step ids (each entry may be comma-separated); None = every step.
        nproc: processes per run (``N`` or ``auto``); None = the launcher's.
        extra: ``--set`` overrides for every step.
        console: a rich console for progress and tables.
    """
    from contextlib import ExitStack

    from omegaconf import OmegaConf

    from ablate.config import STUDIES_DIR
    from ablate.launch import multinode, nproc_for
    from ablate.study import driver
    from ablate.study.spec import find_study, load_study

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    spec = load_study(find_study(study, STUDIES_DIR))
    chosen = [o.split("=", 1)[1] for o in extra if o.split("=")[0].lstrip("+") == "launcher"]
    if not dry_run and chosen[-1:] in ([], ["local"]):
        from ablate.launch import prestart

        prestart()  # the forkserver of the local launcher warms up while the study is planned
    scale = scale or spec.default_scale
    root = results_root
    only_ids = [x for o in only or [] for x in o.split(",") if x] or None
    plans = driver.plan_study(spec, scale=scale, seeds=seeds,
                              only=only_ids,
                              results_root=root, extra=extra)
    launcher = OmegaConf.to_container(plans[0].cfg.launcher, resolve=True)
    if nproc is not None:
        nproc_for(launcher, nproc)
    deps = driver.plan_dependencies(spec, scale, root, extra, only=only_ids)
    if multinode.is_follower(launcher):
        return _follow(plans, deps, launcher, nproc, dry_run, say)
    with ExitStack() as stack:
        if launcher["name"] == "multinode" and not dry_run:
            stack.enter_context(multinode.leading(launcher))
        return _lead(spec, scale, root, plans, deps, nproc=nproc, parallel=parallel,
                     force=force, keep_going=keep_going, dry_run=dry_run, console=console)


def _lead(spec, scale, root, plans, deps, *, nproc, parallel, force, keep_going,
          dry_run, console) -> int:
    """``ablate run`` on one machine, or on node 0: decide, lock, execute, report."""
    from rich.console import Console

    from ablate.study import driver, report, runner
    from ablate.study.progress import StudyProgress
    from ablate.study.share import mark_shared

    out_dir = driver.study_results_dir(spec, root, scale)
    for p in plans:
        driver.decide(p, force)
    if all(p.action == "skip" for p in plans):
        deps = []  # nothing to run: what the steps used is not needed again
    for d in deps:
        for p in d.plans:
            driver.decide(p, False)
            if p.action == "refuse":
                raise AblateError(f"{spec.path}: uses {d.study.name}/{d.step}: {p.reason}; "
                                  f"re-run that study ({d.study.path}) with --force first")
        mark_shared(d.plans, root)
    mark_shared(plans, root)
    refused = [p for p in plans if p.action == "refuse"]
    if dry_run:
        _print_plan(spec, scale, plans, deps, nproc, parallel, console)
        return 0
    if all(p.action == "skip" for p in plans):  # nothing to write: a read-only folder will do
        for p in plans:
            console.print(f"skip {p.step.id} seed {p.seed} (completed)")
        sys.stdout.write("\n" + report.to_markdown(report.build_report(spec, out_dir, scale)))
        return 0
    if refused:
        lines = "\n".join(f"  {p.run_dir}: {p.reason}" for p in refused)
        raise AblateError(f"{spec.path}: refusing to touch runs that cannot be skipped or "
                          f"resumed:\n{lines}\nre-run with --force to move them to "
                          f"{out_dir / '.replaced'} (kept) and start them again")
    from ablate.study.runner import check_launches

    try:
        check_launches([*(p for d in deps for p in d.plans), *plans], nproc, parallel)
    except AblateError as e:
        raise AblateError(f"{spec.path}: {e}") from None
    # several runs at once print plain lines, each prefixed with its step
    shown = console if parallel == 1 else Console(force_terminal=False)
    dep_todo = [d for d in deps if any(p.action != "skip" for p in d.plans)]
    with StudyProgress(sum(p.action != "skip" for d in dep_todo for p in d.plans),
                       shown) as progress:
        for d in dep_todo:  # the steps this study uses, first
            dep_dir = driver.study_results_dir(d.study, root, d.scale)
            with driver.study_lock(dep_dir):
                try:
                    runner.execute(d.study, d.plans, out_dir=dep_dir, keep_going=False,
                                   nproc=nproc, progress=progress, parallel=parallel)
                except runner.StepFailed as e:
                    print(f"error: {d.study.name} (used by {spec.name}): {e}", file=sys.stderr,
                          flush=True)
                    return 1
    with driver.study_lock(out_dir):
        with StudyProgress(sum(p.action != "skip" for p in plans), shown) as progress:
            for p in plans:
                if p.action == "skip":
                    console.print(f"skip {p.step.id} seed {p.seed} (completed)")
            try:
                runner.execute(spec, plans, out_dir=out_dir, keep_going=keep_going, nproc=nproc,
                               progress=progress, parallel=parallel)
            except runner.StepFailed as e:
                print(f"error: {e}", file=sys.stderr, flush=True)
                sys.stdout.write(report.to_markdown(report.build_report(spec, out_dir, scale)))
                return 1
    sys.stdout.write("\n" + report.to_markdown(report.build_report(spec, out_dir, scale)))
    return 0


def _print_plan(spec, scale, plans, deps, nproc, parallel, console) -> None:
    """The dry run: each run's decision and how it would be launched, then a summary."""
    from ablate.launch import check, check_layout, describe, device_slots, nproc_for
    from ablate.study import driver
    from ablate.study.share import source_dir

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    def show(prefix: str, p) -> None:
        if p.action == "share":
            say(f"{prefix}: share {source_dir(p)}  {p.run_dir}")
            return
        say(f"{prefix}: {p.action}{' (' + p.reason + ')' if p.reason else ''}  {p.run_dir}")
        if p.action in ("skip", "refuse"):
            return
        n = nproc_for(p.cfg.launcher, nproc)
        check(p.cfg.launcher, n, parallel, strict=False)
        first, *more = describe(p.cfg.launcher, n, p.run_dir / "config.yaml", p.hash).splitlines()
        say(f"   launch: {first}")
        for line in more:
            say(f"           {line}")

    for where, group in [*((f"uses {d.study.name}/{d.step}", d.plans) for d in deps),
                         ("", plans)]:
        for p in group:
            if p.action not in ("skip", "refuse", "share"):
                try:
                    check_layout(p.cfg, nproc_for(p.cfg.launcher, nproc))
                except AblateError as e:
                    raise AblateError(f"{spec.path}: {where + ': ' if where else ''}step "
                                      f"'{p.step.id}' (seed {p.seed}): {e}") from None
    if parallel > 1:
        todo = [p for p in plans if p.action not in ("skip", "refuse", "share")]
        if todo:
            n = nproc_for(todo[0].cfg.launcher, nproc)
            slots = device_slots(todo[0].cfg.launcher, n, parallel)
            say(f"up to {parallel} runs at once" + (
                f", on GPUs {' | '.join(','.join(s) for s in slots)}" if slots else ""))
    for d in deps:
        for p in d.plans:
            show(f"uses {d.study.name} {d.scale} {d.step} seed {p.seed}", p)
            say(f"   file: {d.path}")
    for p in plans:
        show(f"{p.step.id} seed {p.seed}", p)
        say("   overrides: " + " ".join(o for o in p.overrides if not o.startswith("paths.")))
    say(driver.plan_summary(plans, deps, scale))


def _follow(plans, deps, launcher, nproc, dry_run, say: Callable[[str], None]) -> int:
    """``ablate run`` on a node other than 0: launch what node 0 announces (see
    ``ablate.launch.multinode``); decide nothing, write nothing under the results root."""
    from ablate.launch import multinode, nproc_for

    n = nproc_for(launcher, nproc)
    multinode.check(launcher, n)
    every = [*(p for d in deps for p in d.plans), *plans]
    configs = {multinode.run_key(p.run_dir): (p.cfg, p.hash) for p in every}
    if dry_run:
        host, port = multinode.endpoint(launcher)
        spool = multinode.spool_dir(launcher)
        say(f"node {multinode.node_rank(launcher)}: follows node 0 ({host}:{port}): launches "
             "the runs node 0 announces, among:")
        for key, (_, h) in configs.items():
            say(f"{key}: {multinode.describe(launcher, n, spool / key / 'config.yaml', h)}")
        return 0
    return multinode.follow(configs, launcher, n, say=say)
