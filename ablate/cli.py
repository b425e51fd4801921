"""The ``ablate`` command line (typer). Thin: every command calls into the package.

User errors (``AblateError``) and usage errors (an unknown command or option, a missing
argument) print one readable message and exit with code 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from ablate.errors import AblateError

ENVIRONMENT = """\b
Environment:
  ABLATE_RESULTS  results root (default ./results; --results overrides it)
  ABLATE_DATA     data root: imagenet/, voc/, coco/, pretrained/ (default ./data)"""

# Plain (not Rich) help and usage errors: Rich markup would eat "[default: …]"-style text,
# and a usage error stays two lines of usage and one of error.
app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Reproduce the incremental trick tables of deep-learning papers.",
                  epilog=ENVIRONMENT)
data_app = typer.Typer(no_args_is_help=True,
                       help="Datasets: prepare generated ones, check real ones.")
app.add_typer(data_app, name="data")
console = Console()
err_console = Console(stderr=True)

# typer re-exports click's exceptions (vendored since typer 0.2x, imported before): its
# BadParameter derives from ClickException, the base of every usage error.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _results_option() -> Path:
    return typer.Option(Path("results"), "--results", envvar="ABLATE_RESULTS",
                        show_envvar=True, help="Results root.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from ablate import __version__

        def v(name: str) -> str:
            try:
                return version(name)
            except PackageNotFoundError:
                return "not installed"

        print(f"ablate {__version__} (torch {v('torch')}, torchvision {v('torchvision')}, "
              f"hydra-core {v('hydra-core')}, python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the versions and exit.")) -> None:
    pass


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command(epilog=ENVIRONMENT)
def run(
    study: str = typer.Argument(..., metavar="STUDY",
                                help="Study file (studies/X.yaml) or its name."),
    scale: Optional[str] = typer.Option(None, help="full | long | proxy | smoke (default: "
                                                   "the study's)."),
    seeds: Optional[int] = typer.Option(None, help="Seeds per step (default: the study's)."),
    only: Optional[List[str]] = typer.Option(
        None, help="Run only these step ids (repeatable, or comma-separated)."),
    nproc: Optional[str] = typer.Option(None, help="Processes per run: N or auto (GPUs, else 1)."),
    parallel: int = typer.Option(
        1, "--parallel", "-j", min=1,
        help="Run up to K steps at once: on GPUs each on its own devices (K × nproc must fit "
             "the visible GPUs); on CPU K processes share the cores, which only pays with "
             "enough cores; with launcher=slurm K jobs at a time."),
    results: Path = _results_option(),
    force: bool = typer.Option(False, help="Re-run steps that completed, were interrupted, "
                                           "or whose config changed or files are damaged "
                                           "(old runs are moved to .replaced/, never deleted)."),
    keep_going: bool = typer.Option(False, help="Continue with the next step after a failure."),
    dry_run: bool = typer.Option(False, help="Print what would run, be skipped or shared, and how "
                                             "it would be launched; then stop."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", help="Extra override for every step, e.g. --set data.root=/data/fmnist "
                            "(repeatable; part of the config hash)."),
) -> None:
    """Run every step of a study that is not complete yet, then print its table.

    Identical configs are trained once and shared. Launchers: docs/launchers.md.
    """
    from ablate.study.session import run_study

    code = run_study(study, scale=scale, seeds=seeds, only=only, nproc=nproc, parallel=parallel,
                     results_root=results, force=force, keep_going=keep_going,
                     dry_run=dry_run, extra=list(set_ or []), console=console)
    if code:
        raise typer.Exit(code)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
             epilog=ENVIRONMENT)
def train(ctx: typer.Context, results: Path = _results_option()) -> None:
    """One run from the config tree, with Hydra overrides; -m sweeps.

    \b
    Examples:
      ablate train data.train_subset=5000 train.epochs=2 'tricks=[cosine,mixup]'
      ablate train -m 'tricks=[mixup]' tricks.mixup.alpha=0.1,0.2,0.4 train.epochs=2
      ablate train -m hydra/launcher=submitit_slurm …   (SLURM: docs/launchers.md)

    A run goes to RESULTS/train/<time>/, a sweep to RESULTS/multirun/<time>/<job>/.
    """
    from ablate.train_app import main

    raise typer.Exit(main(list(ctx.args), results=results))


@app.command()
def report(
    path: Path = typer.Argument(..., metavar="PATH",
                                help="A study file, or a study's results folder."),
    format: str = typer.Option("md", "--format", "-f", help="md | csv | json | latex"),
    out: Optional[Path] = typer.Option(None, help="Write to this file instead of stdout."),
    plot: Optional[Path] = typer.Option(None, help="Also draw the cumulative-Δ waterfall PNG."),
    scale: Optional[str] = typer.Option(None, help="Which scale's results (study file input)."),
    results: Path = _results_option(),
) -> None:
    """Render a study's Δ table (ours beside the paper's); exit code 1 when a result in it
    cannot be read."""
    from ablate.study import report as rep

    study, folder, scale = rep.locate(path, results, scale)
    r = rep.build_report(study, folder, scale)
    text = rep.render(r, format)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    else:
        sys.stdout.write(text)
    if plot:
        rep.plot_waterfall(r, plot)
    if r.broken:  # shown in the table, and the exit code says so
        print(f"error: {len(r.broken)} result{'s' * (len(r.broken) > 1)} cannot be used:\n  "
              + "\n  ".join(r.broken), file=sys.stderr, flush=True)
        raise typer.Exit(1)


@app.command()
def evaluate(
    data: str = typer.Option(..., help="voc | coco (the ground truth's layout)."),
    root: Path = typer.Option(..., help="Dataset root (VOCdevkit's parent, or COCO root)."),
    split: str = typer.Option(..., help="Split name, e.g. test (VOC 2007) or val2017."),
    detections: Path = typer.Option(..., help="Folder of devkit comp4_det_<split>_<class>.txt "
                                              "files, or a COCO results JSON."),
    metric: Optional[str] = typer.Option(None, help="voc07 | voc10 | coco | proposals (an "
                                                    "RPN's AR@N; default: voc07 for voc, coco "
                                                    "for coco)."),
    proposal_nums: str = typer.Option("100,300,1000", help="The Ns of AR@N (metric "
                                                           "proposals), comma-separated."),
    year: str = typer.Option("2007", help="VOC year of the split."),
    coco_backend: str = typer.Option("auto", help="COCOeval engine: auto (faster-coco-eval "
                                                  "when installed) | faster_coco_eval | "
                                                  "pycocotools; the same numbers to 1e-15."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Score any detector's output with the VOC devkit or COCO metric."""
    import json

    from ablate.eval.evaluate_cmd import evaluate as run_eval
    from ablate.eval.evaluate_cmd import format_table

    try:
        nums = [int(n) for n in proposal_nums.split(",")]
    except ValueError:
        raise AblateError(f"--proposal-nums {proposal_nums!r}: must be comma-separated "
                          "integers, e.g. 100,300,1000") from None
    result = run_eval(data, root, split, detections, metric=metric, year=year,
                      coco_backend=coco_backend, proposal_nums=nums)
    text = json.dumps(result, indent=2) if json_out else format_table(result)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


