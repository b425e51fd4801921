"""The study driver: expand steps × seeds, compose and validate everything, decide what to
skip/resume/run/refuse/share, take the study lock, launch the runs (one at a time or several at
once, ``--parallel``), collect results.

Layout: ``<results>/<study>/<scale>/<step>/seed<k>/`` holds one run (``config.yaml``,
``overrides.yaml``, ``log.csv``, ``stdout.log``, ``checkpoints/last.pt``, ``metrics.json``).
``<results>/<study>/<scale>/study.yaml`` is a copy of the study file the report reads.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from ablate.config import compose, config_hash, matches, to_overrides
from ablate.engine.run_io import atomic_write_text
from ablate.errors import AblateError, did_you_mean
from ablate.study.spec import Step, Study

COMPLETED, FAILED = "completed", "failed"


@dataclass
class RunPlan:
    step: Step
    seed: int
    overrides: list[str]
    cfg: DictConfig
    hash: str
    run_dir: Path
    action: str = "run"  # run | resume | skip | refuse | rerun | share
    reason: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    source: Any = None  # share: a completed run folder, or the plan that runs the same config


SOURCE = "study.source"  # the study file whose results a folder holds (see ``check_owner``)


def study_results_dir(study: Study, results_root: Path, scale: str) -> Path:
    return _inside(results_root, results_root / study.name / scale)


def check_owner(study: Study, out_dir: Path) -> None:
    """Two study files with the same ``name`` would share a results folder: refuse the second
    while the first still exists (a moved or renamed file may take its folder over)."""
    try:
        owner = Path((out_dir / SOURCE).read_text().strip())
    except (OSError, UnicodeDecodeError):
        return
    if owner != study.path.resolve() and owner.is_file():
        raise AblateError(f"{study.path}: its results folder {out_dir} holds the results of "
                          f"{owner}, another study named '{study.name}'; give one of them "
                          "another name")


def _inside(root: Path, path: Path) -> Path:
    """Refuse any path that would leave the results root."""
    root_r, path_r = root.resolve(), path.resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise AblateError(f"{path} is outside the results root {root}")
    return path


def seeds_for(study: Study, seeds: int | None, step: Step | None = None) -> list[int]:
    """``--seeds`` if given, else the step's column's seed count, else the study's."""
    n = seeds if seeds is not None else (step.seeds if step and step.seeds else study.seeds)
    if n < 1:
        raise AblateError(f"--seeds must be at least 1, got {n}")
    return [study.seed + i for i in range(n)]


def _for_tricks(overrides: dict[str, Any], tricks: list[str], where: str) -> dict[str, Any]:
    """Drop ``tricks.<name>.…`` options of known tricks that this step does not use, so a study
    can set a trick's options once in ``base`` or a scale, before the step that adds it."""
    from ablate.registry import TRICKS

    out = {}
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] == "tricks" and len(parts) > 2:
            if parts[1] not in TRICKS:
                raise AblateError(f"{where}'{key}': unknown trick '{parts[1]}'"
                                  f"{did_you_mean(parts[1], TRICKS)}")
            if parts[1] not in tricks:
                continue
        out[key] = value
    return out


# --- studies that use other studies' outputs --------------------------------------------------

# --set keys a dependency also gets: where things are and how to run them, never what to train
SHARED_EXTRA = ("launcher", "paths.", "train.threads", "data.root")


@dataclass
class Dependency:
    """A step of another study whose output a study reads (``uses``), planned like any step."""
    study: Study
    step: str
    scale: str
    seed: int
    path: Path  # the file the using study reads
    plans: list[RunPlan] = field(default_factory=list)


def _used_study(study: Study, name: str) -> Study:
    """``uses.<x>.study``: a file relative to the using study, or a name in its folder or in
    ``studies/``."""
    from ablate.config import STUDIES_DIR
    from ablate.study.spec import find_study, load_study

    for base in (study.path.parent, STUDIES_DIR):
        p = base / name
        for cand in (p, p.with_name(p.name + ".yaml")):
            if cand.is_file():
                return load_study(cand)
    return load_study(find_study(name, STUDIES_DIR))


