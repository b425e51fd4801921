"""The Δ table: per step, our metric (mean ± std over seeds), Δ vs its parent and the cumulative
Δ vs the root of its chain (the baseline; a removal row's parent is the baseline), beside the
paper's value and its deltas. Deltas are always computed from the metric columns, never copied:
where a study records the paper's printed Δ and it disagrees with the paper's own metric
column, the report says so.

A study with columns (the same chain under several settings) puts the columns side by side,
one row per step of the file, as the paper does. With ``time:`` set, each run's wall time is
shown (``total`` in hours, ``total_min`` in minutes, ``per_epoch`` in minutes per epoch),
averaged over seeds, beside the paper's ``time`` reference value where a step records one (in
its own unit: the paper's hours on its GPUs). Where every step stands alone (``parent: null``,
as MegDet's rows do), there is no Δ to show and the table has none.

A ``grid`` study (rows × columns of two settings) is shown as that matrix of the primary
metric, ours beside the paper's; a ``factorial`` one (2 × 2, two switches) adds the effect of
each switch at either level of the other (the Δ column and the Δ row) and their interaction,
(d − c) − (b − a), in the corner.

Reads only ``metrics.json`` files and the study file (never logs). A ``metrics.json`` that
cannot be read or is not a result of schema version 1 is never skipped silently: its row says
``broken``, a note names the file and the fault, and ``Report.broken`` lists them (the CLI's
exit code then says so).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.study.spec import Study, load_study

TOL = 0.005  # printed numbers have two decimals


@dataclass
class Row:
    id: str
    label: str
    parent: str | None
    root: str
    status: str  # completed | partial | failed | broken | interrupted | not run
    seeds: list[int] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    delta: float | None = None
    cum_delta: float | None = None
    ref: dict[str, float] = field(default_factory=dict)
    ref_failed: list[str] = field(default_factory=list)  # the paper's "failed" cells
    ref_delta: float | None = None
    ref_cum_delta: float | None = None
    wall_time_s: float | None = None
    epoch_time_s: float | None = None
    notes: list[str] = field(default_factory=list)
    base: str = ""
    column: str | None = None


@dataclass
class Report:
    study: str
    title: str
    table: str
    paper: str
    metric: str
    metrics: list[str]
    scale: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)  # (id, label)
    time: str | None = None
    layout: str = "chain"
    rows_title: str = "step"
    effects: dict[str, dict[str, Any]] = field(default_factory=dict)  # factorial: ours, paper
    broken: list[str] = field(default_factory=list)  # "path: fault" of unreadable results


def schema_fault(m: Any) -> str | None:
    """What makes ``m`` not a ``metrics.json`` of schema version 1, or None."""
    if not isinstance(m, dict):
        return "not a JSON object"
    if m.get("schema_version") != 1:
        return f"schema_version {m.get('schema_version')!r}, expected 1"
    if m.get("status") not in ("completed", "failed"):
        return f"status {m.get('status')!r}, expected completed or failed"
    seed = m.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        return f"seed {seed!r} is not an integer"
    metrics = m.get("metrics")
    if not isinstance(metrics, dict) or not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in metrics.values()):
        return "'metrics' is not a mapping of numbers"
    return None


def _runs(step_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A step's results, and the faults of those that cannot be used (``path: fault``)."""
    out, broken = [], []
    for p in sorted(step_dir.glob("seed*/metrics.json")):
        try:
            m = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            broken.append(f"{p}: unreadable ({why})")
            continue
        fault = schema_fault(m)
        if fault:
            broken.append(f"{p}: {fault}")
        else:
            out.append(m)
    return out, broken