@app.command("list")
def list_(what: str = typer.Argument("all", help="studies | tricks | models | data | all")) -> None:
    """List studies, tricks, models and datasets."""
    from ablate.config import CONF_DIR, STUDIES_DIR
    from ablate.errors import did_you_mean

    kinds = ("studies", "tricks", "models", "data")
    if what not in (*kinds, "all"):
        raise AblateError(f"unknown list '{what}'{did_you_mean(what, kinds)}; use one of "
                          f"{', '.join(kinds)}")
    if what in ("studies", "all"):
        import yaml

        console.print("[bold]studies[/]")
        for p in sorted(STUDIES_DIR.glob("*.yaml")):
            meta = yaml.safe_load(p.read_text()) or {}
            _say(f"  {p.stem:28s} {meta.get('table', ''):8s} {meta.get('title', '')}")
    if what in ("tricks", "all"):
        import ablate.tricks  # noqa: F401
        from ablate.registry import TRICKS

        console.print("[bold]tricks[/]")
        for name, cls in TRICKS.items():
            doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            _say(f"  {name:16s} [{', '.join(cls.tasks)}] {doc}")
    for kind, group in (("models", "model"), ("data", "data")):
        if what in (kind, "all"):
            console.print(f"[bold]{kind}[/] (config group {group}/)")
            for p in sorted((CONF_DIR / group).glob("*.yaml")):
                first = p.read_text().splitlines()[0].lstrip("# ") if p.read_text() else ""
                _say(f"  {p.stem:20s} {first}")


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(..., help="fashion_mnist | fashion_scenes | voc | coco"),
    overrides: Optional[List[str]] = typer.Argument(None, help="data.* overrides, e.g. "
                                                              "data.num_train=500"),
) -> None:
    """Build a generated dataset (FashionScenes) or check that a real one is in place and
    readable (files, headers, every annotation)."""
    from omegaconf import OmegaConf

    from ablate.config import CONF_DIR, compose
    from ablate.data import DataSource  # noqa: F401  (registers datasets)
    from ablate.errors import did_you_mean
    from ablate.registry import DATASETS

    known = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
    if name not in known:
        raise AblateError(f"unknown dataset '{name}'{did_you_mean(name, known)}; "
                          f"known: {', '.join(known)}")
    cfg = OmegaConf.to_container(compose([f"data={name}", *(overrides or [])]).data,
                                 resolve=True)
    DATASETS.get(cfg.pop("name")).check(**cfg, deep=True)  # every annotation, not only files
    where = cfg.get("root") or cfg.get("cache_dir") or "its default folder"
    console.print(f"{name} is ready ({where})", markup=False)


def main() -> None:
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C into exit code 130, silently
            raise KeyboardInterrupt
        sys.exit(code if isinstance(code, int) else 0)
    except AblateError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except KeyboardInterrupt:
        err_console.print("interrupted: run `ablate run` again to resume")
        sys.exit(130)
    except _USAGE_ERROR as e:  # usage, then one line: "Error: No such option: --bogus"
        e.show()
        sys.exit(2)
    except OSError as e:  # a read-only or full results folder, a path that is not a folder
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
