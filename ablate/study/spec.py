"""Study files: schema, step resolution and validation.

A study lists the rows of a paper table as steps. Each step names its ``parent`` (default: the
previous step; the first step has none) and changes the parent by ``add``-ing and ``remove``-ing
tricks and ``set``-ting config values. Steps resolve to explicit, ordered trick lists and
override lists — never chains of ``+`` overrides — so every row can be composed on its own.

A study may ``uses`` the output of another study's step — a distillation teacher, a pretrained
backbone — by name: ``uses: {teacher: {study: fmnist_teacher, step: teacher}}`` and then
``${uses.teacher}`` in any override value stands for that run's ``checkpoints/last.pt`` under
the same results root. ``ablate run`` runs (or reuses) that step first.

A study may have ``columns``: the same chain of steps run under several settings side by side,
as the paper's tables do (batch 256 | 1024; ResNet-50-D | Inception-V3 | MobileNet). Each
column adds/removes tricks and sets values for every step (its ``set`` wins over a step's) and
may ask for its own number of seeds; a step's ``ref`` then maps each column to its reference
values. Every step × column becomes one run ``<step>.<column>`` with parent
``<parent>.<column>``, so each column is a chain (or tree) of its own, and the report puts the
columns beside each other.

Everything is checked before anything runs; each problem is reported with the file, the step and
the item at fault.

``layout`` says how the report reads the table. ``chain`` (the default): each row is a trick
added to (or removed from) its parent, with Δ and cumulative Δ. ``grid``: rows × columns of two
settings (a sweep of one or two values, e.g. loss × loss weight), every cell a value of its own.
``factorial``: a 2 × 2 grid of two switches (e.g. mixup in pre-training × mixup in detection),
reported with both simple effects of each switch and their interaction. A grid step's
``skip_columns`` lists the columns where the paper has no number: those cells are not run and
the report leaves them empty.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ablate.errors import AblateError, did_you_mean

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # safe as one path component
SCALES = ("full", "long", "proxy", "smoke")  # long: a proxy trained longer, for rows
# that only part after more epochs than the proxy gives (fscenes_yolov3's augmentation rows)
STUDY_KEYS = {
    "name": "study id (results folder name)", "title": "human title",
    "paper": "paper the table comes from", "table": "table id (see docs/tables.md)",
    "metric": "primary metric", "metrics": "metrics shown in the report",
    "base": "overrides for every step", "scales": "per-scale overrides",
    "default_scale": "scale used when --scale is not given", "seeds": "default number of seeds",
    "seed": "first seed", "steps": "ordered rows", "notes": "free text",
    "uses": "other studies' step outputs this study reads (name: {study, step, ...})",
    "columns": "settings the whole chain runs under side by side (list of {id, label, ...})",
    "time": "show each run's wall time in the report: total (h) | total_min | per_epoch (min)",
    "layout": "how the report reads the table: chain (default) | grid | factorial",
    "rows_title": "header of the row labels in a grid or factorial report",
    "sources": "where the local files named by config keys come from (key: how to get it), "
               "shown when such a file is missing",
}
COLUMN_KEYS = {"id": "column id (run folder suffix)", "label": "header in the report",
               "add": "tricks on in every step", "remove": "tricks off in every step",
               "set": "overrides for every step", "scales": "per-scale overrides",
               "seeds": "seeds per step in this column (default: the study's)"}
TIME_MODES = ("total", "total_min", "per_epoch")
LAYOUTS = ("chain", "grid", "factorial")
USE_KEYS = {"study": "the study's name or file (relative to this file)", "step": "its step id",
            "scale": "its scale (default: this run's scale)", "seed": "its seed (default 0)",
            "file": "the file inside its run folder (default checkpoints/last.pt)"}
USE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
USE_REF_RE = re.compile(r"\$\{uses\.([^}]*)\}")
STEP_KEYS = {"id", "label", "parent", "add", "remove", "set", "scales", "ref", "ref_delta",
             "gpu_hours", "notes", "skip_columns"}


@dataclass(frozen=True)
class StepSpec:
    """A step as the file writes it, checked but not resolved: what it changes in its parent."""

    id: str
    label: str
    parent: str | None
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-scale ``set``
    ref: dict[str, float] = field(default_factory=dict)
    ref_failed: tuple[str, ...] = ()  # metrics the paper reports as "failed" (no number)
    ref_delta: dict[str, float] = field(default_factory=dict)
    gpu_hours: float | None = None
    # a study with columns keys these by column: {"ref"|"ref_delta": {column: {metric: v}}}
    column_refs: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    column_gpu_hours: dict[str, float] = field(default_factory=dict)
    skip_columns: tuple[str, ...] = ()  # grid cells not run (the paper has no number)


@dataclass(frozen=True)
class Step:
    """One run row, resolved: its explicit trick list and overrides (parents applied, and its
    column's changes when the study has columns)."""

    id: str
    label: str
    parent: str | None
    tricks: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    scale_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    root: str = ""  # the first step of its chain (cumulative Δ)
    ref: dict[str, float] = field(default_factory=dict)
    ref_failed: tuple[str, ...] = ()  # metrics the paper reports as "failed" (no number)
    ref_delta: dict[str, float] = field(default_factory=dict)
    gpu_hours: float | None = None  # the paper's GPU-hours for one full-scale run, if known
    base: str = ""  # the step id in the file (``<base>.<column>`` is the id with columns)
    column: str | None = None
    seeds: int | None = None  # the column's seed count

    def overrides_at(self, scale: str) -> dict[str, Any]:
        """This step's overrides (inherited ``set`` + its scale's ``scales`` entries)."""
        return {**self.overrides, **self.scale_overrides.get(scale, {})}


@dataclass(frozen=True)
class Use:
    """Another study's step output read by this study (see the module docstring)."""
    name: str
    study: str
    step: str
    scale: str | None = None
    seed: int = 0
    file: str = "checkpoints/last.pt"


@dataclass(frozen=True)
class Column:
    id: str
    label: str
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    set: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: int | None = None


@dataclass
class Study:
    path: Path
    name: str
    title: str
    metric: str
    metrics: list[str]
    steps: list[Step]
    base: dict[str, Any] = field(default_factory=dict)
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_scale: str = "full"
    seeds: int = 1
    seed: int = 0
    paper: str = ""
    table: str = ""
    uses: dict[str, Use] = field(default_factory=dict)
    columns: list[Column] = field(default_factory=list)
    time: str | None = None  # total | per_epoch: wall time in the report
    layout: str = "chain"  # chain | grid | factorial (see the module docstring)
    rows_title: str = "step"
    sources: dict[str, str] = field(default_factory=dict)  # config key → how to get its file
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def base_steps(self) -> list[Step]:
        """The rows as written in the file (one per step, whatever the columns)."""
        seen: dict[str, Step] = {}
        for s in self.steps:
            seen.setdefault(s.base or s.id, s)
        return list(seen.values())

    def select(self, only: list[str] | None) -> list[str] | None:
        """``--only`` ids → step ids; a row's id stands for all its columns."""
        if not only:
            return only
        ids = [s.id for s in self.steps]
        out: list[str] = []
        for o in only:
            match = [s.id for s in self.steps if s.id == o or s.base == o]
            if not match:
                raise AblateError(f"{self.path}: --only '{o}': no such step"
                                  f"{did_you_mean(o, ids + [s.base for s in self.steps])}")
            out += [m for m in match if m not in out]
        return out

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise AblateError(f"{self.path}: no step '{step_id}'"
                          f"{did_you_mean(step_id, [s.id for s in self.steps])}")

    def scale_overrides(self, scale: str) -> dict[str, Any]:
        if scale not in SCALES:
            raise AblateError(f"unknown scale '{scale}'{did_you_mean(scale, SCALES)}; "
                              f"use one of {', '.join(SCALES)}")
        if scale != "full" and scale not in self.scales:
            raise AblateError(f"{self.path}: study '{self.name}' defines no '{scale}' scale "
                              f"(it has: {', '.join(['full', *self.scales]) })")
        return dict(self.scales.get(scale) or {})


def _err(path: Path, where: str, msg: str) -> AblateError:
    return AblateError(f"{path}: {where}{msg}")


def _mapping(path: Path, where: str, value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, where, f"'{what}' must be a mapping of key: value, "
                                f"got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _names(path: Path, where: str, value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _err(path, where, f"'{what}' must be a list of trick names")
    return tuple(value)


def _refs(path: Path, where: str, value: Any, what: str
          ) -> tuple[dict[str, float], tuple[str, ...]]:
    """A step's ``ref``: numbers, or ``failed`` where the paper reports a run that failed."""
    raw = _mapping(path, where, value, what)
    failed = tuple(k for k, v in raw.items() if v == "failed")
    return _numbers(path, where, {k: v for k, v in raw.items() if k not in failed}, what), failed


def _numbers(path: Path, where: str, value: Any, what: str) -> dict[str, float]:
    out = {}
    for k, v in _mapping(path, where, value, what).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _err(path, where, f"'{what}.{k}' must be a number, got {v!r}")
        out[k] = float(v)
    return out


MAX_VALUES = 100_000  # a study file expands to far fewer values, aliases included


def check_expansion(root: Any, path: Path) -> None:
    """Refuse YAML whose aliases expand without bound (a "billion laughs" file, or an alias of
    its own parent) before anything expands it: counts the values it stands for, each node
    once."""
    sizes: dict[int, int] = {}
    visiting: set[int] = set()

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in visiting:
            raise AblateError(f"{path}: a YAML alias refers to its own parent (an endless value)")
        visiting.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(c) for c in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        visiting.discard(id(node))
        if n > MAX_VALUES:
            raise AblateError(f"{path}: expands to more than {MAX_VALUES:,} values through YAML "
                              "aliases; refusing to read it")
        sizes[id(node)] = n
        return n

    if root is not None:
        size(root)


def load_study(path: str | Path) -> Study:
    """Read, check and resolve a study file. Raises ``AblateError`` naming file/step/item."""
    path = Path(path)
    raw = _read(path)
    for k in raw:
        if k not in STUDY_KEYS:
            raise _err(path, "", f"unknown key '{k}'{did_you_mean(k, STUDY_KEYS)}")
    for k in ("name", "metric", "steps"):
        if k not in raw:
            raise _err(path, "", f"missing required key '{k}' ({STUDY_KEYS[k]})")
    name = str(raw["name"])
    if not ID_RE.match(name):
        raise _err(path, "", f"name '{name}' must be letters, digits, '_', '-', '.'")
    scales = _mapping(path, "", raw.get("scales"), "scales")
    for s, v in scales.items():
        if s not in SCALES:
            raise _err(path, "scales: ", f"unknown scale '{s}'{did_you_mean(s, SCALES)}")
        scales[s] = _mapping(path, f"scales.{s}: ", v, s)
    default_scale = raw.get("default_scale", "full")
    if default_scale not in SCALES or (default_scale != "full" and default_scale not in scales):
        raise _err(path, "", f"default_scale '{default_scale}' is not a defined scale")
    metric = str(raw["metric"])
    metrics = [str(m) for m in raw.get("metrics") or [metric]]
    if metric not in metrics:
        metrics.insert(0, metric)
    for k in ("seeds", "seed"):
        if k in raw and (isinstance(raw[k], bool) or not isinstance(raw[k], int) or raw[k] < 0
                         or (k == "seeds" and raw[k] < 1)):
            raise _err(path, "", f"'{k}' must be a {'positive' if k == 'seeds' else 'non-negative'}"
                                 f" integer, got {raw[k]!r}")
    columns = _parse_columns(path, raw.get("columns"))
    specs = _parse_steps(path, raw["steps"], [c.id for c in columns])
    time_mode, layout = raw.get("time"), raw.get("layout", "chain")
    _check_layout(path, layout, time_mode, len(specs), len(columns))
    for spec in specs:
        if spec.skip_columns and layout != "grid":
            raise _err(path, f"step '{spec.id}': ", f"'skip_columns' leaves cells of a grid "
                                                    f"empty: it needs layout: grid, not {layout}")
    base = _mapping(path, "", raw.get("base"), "base")
    uses = _parse_uses(path, raw.get("uses"))
    _check_overrides(path, uses, [("base", base), *[(f"scales.{k}", v) for k, v in scales.items()],
                                  *_override_maps("step", specs),
                                  *_override_maps("column", columns)])
    steps = _resolve(path, specs)
    if columns:
        steps = _expand_columns(path, steps, {s.id: s for s in specs}, columns)
    return Study(path=path, name=name, title=str(raw.get("title", name)), metric=metric,
                 metrics=metrics, steps=steps, base=base, scales=scales,
                 default_scale=default_scale, seeds=int(raw.get("seeds", 1)),
                 seed=int(raw.get("seed", 0)), paper=str(raw.get("paper", "")),
                 table=str(raw.get("table", "")), uses=uses, columns=columns, time=time_mode,
                 layout=layout, rows_title=str(raw.get("rows_title", "step")),
                 sources={k: str(v) for k, v in
                          _mapping(path, "", raw.get("sources"), "sources").items()},
                 raw=raw)


def _read(path: Path) -> dict[str, Any]:
    """The file's YAML mapping, with one readable error for whatever is wrong with it."""
    if not path.is_file():
        raise AblateError(f"study file {path} does not exist")
    try:
        text = path.read_text()
        check_expansion(yaml.compose(text, Loader=yaml.SafeLoader), path)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise AblateError(f"{path}: malformed YAML: {e}".replace("\n", " ")) from None
    except (UnicodeDecodeError, RecursionError) as e:
        what = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else "nested too deeply"
        raise AblateError(f"{path}: {what}") from None
    if not isinstance(raw, dict):
        raise AblateError(f"{path}: a study must be a YAML mapping with 'name' and 'steps'")
    return raw


def _check_layout(path: Path, layout: Any, time_mode: Any, n_steps: int, n_columns: int
                  ) -> None:
    if time_mode is not None and time_mode not in TIME_MODES:
        raise _err(path, "", f"'time' must be one of {', '.join(TIME_MODES)}, got {time_mode!r}")
    if layout not in LAYOUTS:
        raise _err(path, "", f"'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}"
                             f"{did_you_mean(str(layout), LAYOUTS)}")
    if layout != "chain" and not n_columns:
        raise _err(path, "", f"layout '{layout}' needs 'columns' (the table's second axis)")
    if layout != "chain" and time_mode is not None:
        raise _err(path, "", f"'time' is shown in chain reports only, not with layout "
                             f"'{layout}'")
    if layout == "factorial" and (n_steps != 2 or n_columns != 2):
        raise _err(path, "", f"layout 'factorial' crosses two switches: it needs exactly 2 "
                             f"steps and 2 columns, got {n_steps} and {n_columns} "
                             "(use layout: grid for larger tables)")


def _override_maps(kind: str, items: list[StepSpec] | list[Column]
                   ) -> list[tuple[str, dict[str, Any]]]:
    """Each step's or column's ``set`` and ``scales.<scale>`` mappings, named for errors."""
    out = []
    for it in items:
        out.append((f"{kind} '{it.id}': set", it.set))
        out += [(f"{kind} '{it.id}': scales.{k}", v) for k, v in it.scales.items()]
    return out


def _check_overrides(path: Path, uses: dict[str, Use],
                     maps: list[tuple[str, dict[str, Any]]]) -> None:
    """Tricks are chosen by add/remove only; every ``${uses.x}`` names a declared use."""
    for where, m in maps:
        if "tricks" in m:
            raise _err(path, f"{where}: ", "choose tricks with a step's add/remove, not 'tricks'")
        for key, value in m.items():
            for ref in USE_REF_RE.findall(str(value)):
                if ref not in uses:
                    raise _err(path, f"{where}: {key}: ", f"'${{uses.{ref}}}' is not declared "
                                                          f"under 'uses'"
                                                          f"{did_you_mean(ref, uses)}")


def _parse_columns(path: Path, raw: Any) -> list[Column]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        raise _err(path, "", "'columns' must be a non-empty list of {id, label, ...}")
    out: list[Column] = []
    for i, rc in enumerate(raw):
        if not isinstance(rc, dict) or "id" not in rc:
            raise _err(path, f"column #{i + 1}: ", "each column must be a mapping with an 'id'")
        cid = str(rc["id"])
        where = f"column '{cid}': "
        if not ID_RE.match(cid) or "." in cid:
            raise _err(path, where, "id must be letters, digits, '_', '-'")
        if cid in (c.id for c in out):
            raise _err(path, where, "duplicate column id")
        for k in rc:
            if k not in COLUMN_KEYS:
                raise _err(path, where, f"unknown key '{k}'{did_you_mean(k, COLUMN_KEYS)}")
        seeds = rc.get("seeds")
        if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int)
                                  or seeds < 1):
            raise _err(path, where, f"'seeds' must be a positive integer, got {seeds!r}")
        out.append(Column(cid, str(rc.get("label", cid)),
                          add=_names(path, where, rc.get("add"), "add"),
                          remove=_names(path, where, rc.get("remove"), "remove"),
                          set=_mapping(path, where, rc.get("set"), "set"),
                          scales=_step_scales(path, where, rc.get("scales")), seeds=seeds))
    return out