def use_targets(study: Study, scale: str, results_root: Path) -> dict[str, tuple[Study, str, Any, Path]]:
    """``name → (used study, its scale, the Use, the file's path)`` for each of ``study.uses``."""
    out = {}
    for name, use in study.uses.items():
        where = f"{study.path}: uses.{name}: "
        try:
            dep = _used_study(study, use.study)
            dep.step(use.step)
            dep_scale = use.scale or scale
            dep.scale_overrides(dep_scale)
        except AblateError as e:
            raise AblateError(where + str(e)) from None
        if dep.name == study.name:
            raise AblateError(where + "a study cannot use its own steps")
        run_dir = study_results_dir(dep, results_root, dep_scale) / use.step / f"seed{use.seed}"
        out[name] = (dep, dep_scale, use, _inside(results_root, run_dir / use.file))
    return out


def uses_needed(study: Study, scale: str, only: list[str] | None = None) -> set[str]:
    """The ``uses`` names that the selected steps' configs refer to (a use referenced only
    where its trick is off, or only by steps not selected, is not needed)."""
    from ablate.study.spec import USE_REF_RE

    only = study.select(only)
    base = {**study.base, **study.scale_overrides(scale)}
    names: set[str] = set()
    for step in study.steps:
        if only and step.id not in only:
            continue
        chosen = _for_tricks({**base, **step.overrides_at(scale)}, step.tricks,
                             f"{study.path}: step '{step.id}': ")
        names.update(USE_REF_RE.findall(json.dumps(chosen, default=str)))
    return names


def plan_dependencies(study: Study, scale: str, results_root: Path, extra: list[str] = (),
                      _trail: tuple[str, ...] = (), only: list[str] | None = None
                      ) -> list[Dependency]:
    """Plan every step ``study`` uses — those its selected steps (``only``) need — theirs
    first (depth first, each run once). Only the launcher, ``paths.*`` and ``train.threads``
    entries of ``extra`` reach them."""
    if study.name in _trail:
        raise AblateError(f"{study.path}: 'uses' cycle {' → '.join((*_trail, study.name))}")
    shared = [o for o in extra if o.split("=")[0].lstrip("+~").startswith(SHARED_EXTRA)]
    needed = uses_needed(study, scale, only)
    deps: list[Dependency] = []
    for name, (dep, dep_scale, use, path) in use_targets(study, scale, results_root).items():
        if name not in needed:
            continue
        deps += plan_dependencies(dep, dep_scale, results_root, extra, (*_trail, study.name),
                                  only=[use.step])
        plans = plan_study(dep, scale=dep_scale, seeds=[use.seed], only=[use.step],
                           results_root=results_root, extra=shared)
        deps.append(Dependency(dep, use.step, dep_scale, use.seed, path, plans))
    unique: dict[Path, Dependency] = {}
    for d in deps:
        unique.setdefault(d.plans[0].run_dir, d)
    return list(unique.values())


def _substitute(value: Any, paths: dict[str, Path]) -> Any:
    """Replace ``${uses.<name>}`` in override values by the used file's path."""
    from ablate.study.spec import USE_REF_RE

    if isinstance(value, str):
        return USE_REF_RE.sub(lambda m: str(paths[m.group(1)]), value)
    if isinstance(value, list):
        return [_substitute(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, paths) for k, v in value.items()}
    return value


def _trick_overrides(study: Study, extra: list[str], only: list[str] | None) -> dict[str, str]:
    """``--set tricks.<name>.<option>=…`` entries → the trick they set: such an entry applies to
    the steps where that trick is on (as a study's ``base`` does), and one that no selected
    step uses is an error."""
    from ablate.registry import TRICKS
    from ablate.tricks import check_tricks  # noqa: F401  (registers the tricks)

    steps = [s for s in study.steps if not only or s.id in only]
    out = {}
    for o in extra:
        parts = o.split("=", 1)[0].lstrip("+~").split(".")
        if parts[0] != "tricks" or len(parts) < 3:
            continue
        name = parts[1]
        if name not in TRICKS:
            raise AblateError(f"{study.path}: --set {o}: unknown trick '{name}'"
                              f"{did_you_mean(name, TRICKS)}")
        if not any(name in s.tricks for s in steps):
            raise AblateError(f"{study.path}: --set {o}: no step here uses trick '{name}'")
        out[o] = name
    return out


