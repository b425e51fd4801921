"""The Δ table on fixed metrics.json files: exact deltas, seeds, removal rows, trees, printed
reference deltas that disagree with their own metric column, every renderer."""

import json
import textwrap
from pathlib import Path

import pytest

from ablate.errors import AblateError
from ablate.study.report import build_report, locate, plot_waterfall, render
from ablate.study.spec import load_study

STUDY = """
name: det
title: Faster R-CNN incremental
table: Det-T4
metric: map
steps:
  - id: no_aug
    label: "- data augmentation"
    parent: base
    remove: [warmup]
    ref: {map: 77.61}
  - id: base
    label: baseline
    parent: null
    add: [warmup]
    ref: {map: 77.77}
  - id: cosine
    label: + cosine lr schedule
    add: [cosine]
    ref: {map: 79.59}
  - id: ls
    label: + class label smoothing
    add: [label_smoothing]
    ref: {map: 80.23}
  - id: mixup
    label: + mixup
    add: [mixup]
    ref: {map: 81.32}
    ref_delta: {map: 0.89}
"""


def put(root: Path, step: str, seed: int, value: float | None, status: str = "completed"):
    d = root / step / f"seed{seed}"
    d.mkdir(parents=True)
    metrics = {} if value is None else {"map": value}
    (d / "metrics.json").write_text(json.dumps({
        "schema_version": 1, "status": status, "seed": seed, "metrics": metrics, "wall_time_s": 10.0,
        "reason": "non-finite loss in epoch 1" if status == "failed" else None}))


@pytest.fixture
def study_and_results(tmp_path):
    path = tmp_path / "det.yaml"
    path.write_text(textwrap.dedent(STUDY))
    res = tmp_path / "results" / "det" / "full"
    put(res, "no_aug", 0, 60.0)
    put(res, "base", 0, 70.0)
    put(res, "base", 1, 72.0)
    put(res, "cosine", 0, 71.5)
    put(res, "ls", 0, None, status="failed")
    (res / "study.yaml").write_text(path.read_text())
    return load_study(path), res


def test_deltas_seeds_and_status(study_and_results):
    study, res = study_and_results
    r = {row.id: row for row in build_report(study, res, "full").rows}
    assert r["base"].mean["map"] == 71.0 and r["base"].std["map"] == pytest.approx(2 ** 0.5)
    assert r["base"].seeds == [0, 1]
    assert r["no_aug"].delta == -11.0 and r["no_aug"].cum_delta == -11.0  # vs the baseline
    assert r["cosine"].delta == 0.5 and r["cosine"].cum_delta == 0.5
    assert r["ls"].status == "failed" and r["ls"].delta is None
    assert "non-finite loss" in r["ls"].notes[0]
    assert r["mixup"].status == "not run"
    assert r["mixup"].ref_delta == pytest.approx(1.09) and r["mixup"].ref_cum_delta == pytest.approx(3.55)
    assert r["no_aug"].ref_delta == pytest.approx(-0.16)


def test_printed_reference_delta_mismatch_is_reported(study_and_results):
    study, res = study_and_results
    rep = build_report(study, res, "full")
    assert rep.notes == ["paper: row '+ mixup' prints Δ +0.89, but its map column gives "
                         "81.32 − 80.23 = +1.09 (used here)"]


def test_markdown(study_and_results):
    study, res = study_and_results
    md = render(build_report(study, res, "full"), "md")
    lines = md.splitlines()
    assert lines[0] == "### Faster R-CNN incremental"
    assert "| step | map | Δ | cum Δ | paper map | paper Δ | paper cum Δ | runs |" in lines
    assert "| - data augmentation | 60.00 | -11.00 | -11.00 | 77.61 | -0.16 | -0.16 | 1 |" in lines
    assert "| baseline | 71.00 ± 1.41 | – | +0.00 | 77.77 | – | +0.00 | 2 |" in lines
    assert "| + class label smoothing | failed | – | – | 80.23 | +0.64 | +2.46 | 0 (failed) |" in lines
    assert "| + mixup | not run | – | – | 81.32 | +1.09 | +3.55 | 0 (not run) |" in lines