def build_report(study: Study, results_dir: Path, scale: str) -> Report:
    """Collect every step's runs under ``results_dir`` and compute the deltas."""
    rows: dict[str, Row] = {}
    all_broken: list[str] = []
    for s in study.steps:
        runs, broken = _runs(results_dir / s.id)
        all_broken += broken
        done = [r for r in runs if r.get("status") == "completed"]
        failed = [r for r in runs if r.get("status") == "failed"]
        # a run folder with a checkpoint and no result: stopped or killed, resumes next time
        interrupted = sorted(int(p.parent.parent.name[4:]) for p in
                             (results_dir / s.id).glob("seed*/checkpoints/last.pt")
                             if not (p.parent.parent / "metrics.json").exists()
                             and p.parent.parent.name[4:].isdigit())
        status = ("completed" if done and not failed and not broken and not interrupted
                  else "partial" if done else "broken" if broken else "failed" if failed
                  else "interrupted" if interrupted else "not run")
        row = Row(s.id, s.label, s.parent, s.root, status, ref=dict(s.ref),
                  ref_failed=list(s.ref_failed), seeds=sorted(int(r.get("seed", 0)) for r in done), base=s.base or s.id,
                  column=s.column)
        for m in study.metrics:
            vals = [float(r["metrics"][m]) for r in done if m in r.get("metrics", {})]
            if vals:
                row.mean[m] = statistics.fmean(vals)
                row.std[m] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        if done:
            row.wall_time_s = statistics.fmean(float(r.get("wall_time_s", 0)) for r in done)
            if all("train_time_s" in r for r in done):
                row.epoch_time_s = statistics.fmean(
                    float(r["train_time_s"]) / max(int(r.get("epochs", 1)), 1) for r in done)
        for r in failed:
            row.notes.append(f"seed {r.get('seed')} failed: {r.get('reason')}")
        row.notes += [f"broken result {b}" for b in broken]
        row.notes += [f"seed {k} interrupted (no result yet; `ablate run` resumes it)"
                      for k in interrupted]
        rows[s.id] = row
    m = study.metric
    report_notes: list[str] = []
    for s in study.steps:
        row = rows[s.id]
        parent = rows.get(s.parent) if s.parent else None
        root = rows[s.root]
        if m in row.mean:
            if parent is not None and m in parent.mean:
                row.delta = row.mean[m] - parent.mean[m]
            if m in root.mean:
                row.cum_delta = row.mean[m] - root.mean[m]
        if m in row.ref:
            if parent is not None and m in parent.ref:
                row.ref_delta = row.ref[m] - parent.ref[m]
            if m in root.ref:
                row.ref_cum_delta = row.ref[m] - root.ref[m]
        printed = s.ref_delta.get(m)
        if printed is not None and row.ref_delta is not None and abs(printed - row.ref_delta) > TOL:
            report_notes.append(
                f"paper: row '{s.label}' prints Δ {printed:+.2f}, but its {m} column gives "
                f"{row.ref[m]:.2f} − {parent.ref[m]:.2f} = {row.ref_delta:+.2f} (used here)")
    report = Report(study.name, study.title, study.table, study.paper, m, list(study.metrics),
                    scale, list(rows.values()), report_notes,
                    columns=[(c.id, c.label) for c in study.columns], time=study.time,
                    layout=study.layout, rows_title=study.rows_title)
    report.broken = all_broken
    if study.layout == "factorial":
        report.effects = {"ours": _effects(report, lambda r: r.mean.get(m)),
                          "paper": _effects(report, lambda r: r.ref.get(m))}
    return report


def _grid(report: Report) -> tuple[list[str], list[list[Row | None]]]:
    """Row ids (steps of the file) and, per row, its run in each column (None: a cell the
    step skips)."""
    bases = list(dict.fromkeys(r.base for r in report.rows))
    by = {(r.base, r.column): r for r in report.rows}
    return bases, [[by.get((b, c)) for c, _ in report.columns] for b in bases]  # None: skipped


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _effects(report: Report, value: Any) -> dict[str, Any]:
    """A 2 × 2 table's simple effects and interaction of the values ``value(row)`` gives:
    ``columns`` = second column − first, per row; ``rows`` = second row − first, per column;
    ``interaction`` = the difference of the two column effects (equally, of the row effects)."""
    bases, cells = _grid(report)
    (a, b), (c, d) = [[value(r) for r in line] for line in cells]
    cols = [cid for cid, _ in report.columns]
    col_effect = {bases[0]: _sub(b, a), bases[1]: _sub(d, c)}
    return {"columns": col_effect, "rows": {cols[0]: _sub(c, a), cols[1]: _sub(d, b)},
            "interaction": _sub(col_effect[bases[1]], col_effect[bases[0]])}


def locate(path: Path, results_root: Path, scale: str | None) -> tuple[Study, Path, str]:
    """A study file or a results folder → (study, results folder of one scale, scale)."""
    path = Path(path)
    if path.is_file():
        study = load_study(path)
        scale = scale or study.default_scale
        study.scale_overrides(scale)  # an unknown or undefined scale is an error
        return study, results_root / study.name / scale, scale
    if not path.is_dir():
        raise AblateError(f"{path}: neither a study file nor a results folder")
    if (path / "study.yaml").is_file():
        return load_study(path / "study.yaml"), path, scale or path.name
    scales = sorted(p.name for p in path.iterdir() if (p / "study.yaml").is_file())
    if not scales:
        raise AblateError(f"{path}: no study results here (expected <scale>/study.yaml, written "
                          "by `ablate run`)")
    if scale is None:
        if len(scales) > 1:
            raise AblateError(f"{path} holds several scales ({', '.join(scales)}); pick one "
                              "with --scale")
        scale = scales[0]
    if scale not in scales:
        raise AblateError(f"{path}: no results at scale '{scale}' (have: {', '.join(scales)})")
    return load_study(path / scale / "study.yaml"), path / scale, scale