def apply_tricks(tricks: list[str], *, add: tuple[str, ...], remove: tuple[str, ...],
                 path: Path, where: str, whose: str, added_by: str) -> list[str]:
    """``tricks`` without ``remove`` and then with ``add`` (in that order, as a step or a
    column states them); removing what is off or adding what is on is an error naming it."""
    out = list(tricks)
    for t in remove:
        if t not in out:
            raise _err(path, where, f"cannot remove '{t}': {whose} tricks are "
                                    f"[{', '.join(out)}]{did_you_mean(t, out)}")
        out.remove(t)
    for t in add:
        if t in out:
            raise _err(path, where, f"'{t}' is already on (added by {added_by})")
        out.append(t)
    return out


def _expand_columns(path: Path, steps: list[Step], specs: dict[str, StepSpec],
                    columns: list[Column]) -> list[Step]:
    """Every step × column as a step of its own; columns run one after the other."""
    out: list[Step] = []
    for c in columns:
        for s in steps:
            spec = specs[s.id]
            if c.id in spec.skip_columns:
                continue
            if s.parent is not None and c.id in specs[s.parent].skip_columns:
                raise _err(path, f"step '{s.id}': ", f"its parent '{s.parent}' skips column "
                                                     f"'{c.id}', where it runs")
            tricks = apply_tricks(s.tricks, add=c.add, remove=c.remove, path=path,
                                  where=f"step '{s.id}', column '{c.id}': ", whose="the step's",
                                  added_by="the step or an ancestor")
            out.append(Step(
                id=f"{s.id}.{c.id}", label=s.label,
                parent=None if s.parent is None else f"{s.parent}.{c.id}",
                tricks=tricks, overrides={**s.overrides, **c.set},
                scale_overrides=_with_scales(s.scale_overrides, c.scales),
                root=f"{s.root}.{c.id}",
                ref=dict(spec.column_refs.get("ref", {}).get(c.id, {})),
                ref_delta=dict(spec.column_refs.get("ref_delta", {}).get(c.id, {})),
                gpu_hours=spec.column_gpu_hours.get(c.id), base=s.id, column=c.id,
                seeds=c.seeds))
    return out


