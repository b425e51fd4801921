"""``ablate train``: one run (or a Hydra ``-m`` multirun sweep) straight from the config tree.

A thin Hydra front over the same pieces as ``ablate run``: every job's config is resolved and
written to its run folder, then started by the configured launcher (``launch_run``). Overrides
are checked with the same rules as study files first, so a typo exits with code 2 before
anything trains.

Sweeps run one job after another by default. With hydra-submitit-launcher installed (a
dependency), ``hydra/launcher=submitit_slurm`` submits every sweep job as a SLURM job (and
``submitit_local`` runs them as local processes, all at once): Hydra finds the plugin's
``hydra/launcher`` options by itself. Inside such a job the run is started as usual, e.g.
``torchrun --standalone`` on the job's GPUs, so the job must have one task
(``hydra.launcher.tasks_per_node=1``, the plugin's default) and ``hydra.launcher.gpus_per_node``
GPUs.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ablate.config import CONF_DIR, compose
from ablate.errors import AblateError

MAX_CHECKED = 256  # sweep combinations validated up front
FAILED: list[str] = []  # "run folder: reason" of each failed job of this invocation


def validate(args: list[str]) -> Path:
    """Compose every sweep combination (up to ``MAX_CHECKED``) and check tricks and data.
    Returns the results root (``paths.results``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from ablate.data import DataSource  # noqa: F401
    from ablate.engine.values import check_schedule, check_values
    from ablate.registry import DATASETS
    from ablate.tricks import check_tricks

    items = [a for a in args if a not in ("-m", "--multirun")]
    try:
        parsed = OverridesParser.create().parse_overrides(items)
    except HydraException as e:
        raise AblateError(f"bad override: {str(e).splitlines()[0]}") from None
    choices = []
    for o in parsed:
        if o.key_or_group.startswith("hydra"):
            continue
        values = ([o.get_value_element_as_str()] if not o.is_sweep_override()
                  else list(o.sweep_string_iterator()))
        prefix = "+" if o.is_add() else "++" if o.is_force_add() else "~" if o.is_delete() else ""
        choices.append([f"{prefix}{o.get_key_element()}={v}" for v in values])
    from ablate.launch import check, check_layout, nproc_for

    root = None
    for combo in itertools.islice(itertools.product(*choices), MAX_CHECKED):
        cfg = compose(combo)
        root = root or Path(cfg.paths.results)
        if cfg.launcher.name == "multinode":
            raise AblateError("launcher=multinode runs studies: use `ablate run STUDY --set "
                              "launcher=multinode …` on every node (docs/launchers.md)")
        check(cfg.launcher, nproc_for(cfg.launcher))
        check_tricks(list(cfg.get("tricks") or {}), cfg.model.task)
        check_values(cfg)
        check_layout(cfg, nproc_for(cfg.launcher))
        data = OmegaConf.to_container(cfg.data, resolve=True)
        check_schedule(cfg, DATASETS.get(data.pop("name")).check(**data))
    return root


def claim_folder(parent: Path, stamp: str) -> Path:
    """A new folder ``parent/stamp`` (``stamp_1``, ``stamp_2``, … when taken), created
    atomically, so that runs started in the same second never share one."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in itertools.count():
        folder = parent / (stamp if i == 0 else f"{stamp}_{i}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def _one_task_per_job() -> None:
    """Under hydra-submitit-launcher every task of a job would run the whole sweep job; the
    launcher inside starts the processes, so a job has one task."""
    import os

    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    tasks = submitit.JobEnvironment().num_tasks
    if tasks > 1:
        raise RuntimeError(f"this job has {tasks} tasks: `ablate train` needs "
                           "hydra.launcher.tasks_per_node=1 (launcher.nproc starts the "
                           "processes inside the job)")


def _job(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from ablate.engine.run_io import atomic_write_text
    from ablate.launch import launch_run, nproc_for

    _one_task_per_job()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    OmegaConf.resolve(cfg)
    config = run_dir / "config.yaml"
    atomic_write_text(config, OmegaConf.to_yaml(cfg))
    atomic_write_text(run_dir / "overrides.yaml",
                      OmegaConf.to_yaml(OmegaConf.create({"overrides": list(hc.overrides.task)})))
    print(f"run folder: {run_dir}", flush=True)
    from ablate.study.progress import StudyProgress

    from ablate.study.runner import failure_reason
    from ablate.study.share import read_metrics

    with StudyProgress(1) as progress:
        progress.start_run(1, "train", cfg.seed, "run")
        code = launch_run(config, cfg.launcher, nproc_for(cfg.launcher), progress.line)
        result = read_metrics(run_dir) or {}
        if code != 0 or result.get("status") != "completed":
            reason = failure_reason(run_dir, code, result)
            progress.note(f"FAILED: {reason}")
            FAILED.append(f"{run_dir}: {reason}")
            return None  # a sweep goes on with its other jobs
    return result["metrics"].get(result.get("primary_metric", ""))


def main(args: list[str], results: Path | None = None) -> int:
    """Run ``ablate train ARGS`` through Hydra; returns the exit code.

    Args:
        args: Hydra overrides and flags (``-m``, ``--cfg job`` …).
        results: the results root (``--results``); an explicit ``paths.results=`` wins.
    """
    import hydra

    from ablate.config import format_value

    if results is not None and not any(a.split("=")[0].lstrip("+") == "paths.results"
                                       for a in args):
        args = [*args, f"paths.results={format_value(str(results))}"]
    root = validate(args)
    given = {a.split("=")[0] for a in args}
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    defaults = ["hydra.job.name=train", "hydra.job.chdir=false",
                "hydra.sweep.subdir=${hydra.job.num}"]
    if key not in given:
        import time

        folder = claim_folder(root / ("multirun" if multirun else "train"),
                              time.strftime("%Y-%m-%d_%H-%M-%S"))
        defaults.append(f"{key}={format_value(str(folder))}")
    flags = [a for a in args if a.startswith("-")]  # -m, --multirun, --cfg … before overrides
    overrides = [a for a in args if not a.startswith("-")]
    argv = ["ablate-train", *flags, *[d for d in defaults if d.split("=")[0] not in given],
            *overrides]
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_job)
    old = sys.argv
    sys.argv = argv
    FAILED.clear()
    try:
        app()
    except SystemExit as e:
        if e.code:
            return int(e.code)
    finally:
        sys.argv = old
    if FAILED:
        print(f"error: {len(FAILED)} run{'s' * (len(FAILED) > 1)} failed:\n  "
              + "\n  ".join(FAILED), file=sys.stderr, flush=True)
        return 1
    return 0