# --- rendering ------------------------------------------------------------------------------
def _num(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.2f}" if signed else f"{v:.2f}"


def _ours(row: Row, m: str) -> str:
    if m not in row.mean:
        return row.status if row.status != "completed" else "–"
    s = _num(row.mean[m])
    if len(row.seeds) > 1:
        s += f" ± {row.std[m]:.2f}"
    return s


TIME_UNITS = {"total": ("h", 3600.0), "total_min": ("min", 60.0), "per_epoch": ("min/epoch", 60.0)}


def _ref(row: Row, m: str) -> str:
    return "failed" if m in row.ref_failed else _num(row.ref.get(m))


def _time(report: Report, row: Row) -> str:
    seconds = row.epoch_time_s if report.time == "per_epoch" else row.wall_time_s
    return _num(None if seconds is None else seconds / TIME_UNITS[report.time][1])


def _cells(report: Report, rows: list[Row], prefix: str = "") -> tuple[list[str], list[list[str]]]:
    """Header and cells of one column of the table (the whole table without columns)."""
    m = report.metric
    has_ref = any(r.ref or r.ref_failed for r in rows)
    chained = any(r.parent for r in rows)  # rows that each stand alone have no Δ to show
    deltas = ["Δ", "cum Δ"] if chained else []
    head = [f"{prefix}{m}", *deltas] + [f"{prefix}{x}" for x in report.metrics if x != m]
    if report.time:
        head += [f"{prefix}time ({TIME_UNITS[report.time][0]})"]
    ref_time = report.time is not None and any("time" in r.ref for r in rows)
    if has_ref:
        head += [f"paper {m}"] + [f"paper {d}" for d in deltas]
        head += [f"paper {x}" for x in report.metrics if x != m]
        head += ["paper time"] if ref_time else []
    head += ["runs"]
    body = []
    for r in rows:
        line = [_ours(r, m)] + ([_num(r.delta, True), _num(r.cum_delta, True)] if chained else [])
        line += [_ours(r, x) for x in report.metrics if x != m]
        if report.time:
            line += [_time(report, r)]
        if has_ref:
            line += [_ref(r, m)]
            line += [_num(r.ref_delta, True), _num(r.ref_cum_delta, True)] if chained else []
            line += [_ref(r, x) for x in report.metrics if x != m]
            line += [_num(r.ref.get("time"))] if ref_time else []
        line += [str(len(r.seeds)) if r.status == "completed" else
                 f"{len(r.seeds)} ({r.status})"]
        body.append(line)
    return head, body


def grid_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """A grid or factorial study: rows × columns of the primary metric, ours then the paper's;
    a factorial one adds the Δ column, the Δ row and the interaction in their corner."""
    bases, cells = _grid(report)
    labels = {r.base: r.label for r in report.rows}
    clabels = [label for _, label in report.columns]
    has_ref = any(r.ref for r in report.rows)
    factorial = report.layout == "factorial"
    delta_head = f"Δ ({clabels[1]} − {clabels[0]})" if factorial else None
    head = [report.rows_title, *clabels] + ([delta_head] if factorial else [])
    if has_ref:
        head += [f"paper {c}" for c in clabels] + (["paper Δ"] if factorial else [])
    m = report.metric
    body = []
    for base, line in zip(bases, cells):
        row = [labels[base], *[_ours(r, m) if r else "" for r in line]]
        row += [_num(report.effects["ours"]["columns"][base], True)] if factorial else []
        if has_ref:
            row += [_num(r.ref.get(m)) if r else "" for r in line]
            row += [_num(report.effects["paper"]["columns"][base], True)] if factorial else []
        body.append(row)
    if factorial:
        cols = [cid for cid, _ in report.columns]
        row = [f"Δ ({labels[bases[1]]} − {labels[bases[0]]})"]
        for side in ("ours", "paper") if has_ref else ("ours",):
            e = report.effects[side]
            row += [_num(e["rows"][c], True) for c in cols] + [_num(e["interaction"], True)]
        body.append(row)
    return head, body


def table(report: Report) -> tuple[list[str], list[list[str]]]:
    """One row per step; with columns, each column's cells side by side (headers prefixed
    with the column's label); grid and factorial studies as their matrix (``grid_table``)."""
    if report.layout != "chain":
        return grid_table(report)
    if not report.columns:
        head, body = _cells(report, report.rows)
        return ["step", *head], [[r.label, *cells] for r, cells in zip(report.rows, body)]
    bases = list(dict.fromkeys(r.base for r in report.rows))
    labels = {r.base: r.label for r in report.rows}
    head, body = ["step"], [[labels[b]] for b in bases]
    for cid, clabel in report.columns:
        by_base = {r.base: r for r in report.rows if r.column == cid}
        rows = [by_base[b] for b in bases]
        h, cells = _cells(report, rows, prefix=f"{clabel} ")
        head += h
        for line, c in zip(body, cells):
            line += c
    return head, body