def _with_scales(inherited: dict[str, dict[str, Any]], scales: dict[str, dict[str, Any]]
                 ) -> dict[str, dict[str, Any]]:
    """Per-scale overrides: a copy of ``inherited`` updated by ``scales``."""
    out = {k: dict(v) for k, v in inherited.items()}
    for scale, m in scales.items():
        out.setdefault(scale, {}).update(m)
    return out


def _parse_uses(path: Path, raw: Any) -> dict[str, Use]:
    uses = {}
    for name, spec in _mapping(path, "", raw, "uses").items():
        where = f"uses.{name}: "
        if not USE_NAME_RE.match(name):
            raise _err(path, where, "a use's name must be letters, digits and '_'")
        spec = _mapping(path, where, spec, f"uses.{name}")
        for k in spec:
            if k not in USE_KEYS:
                raise _err(path, where, f"unknown key '{k}'{did_you_mean(k, USE_KEYS)}")
        for k in ("study", "step"):
            if not isinstance(spec.get(k), str) or not spec[k]:
                raise _err(path, where, f"'{k}' is required ({USE_KEYS[k]})")
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise _err(path, where, f"'seed' must be a non-negative integer, got {seed!r}")
        scale = spec.get("scale")
        if scale is not None and scale not in SCALES:
            raise _err(path, where, f"unknown scale '{scale}'{did_you_mean(str(scale), SCALES)}")
        file = str(spec.get("file", "checkpoints/last.pt"))
        if Path(file).is_absolute() or ".." in Path(file).parts:
            raise _err(path, where, f"'file' must be a path inside the run folder, got '{file}'")
        uses[name] = Use(name, spec["study"], spec["step"], scale, seed, file)
    return uses


