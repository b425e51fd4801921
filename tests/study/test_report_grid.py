"""Grid and factorial studies: rows × columns of two settings. The 2 × 2 report of Det-T7's
shape on fixed metrics (its effects and interaction by hand), a 2 × 3 grid, validation."""

import json
import re
import textwrap

import pytest

from ablate.errors import AblateError
from ablate.study.report import build_report, plot_waterfall, render
from ablate.study.spec import load_study

FACTORIAL = """
name: phases
title: mixup in pre-training x mixup in detection
table: Det-T7
metric: map
metrics: [map, map50]
layout: factorial
rows_title: backbone pre-training
uses:
  plain: {study: pre, step: plain}
  mixed: {study: pre, step: mixed}
columns:
  - id: det
    label: -mixup FRCNN
  - id: det_mixup
    label: +mixup FRCNN
    add: [mixup]
steps:
  - id: pre
    label: -mixup R101
    parent: null
    add: [cosine]
    set: {model.backbone_weights: '${uses.plain}'}
    ref: {det: {map: 39.9}, det_mixup: {map: 40.1}}
  - id: pre_mixup
    label: +mixup R101
    set: {model.backbone_weights: '${uses.mixed}'}
    ref: {det: {map: 40.1}, det_mixup: {map: 41.1}}
"""


def put(root, step, seed, value, map50=None, metric="map"):
    d = root / step / f"seed{seed}"
    d.mkdir(parents=True)
    metrics = {metric: value} if map50 is None else {metric: value, "map50": map50}
    (d / "metrics.json").write_text(json.dumps({"schema_version": 1, "status": "completed",
                                                "seed": seed,
                                                "metrics": metrics, "wall_time_s": 5.0}))


def _load(tmp_path, text):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(text))
    return load_study(path)


def test_factorial_steps_are_rows_and_columns_the_other_switch(tmp_path):
    s = _load(tmp_path, FACTORIAL)
    by = {x.id: x for x in s.steps}
    assert s.layout == "factorial" and s.rows_title == "backbone pre-training"
    assert by["pre_mixup.det_mixup"].tricks == ["cosine", "mixup"]
    assert by["pre_mixup.det"].tricks == ["cosine"]
    assert by["pre_mixup.det"].overrides == {"model.backbone_weights": "${uses.mixed}"}
    assert by["pre.det_mixup"].ref == {"map": 40.1}


def test_factorial_report_has_both_effects_and_the_interaction(tmp_path):
    s = _load(tmp_path, FACTORIAL)
    res = tmp_path / "r"
    put(res, "pre.det", 0, 30.0, 50.0)
    put(res, "pre.det_mixup", 0, 31.5)
    put(res, "pre_mixup.det", 0, 32.0)
    put(res, "pre_mixup.det_mixup", 0, 35.25)
    put(res, "pre_mixup.det_mixup", 1, 35.75)
    rep = build_report(s, res, "full")
    ours, paper = rep.effects["ours"], rep.effects["paper"]
    assert ours["columns"] == {"pre": 1.5, "pre_mixup": 3.5}  # 31.5 − 30, 35.5 − 32
    assert ours["rows"] == {"det": 2.0, "det_mixup": 4.0}  # 32 − 30, 35.5 − 31.5
    assert ours["interaction"] == 2.0  # (35.5 − 32) − (31.5 − 30)
    assert paper["columns"] == pytest.approx({"pre": 0.2, "pre_mixup": 1.0})
    assert paper["rows"] == pytest.approx({"det": 0.2, "det_mixup": 1.0})
    assert paper["interaction"] == pytest.approx(0.8)
    md = render(rep, "md")
    lines = md.splitlines()
    assert lines[4] == ("| backbone pre-training | -mixup FRCNN | +mixup FRCNN "
                        "| Δ (+mixup FRCNN − -mixup FRCNN) | paper -mixup FRCNN "
                        "| paper +mixup FRCNN | paper Δ |")
    assert lines[6] == "| -mixup R101 | 30.00 | 31.50 | +1.50 | 39.90 | 40.10 | +0.20 |"
    assert lines[7] == "| +mixup R101 | 32.00 | 35.50 ± 0.35 | +3.50 | 40.10 | 41.10 | +1.00 |"
    assert lines[8] == ("| Δ (+mixup R101 − -mixup R101) | +2.00 | +4.00 | +2.00 "
                        "| +0.20 | +1.00 | +0.80 |")
    assert "interaction" in md
    js = json.loads(render(rep, "json"))
    assert js["layout"] == "factorial" and js["effects"]["ours"]["interaction"] == 2.0
    tex = render(rep, "latex")
    assert r"+mixup R101 & 32.00 & 35.50 $\pm$ 0.35 & +3.50" in tex
    csv_lines = render(rep, "csv").splitlines()
    assert csv_lines[0].startswith("id,label,column,parent,status,n_seeds,metric,mean")
    assert "pre_mixup.det_mixup,+mixup R101,det_mixup,pre.det_mixup,completed,2,map,35.5" \
        in render(rep, "csv")
    with pytest.raises(AblateError, match="a waterfall plots a chain"):
        plot_waterfall(rep, tmp_path / "w.png")