def _notes(report: Report) -> list[str]:
    notes = list(report.notes)
    if report.layout == "factorial":
        notes.append(f"{report.metric}; the corner cell is the interaction: the Δ of the "
                     "second row minus the Δ of the first")
    elif report.layout == "grid":
        notes.append(f"{report.metric} of each setting")
    labels = {r.id: (f"{r.label} ({dict(report.columns)[r.column]})" if r.column else r.label)
              for r in report.rows}
    return notes + [f"{labels[r.id]}: {n}" for r in report.rows for n in r.notes]


def to_markdown(report: Report) -> str:
    head, body = table(report)
    title = f"### {report.title}"
    sub = " · ".join(x for x in (report.table, report.paper, f"scale: {report.scale}") if x)
    lines = [title, "", sub, "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    notes = _notes(report)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _r(v: float | None) -> float | str:
    return "" if v is None else round(v, 4)


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    fields = ["id", "label", "column", "parent", "status", "n_seeds", "metric", "mean", "std",
              "delta", "cum_delta", "ref", "ref_delta", "ref_cum_delta", "wall_time_s",
              "epoch_time_s"]
    w.writerow(fields)
    for r in report.rows:
        for m in report.metrics:
            primary = m == report.metric
            w.writerow([r.id, r.label, r.column or "", r.parent or "", r.status, len(r.seeds),
                        m, _r(r.mean.get(m)), _r(r.std.get(m)),
                        _r(r.delta if primary else None), _r(r.cum_delta if primary else None),
                        "failed" if m in r.ref_failed else _r(r.ref.get(m)),
                        _r(r.ref_delta if primary else None),
                        _r(r.ref_cum_delta if primary else None), _r(r.wall_time_s),
                        _r(r.epoch_time_s)])
    return buf.getvalue()


def to_json(report: Report) -> str:
    return json.dumps(asdict(report), indent=2) + "\n"


def to_latex(report: Report) -> str:
    head, body = table(report)
    esc = lambda s: (s.replace("\\", r"\textbackslash{}").replace("&", r"\&")  # noqa: E731
                     .replace("%", r"\%").replace("_", r"\_").replace("#", r"\#")
                     .replace("±", r"$\pm$").replace("Δ", r"$\Delta$"))
    lines = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
             " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


RENDERERS = {"md": to_markdown, "csv": to_csv, "json": to_json, "latex": to_latex}


def render(report: Report, fmt: str) -> str:
    if fmt not in RENDERERS:
        raise AblateError(f"unknown format '{fmt}' (use one of {', '.join(RENDERERS)})")
    return RENDERERS[fmt](report)


def plot_waterfall(report: Report, path: Path) -> None:
    """Cumulative-Δ waterfall of the primary metric: each bar spans parent → step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if report.layout != "chain":
        raise AblateError(f"a waterfall plots a chain of tricks; study '{report.study}' is a "
                          f"{report.layout} table (use the md, csv, json or latex report)")
    if not any(r.parent for r in report.rows):
        raise AblateError(f"a waterfall plots a chain of tricks; every step of study "
                          f"'{report.study}' stands alone (no parent), so there is no Δ to plot "
                          "(use the md, csv, json or latex report)")
    rows = [r for r in report.rows if r.cum_delta is not None]
    if not rows:
        raise AblateError("nothing to plot: no completed step")
    by_id = {r.id: r for r in report.rows}
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 4.2))
    for i, r in enumerate(rows):
        parent = by_id.get(r.parent) if r.parent else None
        start = parent.cum_delta if parent is not None and parent.cum_delta is not None else 0.0
        end = r.cum_delta
        color = "#999999" if r.parent is None else ("#2e7d32" if end >= start else "#c62828")
        ax.bar(i, end - start if r.parent else 0.02, bottom=start, color=color, width=0.6)
        ax.annotate(f"{end:+.2f}", (i, max(end, start)), ha="center", va="bottom", fontsize=8)
        if r.ref_cum_delta is not None:
            ax.plot([i - 0.3, i + 0.3], [r.ref_cum_delta] * 2, color="black", lw=1.2,
                    ls="--", label="paper cum Δ" if i == 0 else None)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(range(len(rows)), [f"{r.label} ({r.column})" if r.column else r.label
                                     for r in rows], rotation=30, ha="right",
                  fontsize=8)
    ax.set_ylabel(f"cumulative Δ {report.metric}")
    ax.set_title(report.title, fontsize=10)
    if any(r.ref_cum_delta is not None for r in rows):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