def _column_numbers(path: Path, where: str, value: Any, what: str,
                    columns: list[str]) -> dict[str, dict[str, float]]:
    """``{column: {metric: value}}`` (a study with columns)."""
    out = {}
    for col, v in _mapping(path, where, value, what).items():
        if col not in columns:
            raise _err(path, where, f"'{what}' is keyed by column; no column '{col}'"
                                    f"{did_you_mean(col, columns)} (columns: "
                                    f"{', '.join(columns)})")
        out[col] = _numbers(path, where, v, f"{what}.{col}")
    return out


def _parse_steps(path: Path, raw_steps: Any, columns: list[str] = ()) -> list[StepSpec]:
    if not isinstance(raw_steps, list) or not raw_steps:
        raise _err(path, "", "'steps' must be a non-empty list")
    steps: list[StepSpec] = []
    seen: set[str] = set()
    for i, rs in enumerate(raw_steps):
        if not isinstance(rs, dict) or "id" not in rs:
            raise _err(path, f"step #{i + 1}: ", "each step must be a mapping with an 'id'")
        sid = str(rs["id"])
        where = f"step '{sid}': "
        if not ID_RE.match(sid):
            raise _err(path, where, "id must be letters, digits, '_', '-', '.'")
        if sid in seen:
            raise _err(path, where, "duplicate step id")
        seen.add(sid)
        for k in rs:
            if k not in STEP_KEYS:
                raise _err(path, where, f"unknown key '{k}'{did_you_mean(k, STEP_KEYS)}")
        parent = rs.get("parent", steps[-1].id if steps else None)
        common = dict(id=sid, label=str(rs.get("label", sid)),
                      parent=None if parent is None else str(parent),
                      add=_names(path, where, rs.get("add"), "add"),
                      remove=_names(path, where, rs.get("remove"), "remove"),
                      set=_mapping(path, where, rs.get("set"), "set"),
                      scales=_step_scales(path, where, rs.get("scales")))
        if columns:
            spec = StepSpec(
                **common, column_refs={k: _column_numbers(path, where, rs.get(k), k, columns)
                                       for k in ("ref", "ref_delta")},
                column_gpu_hours=_column_gpu_hours(path, where, rs.get("gpu_hours"), columns),
                skip_columns=_skip_columns(path, where, rs.get("skip_columns"), columns))
            for what, by_column in [*spec.column_refs.items(),
                                    ("gpu_hours", spec.column_gpu_hours)]:
                both = sorted(set(by_column) & set(spec.skip_columns))
                if both:
                    raise _err(path, where, f"'{what}' gives column '{both[0]}', which "
                                            "skip_columns leaves out")
            steps.append(spec)
        else:
            if "skip_columns" in rs:
                raise _err(path, where, "'skip_columns' needs the study's 'columns'")
            ref, failed = _refs(path, where, rs.get("ref"), "ref")
            steps.append(StepSpec(
                **common, ref=ref, ref_failed=failed,
                ref_delta=_numbers(path, where, rs.get("ref_delta"), "ref_delta"),
                gpu_hours=_gpu_hours(path, where, rs.get("gpu_hours"))))
    return steps