def test_csv_json_latex(study_and_results):
    study, res = study_and_results
    rep = build_report(study, res, "full")
    csv_lines = render(rep, "csv").splitlines()
    assert csv_lines[0].startswith("id,label,column,parent,status,n_seeds,metric,mean,std,delta")
    assert csv_lines[3] == ("cosine,+ cosine lr schedule,,base,completed,1,map,71.5,0.0,0.5,0.5,79.59,1.82,"
                            "1.82,10.0,")
    data = json.loads(render(rep, "json"))
    assert data["rows"][1]["mean"] == {"map": 71.0}
    tex = render(rep, "latex")
    assert tex.startswith("\\begin{tabular}") and "71.00 $\\pm$ 1.41" in tex


def test_locate_results_folder_and_plot(study_and_results, tmp_path):
    study, res = study_and_results
    s2, folder, scale = locate(res.parent, tmp_path / "results", None)
    assert folder == res and scale == "full" and s2.name == "det"
    png = tmp_path / "w.png"
    plot_waterfall(build_report(study, res, "full"), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ROWS_STUDY = """
name: rows
title: Mini-batch size x BN size
metric: map
time: total_min
steps:
  - id: b16
    label: batch 16
    parent: null
    add: [warmup]
    ref: {map: 37.0, time: 39.5}
  - id: b64
    label: batch 64
    parent: null
    add: [warmup]
    ref: {map: 35.3, time: 40.9}
"""


def test_standalone_rows_have_no_delta_columns(tmp_path):
    """MegDet's rows each stand alone: the table shows metric and time, no Δ, and a waterfall
    (a chain's plot) is refused."""
    path = tmp_path / "rows.yaml"
    path.write_text(textwrap.dedent(ROWS_STUDY))
    res = tmp_path / "results" / "rows" / "full"
    put(res, "b16", 0, 10.5)
    put(res, "b64", 0, 2.25)
    rep = build_report(load_study(path), res, "full")
    lines = render(rep, "md").splitlines()
    assert "| step | map | time (min) | paper map | paper time | runs |" in lines
    assert "| batch 16 | 10.50 | 0.17 | 37.00 | 39.50 | 1 |" in lines
    assert "| batch 64 | 2.25 | 0.17 | 35.30 | 40.90 | 1 |" in lines
    with pytest.raises(AblateError, match="stands alone"):
        plot_waterfall(rep, tmp_path / "w.png")


@pytest.mark.parametrize("name, notes", [
    ("yolov3_voc", []),  # Det-T3's printed Δ all agree with its mAP column
    ("faster_rcnn_voc", ["paper: row '+ mixup' prints Δ +0.89, but its map column gives "
                         "81.32 − 80.23 = +1.09 (used here)"]),  # Det-T4
])
def test_the_shipped_studies_carry_the_printed_deltas(tmp_path, name, notes):
    study = load_study(Path(__file__).resolve().parents[2] / "studies" / f"{name}.yaml")
    assert sum(bool(s.ref_delta) for s in study.steps) == len(study.steps) - 1
    assert build_report(study, tmp_path, "full").notes == notes


def test_a_paper_failed_cell_is_printed_failed(tmp_path):
    study = load_study(Path(__file__).resolve().parents[2] / "studies" / "megdet_coco.yaml")
    rows = {r.id: r for r in build_report(study, tmp_path, "full").rows}
    assert rows["b64_frozen"].ref_failed == ["map"] and rows["b64_frozen"].ref == {}
    md = render(build_report(study, tmp_path, "full"), "md")
    line = next(x for x in md.splitlines() if x.startswith("| batch 64, BN frozen (Meg-T2"))
    assert line.split(" | ")[5] == "failed"
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(render(build_report(study, tmp_path, "full"), "csv"))))
    cell = next(r for r in rows if r["id"] == "b64_frozen" and r["metric"] == "map")
    assert cell["ref"] == "failed" and cell["mean"] == ""