def plan_study(study: Study, *, scale: str, seeds: list[int] | int | None,
               only: list[str] | None,
               results_root: Path, extra: list[str] = ()) -> list[RunPlan]:
    """Compose and check every selected step × seed (``seeds``: exact seeds, or a count / None
    for :func:`seeds_for`). Raises ``AblateError`` before any run."""
    from ablate.data import DataSource  # noqa: F401  (registers datasets)
    from ablate.engine.values import check_schedule, check_values
    from ablate.registry import DATASETS
    from ablate.tricks import check_tricks  # (registers tricks)

    only = study.select(only)
    base = {**study.base, **study.scale_overrides(scale)}
    out_dir = study_results_dir(study, results_root, scale)
    check_owner(study, out_dir)
    trick_sets = _trick_overrides(study, extra, only)
    used = {name: t[3] for name, t in use_targets(study, scale, results_root).items()}
    plans, checked_data = [], {}  # data config → training images (None: not known)
    for step in study.steps:
        if only and step.id not in only:
            continue
        where = f"{study.path}: step '{step.id}': "
        for seed in seeds if isinstance(seeds, list) else seeds_for(study, seeds, step):
            chosen = _substitute(_for_tricks({**base, **step.overrides_at(scale)}, step.tricks,
                                              where), used)
            overrides = [*to_overrides(chosen),
                         f"tricks=[{','.join(step.tricks)}]", f"seed={seed}",
                         f"paths.results={results_root}",
                         *(o for o in extra if trick_sets.get(o) in (None, *step.tricks))]
            try:
                cfg = compose(overrides)
                check_tricks(list(cfg.get("tricks") or {}), cfg.model.task)
                check_values(cfg)
                # the data and every weights file, reported together: a user setting up a
                # full-scale study learns everything that is missing from one dry run
                problems = []
                data = OmegaConf.to_container(cfg.data, resolve=True)
                key = json.dumps(data, sort_keys=True)
                if key not in checked_data:
                    source = DATASETS.get(data.pop("name"))
                    if cfg.model.task not in source.tasks:
                        raise AblateError(f"dataset '{cfg.data.name}' has no {cfg.model.task} "
                                          "task")
                    try:
                        checked_data[key] = source.check(**data)
                    except AblateError as e:
                        problems.append(str(e))
                problems += missing_weight_files(cfg, produced=set(map(str, used.values())),
                                                 sources=study.sources)
                if problems:
                    raise AblateError("\n  ".join(problems))
                check_metrics(study, cfg)
                check_schedule(cfg, checked_data[key])
            except AblateError as e:
                raise AblateError(where + str(e)) from None
            run_dir = _inside(results_root, out_dir / step.id / f"seed{seed}")
            plans.append(RunPlan(step, seed, overrides, cfg, config_hash(cfg), run_dir))
    return plans


COCO_METRICS = ("map", "ap50", "ap75", "aps", "apm", "apl")


def run_metrics(cfg: Any) -> set[str]:
    """The metric names a run of ``cfg`` reports in ``metrics.json``: the task's (top-1/top-5;
    VOC mAP; COCO's AP family), ``<metric>@<size>`` for each of several detection eval sizes,
    and the training loss."""
    task = cfg.model.task
    if task == "classification":
        names = {"top1", "top5"}
    else:
        kw = cfg.model.get("task_kwargs") or {}
        metric = kw.get("metric") or cfg.data.get("metric")
        if metric == "proposals":  # an RPN's recall (ablate.tasks.rcnn.proposal_metrics)
            from ablate.eval.proposal_recall import PROPOSAL_NUMS, proposal_nums

            nums = proposal_nums(_plain_list(kw.get("proposal_nums", PROPOSAL_NUMS)))
            return {f"{p}{n}" for p in ("ar", "coco_ar") for n in nums} | {"train_loss"}
        names = set(COCO_METRICS) if metric == "coco" else {"map"}
        sizes = cfg.data.get("eval_size")
        if OmegaConf.is_list(sizes) and len(sizes) > 1:
            names |= {f"{n}@{s}" for n in list(names) for s in sizes}
    return names | {"train_loss"}


def _plain_list(value: Any) -> Any:
    return OmegaConf.to_container(value) if OmegaConf.is_list(value) else value


def check_metrics(study: Study, cfg: Any) -> None:
    """The study's ``metric`` and ``metrics`` are among what its runs report."""
    known = run_metrics(cfg)
    for m in study.metrics:
        if m not in known:
            raise AblateError(f"metric '{m}' is not reported by a {cfg.model.task} run on "
                              f"{cfg.data.name}{did_you_mean(m, known)} (it reports: "
                              f"{', '.join(sorted(known))})")