def _skip_columns(path: Path, where: str, value: Any, columns: list[str]) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value if value is not None else []
    if not isinstance(names, list) or not all(isinstance(v, str) for v in names):
        raise _err(path, where, "'skip_columns' must be a list of column ids")
    for name in names:
        if name not in columns:
            raise _err(path, where, f"skip_columns: unknown column '{name}'"
                                    f"{did_you_mean(name, columns)}; columns: {', '.join(columns)}")
    if len(set(names)) == len(columns):
        raise _err(path, where, "skip_columns leaves no column to run")
    return tuple(names)


def _gpu_hours(path: Path, where: str, value: Any, what: str = "gpu_hours") -> float | None:
    """The paper's GPU-hours for one full-scale run: a positive number, or absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise _err(path, where, f"'{what}' must be a positive number of GPU-hours, "
                                f"got {value!r}")
    return float(value)


def _column_gpu_hours(path: Path, where: str, value: Any,
                      columns: list[str]) -> dict[str, float]:
    """``gpu_hours`` in a study with columns: one number for every column, or per column."""
    if value is None or not isinstance(value, dict):
        hours = _gpu_hours(path, where, value)
        return {} if hours is None else dict.fromkeys(columns, hours)
    out = {}
    for col, v in _mapping(path, where, value, "gpu_hours").items():
        if col not in columns:
            raise _err(path, where, f"'gpu_hours' is keyed by column; no column '{col}'"
                                    f"{did_you_mean(col, columns)}")
        out[col] = _gpu_hours(path, where, v, f"gpu_hours.{col}")
    return out


def _step_scales(path: Path, where: str, value: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for scale, m in _mapping(path, where, value, "scales").items():
        if scale not in SCALES:
            raise _err(path, where, f"unknown scale '{scale}'{did_you_mean(scale, SCALES)}")
        out[scale] = _mapping(path, where, m, f"scales.{scale}")
    return out


def _resolve(path: Path, specs: list[StepSpec]) -> list[Step]:
    """Every step with its explicit trick list and overrides, walking parents first."""
    by_id = {s.id: s for s in specs}
    done: dict[str, Step] = {}

    def visit(s: StepSpec, trail: tuple[str, ...]) -> Step:
        if s.id in done:
            return done[s.id]
        where = f"step '{s.id}': "
        if s.id in trail:
            raise _err(path, where, f"parent cycle {' → '.join((*trail, s.id))}")
        parent = Step(id="", label="", parent=None, root=s.id)  # a first step's empty parent
        if s.parent is not None:
            if s.parent not in by_id:
                raise _err(path, where, f"parent '{s.parent}' does not exist"
                                        f"{did_you_mean(s.parent, by_id)}")
            parent = visit(by_id[s.parent], (*trail, s.id))
        done[s.id] = Step(
            id=s.id, label=s.label, parent=s.parent,
            tricks=apply_tricks(parent.tricks, add=s.add, remove=s.remove, path=path,
                                where=where, whose="the parent's", added_by="an ancestor"),
            overrides={**parent.overrides, **s.set},
            scale_overrides=_with_scales(parent.scale_overrides, s.scales), root=parent.root,
            ref=s.ref, ref_failed=s.ref_failed, ref_delta=s.ref_delta, gpu_hours=s.gpu_hours,
            base=s.id)
        return done[s.id]

    return [visit(s, ()) for s in specs]


def find_study(name_or_path: str, studies_dir: Path) -> Path:
    """A study by path, or by name in ``studies/``."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    cand = studies_dir / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    known = [q.stem for q in studies_dir.glob("*.yaml")]
    raise AblateError(f"study '{name_or_path}' not found{did_you_mean(p.stem, known)}; "
                      f"studies in {studies_dir}: {', '.join(sorted(known))}")
