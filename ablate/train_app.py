"""``ablate train``: one run (or a Hydra ``-m`` multirun sweep) straight from the config tree.

A thin Hydra front over the same pieces as ``ablate run``: every job's config is resolved and
written to its run folder, then launched with torchrun. Overrides are checked with the same
rules as study files first, so a typo exits with code 2 before anything trains.
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
    for combo in itertools.islice(itertools.product(*choices), MAX_CHECKED):
        cfg = compose(combo)
        check_tricks(list(cfg.get("tricks") or {}), cfg.model.task)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        DATASETS.get(data.pop("name")).check(**data)


def _job(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from ablate.launch import launch, resolve_nproc

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
        code = launch(config, cfg.launcher.name, resolve_nproc(cfg.launcher.nproc),
                      progress.line, cfg.launcher.get("mode", "auto"))
    import json

    metrics_path = run_dir / "metrics.json"
    result = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if code != 0 or result.get("status") != "completed":
        raise RuntimeError(f"run failed ({result.get('reason') or f'exit code {code}'}); see "
                           f"{run_dir / 'stdout.log'}")
    return result["metrics"].get(result.get("primary_metric", ""))


def main(args: list[str]) -> int:
    """Run ``ablate train ARGS`` through Hydra; returns the exit code."""
    import hydra

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