def test_factorial_report_with_a_missing_cell(tmp_path):
    s = _load(tmp_path, FACTORIAL)
    res = tmp_path / "r"
    put(res, "pre.det", 0, 30.0)
    put(res, "pre.det_mixup", 0, 31.0)
    rep = build_report(s, res, "full")
    assert rep.effects["ours"] == {"columns": {"pre": 1.0, "pre_mixup": None},
                                   "rows": {"det": None, "det_mixup": None},
                                   "interaction": None}
    line = render(rep, "md").splitlines()[7]
    assert line == "| +mixup R101 | not run | not run | – | 40.10 | 41.10 | +1.00 |"


GRID = """
name: lossgrid
title: regression loss x loss weight
table: MMD-T5
metric: bbox_ap
layout: grid
rows_title: loss
columns:
  - {id: lw1, label: lw=1}
  - {id: lw2, label: lw=2, set: {model.loss_weight: 2}}
  - {id: lw5, label: lw=5, set: {model.loss_weight: 5}}
steps:
  - id: smooth_l1
    label: Smooth L1
    parent: null
    ref: {lw1: {bbox_ap: 36.4}, lw2: {bbox_ap: 36.9}, lw5: {bbox_ap: 35.7}}
  - id: l1
    label: L1
    parent: null
    set: {model.loss: l1}
    ref: {lw1: {bbox_ap: 36.8}}
"""


def test_grid_report_is_the_matrix_beside_the_papers(tmp_path):
    s = _load(tmp_path, GRID)
    res = tmp_path / "r"
    for i, step in enumerate(["smooth_l1", "l1"]):
        for j, col in enumerate(["lw1", "lw2", "lw5"]):
            put(res, f"{step}.{col}", 0, 30.0 + i + j / 4, metric="bbox_ap")
    rep = build_report(s, res, "full")
    assert rep.effects == {}
    lines = render(rep, "md").splitlines()
    assert lines[4] == "| loss | lw=1 | lw=2 | lw=5 | paper lw=1 | paper lw=2 | paper lw=5 |"
    assert lines[6] == "| Smooth L1 | 30.00 | 30.25 | 30.50 | 36.40 | 36.90 | 35.70 |"
    assert lines[7] == "| L1 | 31.00 | 31.25 | 31.50 | 36.80 | – | – |"
    assert len(lines) == 10 and lines[9] == "- bbox_ap of each setting"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("layout: grid", "layout: gird"),
     "'layout' must be one of chain, grid, factorial, got 'gird' (did you mean 'grid'?)"),
    (lambda t: t.replace("layout: grid", "layout: factorial"),
     "layout 'factorial' crosses two switches: it needs exactly 2 steps and 2 columns, got 2 "
     "and 3"),
    (lambda t: t.split("columns:")[0] + "steps:" + t.split("steps:")[1].replace(
        "ref: {lw1: {bbox_ap: 36.4}, lw2: {bbox_ap: 36.9}, lw5: {bbox_ap: 35.7}}", "").replace(
        "ref: {lw1: {bbox_ap: 36.8}}", ""),
     "layout 'grid' needs 'columns'"),
    (lambda t: t.replace("layout: grid", "layout: grid\ntime: total"),
     "'time' is shown in chain reports only, not with layout 'grid'"),
])
def test_layout_errors_name_the_file_and_item(tmp_path, edit, message):
    with pytest.raises(AblateError, match=re.escape(message)) as e:
        _load(tmp_path, edit(textwrap.dedent(GRID)))
    assert str(e.value).startswith(str(tmp_path / "s.yaml"))