def weight_files(cfg: Any) -> dict[str, str]:
    """Every weights file a run reads (``model.weights``, ``model.backbone_weights``, a trick's
    ``weights`` such as a distillation teacher's), by config key."""
    out: dict[str, str] = {}

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif where.endswith("weights") and isinstance(node, str):
            out[where[1:]] = node

    tricks = cfg.get("tricks") or {}
    walk({"model": OmegaConf.to_container(cfg.model, resolve=True),
          "tricks": OmegaConf.to_container(tricks, resolve=True) if tricks else {}}, "")
    return out


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str) -> str | None:
    """SHA-256 of a file's content (None when it is missing), cached per size and mtime."""
    import hashlib

    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


def input_digests(cfg: Any) -> dict[str, dict[str, Any]]:
    """What a run consumes, by content: ``{key: {path, sha256}}`` of its weights files."""
    return {k: {"path": p, "sha256": file_digest(p)} for k, p in weight_files(cfg).items()}


def changed_inputs(plan: RunPlan) -> str | None:
    """Why a run's recorded inputs (``inputs.json``, written at launch) are not the files its
    config names now (a teacher or backbone retrained since), or None."""
    recorded = _read_json(plan.run_dir / INPUTS)
    if not isinstance(recorded, dict):
        return None  # a run from before inputs were recorded: nothing to compare
    for key, path in weight_files(plan.cfg).items():
        then = (recorded.get(key) or {}).get("sha256")
        now = file_digest(path)
        if then is not None and now != then:
            return (f"its input {key} ({path}) changed since it ran"
                    + ("" if now else ": the file is gone"))
    return None


def missing_weight_files(cfg: Any, produced: set[str] = frozenset(),
                         sources: dict[str, str] | None = None) -> list[str]:
    """Every configured weights file must exist — nothing is downloaded — unless a used study
    step will produce it (``produced``). Returns one line per missing file, with the study's
    ``sources`` entry for its key (how to get the file) where there is one."""
    missing = []
    tricks = cfg.get("tricks") or {}
    if "distill" in tricks and not tricks.distill.get("weights"):
        missing.append("tricks.distill.weights: the teacher's checkpoint is required (a local "
                       "file, or ${uses.<name>} for a step of a teacher study)")
    for key, path in weight_files(cfg).items():
        if path not in produced and not Path(path).is_file():
            how = (sources or {}).get(key)
            missing.append(f"{key}: no file at '{path}' (weights are local files: "
                           + (f"{how})" if how else
                              "point the key to a checkpoint, or set it to null)"))
    return missing


INPUTS = "inputs.json"  # the weights files a run read, by content (see ``changed_inputs``)
ACTIONS = ("run", "resume", "rerun", "share", "skip", "refuse")  # the order a summary names them


def plan_summary(plans: list[RunPlan], deps: list[Dependency], scale: str) -> str:
    """One line for the end of a dry run: how many runs and what happens to each, and, for the
    runs that would train at full scale, the paper's GPU-hours where the study gives them
    (a step's ``gpu_hours``)."""
    every = [*((d.scale, p) for d in deps for p in d.plans), *((scale, p) for p in plans)]
    counts = {a: sum(p.action == a for _, p in every) for a in ACTIONS}
    line = (f"{len(every)} run{'s' * (len(every) != 1)}: "
            + ", ".join(f"{n} to {a}" if a in ("run", "resume", "rerun", "share") else
                        f"{n} {'skipped' if a == 'skip' else 'refused'}"
                        for a, n in counts.items() if n))
    train = [(sc, p) for sc, p in every if p.action in ("run", "resume", "rerun")]
    full = [p for sc, p in train if sc == "full"]
    if not full:
        return line
    known = [p.step.gpu_hours for p in full if p.step.gpu_hours is not None]
    if not known:
        return line + "; GPU-hours: not known (the paper gives no training times for these runs)"
    of = "" if len(known) == len(full) else f", known for {len(known)} of the {len(full)}"
    return (line + f"; about {sum(known):,.0f} GPU-hours on the paper's hardware "
                   f"(the full-scale runs to train{of})")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def symlink_in(folder: Path) -> Path | None:
    """The first symbolic link at or under ``folder`` (not followed), or None."""
    if folder.is_symlink():
        return folder
    for top, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            if (Path(top) / name).is_symlink():
                return Path(top) / name
    return None


