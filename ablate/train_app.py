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


def validate(args: list[str]) -> None:
    """Compose every sweep combination (up to ``MAX_CHECKED``) and check tricks and data."""
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

    for combo in itertools.islice(itertools.product(*choices), MAX_CHECKED):
        cfg = compose(combo)
        if cfg.launcher.name == "multinode":
            raise AblateError("launcher=multinode runs studies: use `ablate run STUDY --set "
                              "launcher=multinode …` on every node (docs/launchers.md)")
        check(cfg.launcher, nproc_for(cfg.launcher))
        check_tricks(list(cfg.get("tricks") or {}), cfg.model.task)
        check_values(cfg)
        check_layout(cfg, nproc_for(cfg.launcher))
        data = OmegaConf.to_container(cfg.data, resolve=True)
        check_schedule(cfg, DATASETS.get(data.pop("name")).check(**data))


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

    from ablate.launch import launch_run, nproc_for

    _one_task_per_job()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    OmegaConf.resolve(cfg)
    config = run_dir / "config.yaml"
    OmegaConf.save(cfg, config)
    (run_dir / "overrides.yaml").write_text(
        OmegaConf.to_yaml(OmegaConf.create({"overrides": list(hc.overrides.task)})))
    print(f"run folder: {run_dir}", flush=True)
    from ablate.study.progress import StudyProgress

    with StudyProgress(1) as progress:
        progress.start_run(1, "train", cfg.seed, "run")
        code = launch_run(config, cfg.launcher, nproc_for(cfg.launcher), progress.line)
    import json

    metrics_path = run_dir / "metrics.json"
    result = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if code != 0 or result.get("status") != "completed":
        raise RuntimeError(f"run failed ({result.get('reason') or f'exit code {code}'}); see "
                           f"{run_dir / 'stdout.log'}")
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
    validate(args)
    defaults = ["hydra.job.name=train", "hydra.job.chdir=false",
                "hydra.run.dir=${paths.results}/train/${now:%Y-%m-%d_%H-%M-%S}",
                "hydra.sweep.dir=${paths.results}/multirun/${now:%Y-%m-%d_%H-%M-%S}",
                "hydra.sweep.subdir=${hydra.job.num}"]
    given = {a.split("=")[0] for a in args}
    flags = [a for a in args if a.startswith("-")]  # -m, --multirun, --cfg … before overrides
    overrides = [a for a in args if not a.startswith("-")]
    argv = ["ablate-train", *flags, *[d for d in defaults if d.split("=")[0] not in given],
            *overrides]
    app = hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_job)
    old = sys.argv
    sys.argv = argv
    try:
        app()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0