SKIPPING = GRID.replace("""    set: {model.loss: l1}
    ref: {lw1: {bbox_ap: 36.8}}""", """    set: {model.loss: l1}
    skip_columns: [lw5]             # the paper has no number there
    ref: {lw1: {bbox_ap: 36.8}, lw2: {bbox_ap: 36.9}}""")


def test_grid_cells_the_paper_lacks_are_not_run_and_left_empty(tmp_path):
    s = _load(tmp_path, SKIPPING)
    assert [st.id for st in s.steps] == ["smooth_l1.lw1", "l1.lw1", "smooth_l1.lw2", "l1.lw2",
                                         "smooth_l1.lw5"]
    res = tmp_path / "r"
    for step in ("smooth_l1.lw1", "l1.lw1", "smooth_l1.lw2", "l1.lw2", "smooth_l1.lw5"):
        put(res, step, 0, 35.0, metric="bbox_ap")
    lines = render(build_report(s, res, "full"), "md").splitlines()
    assert lines[6] == "| Smooth L1 | 35.00 | 35.00 | 35.00 | 36.40 | 36.90 | 35.70 |"
    assert lines[7] == "| L1 | 35.00 | 35.00 |  | 36.80 | 36.90 |  |"


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("skip_columns: [lw5]", "skip_columns: [lw6]"),
     "step 'l1': skip_columns: unknown column 'lw6' (did you mean 'lw5'?); columns: lw1, lw2, lw5"),
    (lambda t: t.replace("skip_columns: [lw5]", "skip_columns: [lw1, lw2, lw5]").replace(
        "ref: {lw1: {bbox_ap: 36.8}, lw2: {bbox_ap: 36.9}}", ""),
     "step 'l1': skip_columns leaves no column to run"),
    (lambda t: t.replace("skip_columns: [lw5]", "skip_columns: [lw2]"),
     "step 'l1': 'ref' gives column 'lw2', which skip_columns leaves out"),
    (lambda t: t.replace("layout: grid", "layout: chain"),
     "step 'l1': 'skip_columns' leaves cells of a grid empty: it needs layout: grid, not chain"),
    (lambda t: t.replace("    ref: {lw1: {bbox_ap: 36.4}, lw2: {bbox_ap: 36.9}, "
                         "lw5: {bbox_ap: 35.7}}",
                         "    skip_columns: [lw5]\n    ref: {lw1: {bbox_ap: 36.4}}").replace(
        "skip_columns: [lw5]             # the paper has no number there", "parent: smooth_l1")
     .replace("    label: L1\n    parent: null\n", "    label: L1\n"),
     "step 'l1': its parent 'smooth_l1' skips column 'lw5', where it runs"),
])
def test_skip_columns_errors(tmp_path, edit, message):
    with pytest.raises(AblateError, match=re.escape(message)):
        _load(tmp_path, edit(textwrap.dedent(SKIPPING)))