def checkpoint_hash(path: Path) -> str | None:
    """The config hash a checkpoint was written under, read without loading its tensors
    (memory-mapped); raises for a file that is not a readable checkpoint."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return state.get("config_hash") if isinstance(state, dict) else None


def decide(plan: RunPlan, force: bool) -> None:
    """Set ``plan.action``: skip a completed run of the same config, resume an interrupted one,
    retry a failed one; refuse (unless ``force``, which moves it aside and starts again) a run
    of another config, or one whose files are damaged. A folder without a result or a
    checkpoint holds nothing to keep: it is simply run again."""
    d = plan.run_dir
    if not d.exists() or not any(d.iterdir()):
        plan.action = "run"
        return
    link = symlink_in(d)
    if link is not None:  # a write there could land anywhere: never write into this folder
        plan.action = "rerun" if force else "refuse"
        plan.reason = f"{link} is a symbolic link"
        return
    ckpt = d / "checkpoints" / "last.pt"
    has_metrics, has_ckpt = (d / "metrics.json").exists(), ckpt.is_file()
    if not has_metrics and not has_ckpt:
        plan.action, plan.reason = "rerun", "started before, no checkpoint"
        return
    metrics = _read_json(d / "metrics.json") if has_metrics else None
    problem = None
    try:
        old_hash = config_hash(OmegaConf.load(d / "config.yaml")) \
            if (d / "config.yaml").is_file() else None
    except Exception as e:  # noqa: BLE001  (YAML or OmegaConf errors: a damaged file)
        old_hash, problem = None, f"its config.yaml is unreadable ({_first_line(e)})"
    if problem is None and old_hash != plan.hash:
        problem = f"its config changed ({old_hash} → {plan.hash})"
    if problem is None and has_metrics and not (isinstance(metrics, dict) and
                                               metrics.get("status") in (COMPLETED, FAILED)):
        problem = "its metrics.json is unreadable or not a result"
    if problem is None:
        problem = changed_inputs(plan)
    if problem is None and metrics is None:  # interrupted: can its checkpoint resume it?
        try:
            ck_hash = checkpoint_hash(ckpt)
        except Exception as e:  # noqa: BLE001  (a truncated or foreign file)
            problem = f"its checkpoint {ckpt.name} is unreadable ({_first_line(e)})"
        else:
            if not matches(ck_hash, plan.cfg):
                problem = f"its checkpoint belongs to another config ({ck_hash} ≠ {plan.hash})"
    if problem is not None:
        plan.action, plan.reason = ("rerun" if force else "refuse"), problem
    elif metrics is not None and (metrics["status"] == COMPLETED
                                  or metrics.get("diverged") is not None):
        plan.action, plan.result = ("rerun", {}) if force else ("skip", metrics)
        plan.reason = ("--force" if force else "completed" if metrics["status"] == COMPLETED
                       else f"diverged before (a result): {metrics.get('reason')}")
    elif metrics is not None:
        plan.action, plan.reason = "rerun", f"failed before: {metrics.get('reason')}"
    else:
        plan.action, plan.reason = ("rerun", "interrupted, --force") if force else \
            ("resume", "interrupted")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def set_aside(plan: RunPlan, out_dir: Path) -> None:
    """Move an existing run out of the way (never delete a result)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = out_dir / ".replaced" / f"{plan.step.id}-seed{plan.seed}-{stamp}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(plan.run_dir), dest)


@contextmanager
def study_lock(out_dir: Path) -> Iterator[None]:
    """One ``ablate run`` per study and scale at a time (with ``launcher=multinode``, node 0's:
    the other nodes take no lock and write nothing here, see ``ablate.launch.multinode``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / ".lock"
    try:
        f = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o666), "r+")
    except OSError as e:
        raise AblateError(f"cannot open the study lock {path}: {e.strerror}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise AblateError(f"{out_dir} is in use by another `ablate run` ({holder}); wait for it "
                          "to finish") from None
    f.truncate(0)
    f.write(f"pid {os.getpid()}")
    f.flush()
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def write_run_files(plan: RunPlan) -> Path:
    """Write the run's resolved ``config.yaml`` (what the worker reads) and ``overrides.yaml``
    (how it was chosen) into its run folder; returns the config's path."""
    link = symlink_in(plan.run_dir)
    if link is not None:
        raise AblateError(f"{link} is a symbolic link: refusing to write into {plan.run_dir}; "
                          "remove it (or the run folder) first")
    config = plan.run_dir / "config.yaml"
    atomic_write_text(config, OmegaConf.to_yaml(plan.cfg))
    atomic_write_text(plan.run_dir / INPUTS, json.dumps(input_digests(plan.cfg), indent=2) + "\n")
    atomic_write_text(plan.run_dir / "overrides.yaml",
                      OmegaConf.to_yaml(OmegaConf.create({"step": plan.step.id, "seed": plan.seed,
                                                          "tricks": plan.step.tricks,
                                                          "overrides": plan.overrides})))
    return config
