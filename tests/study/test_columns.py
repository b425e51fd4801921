"""Studies with columns: the same chain under several settings, side by side (Cls-T4's batch
256 | 1024, Cls-T6's three networks). Expansion into runs, per-column seeds and references,
``--only`` by row, validation messages and the side-by-side report on fixed metrics."""

import json
import re
import textwrap
from pathlib import Path

import pytest

from ablate.errors import AblateError
from ablate.study.driver import plan_study
from ablate.study.report import build_report, render
from ablate.study.spec import load_study
from tests.conftest import ROOT

STUDY = """
name: cols
metric: top1
metrics: [top1, top5]
time: per_epoch
base:
  train.batch_size: 64
  train.epochs: 2
columns:
  - id: small
    label: BS=64
    set: {train.epochs: 3}
    seeds: 2
  - id: large
    label: BS=128
    add: [amp]
    set: {train.batch_size: 128}
steps:
  - id: ls
    label: Linear scaling
    add: [linear_scaling]
    set: {train.epochs: 5}
    ref: {small: {top1: 75.87, top5: 92.70, time: 13.3}, large: {top1: 75.17, top5: 92.54}}
  - id: warmup
    label: + LR warmup
    add: [warmup]
    ref: {small: {top1: 76.03}, large: {top1: 75.93}}
"""


def _study(tmp_path, text=STUDY):
    path = tmp_path / "cols.yaml"
    path.write_text(textwrap.dedent(text))
    return load_study(path)


def test_steps_expand_per_column(tmp_path):
    s = _study(tmp_path)
    assert [x.id for x in s.steps] == ["ls.small", "warmup.small", "ls.large", "warmup.large"]
    by = {x.id: x for x in s.steps}
    assert by["warmup.large"].parent == "ls.large" and by["warmup.large"].root == "ls.large"
    assert by["ls.small"].parent is None
    assert by["warmup.large"].tricks == ["linear_scaling", "warmup", "amp"]
    assert by["warmup.small"].tricks == ["linear_scaling", "warmup"]
    # a column's set wins over a step's
    assert by["ls.small"].overrides == {"train.epochs": 3}
    assert by["ls.large"].overrides == {"train.epochs": 5, "train.batch_size": 128}
    assert by["ls.large"].ref == {"top1": 75.17, "top5": 92.54}
    assert by["warmup.small"].seeds == 2 and by["warmup.large"].seeds is None
    assert [x.id for x in s.base_steps] == ["ls.small", "warmup.small"]
    assert s.select(["warmup"]) == ["warmup.small", "warmup.large"]
    assert s.select(["ls.large", "ls"]) == ["ls.large", "ls.small"]
    with pytest.raises(AblateError, match=re.escape("--only 'wamup': no such step (did you mean 'warmup'?)")):
        s.select(["wamup"])


def test_plans_use_each_columns_seeds_unless_given(tmp_path, fmnist_root):
    s = _study(tmp_path)
    extra = [f"data.root={fmnist_root}"]
    plans = plan_study(s, scale="full", seeds=None, only=["ls"], results_root=tmp_path / "r",
                       extra=extra)
    assert [(p.step.id, p.seed) for p in plans] == [("ls.small", 0), ("ls.small", 1),
                                                     ("ls.large", 0)]
    assert plans[0].run_dir == tmp_path / "r" / "cols" / "full" / "ls.small" / "seed0"
    assert plans[2].cfg.train.batch_size == 128 and plans[2].cfg.train.epochs == 5
    assert plans[0].cfg.train.epochs == 3 and "amp" in plans[2].cfg.tricks
    plans = plan_study(s, scale="full", seeds=1, only=["ls"], results_root=tmp_path / "r",
                       extra=extra)
    assert [(p.step.id, p.seed) for p in plans] == [("ls.small", 0), ("ls.large", 0)]


@pytest.mark.parametrize("edit,message", [
    (("ref: {small: {top1: 75.87, top5: 92.70, time: 13.3}, large:",
      "ref: {smal: {top1: 75.87}, large:"),
     "step 'ls': 'ref' is keyed by column; no column 'smal' (did you mean 'small'?)"),
    (("    add: [amp]", "    add: [linear_scaling]"),
     "step 'ls', column 'large': 'linear_scaling' is already on"),
    (("    seeds: 2", "    seed: 2"), "column 'small': unknown key 'seed' (did you mean 'seeds'?)"),
    (("time: per_epoch", "time: hours"), "'time' must be one of total, total_min, per_epoch"),
    (("  - id: large", "  - id: small"), "column 'small': duplicate column id"),
])
def test_bad_columns_are_named(tmp_path, edit, message):
    text = textwrap.dedent(STUDY).replace(*edit)
    with pytest.raises(AblateError, match=re.escape(message)):
        _study(tmp_path, text)


def _put(root: Path, step: str, seed: int, top1: float, top5: float, train_s: float = 120.0):
    d = root / step / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "schema_version": 1, "status": "completed", "seed": seed, "metrics": {"top1": top1, "top5": top5},
        "wall_time_s": 600.0, "train_time_s": train_s, "epochs": 2}))


def test_report_puts_columns_side_by_side(tmp_path):
    s = _study(tmp_path)
    res = tmp_path / "res"
    _put(res, "ls.small", 0, 70.0, 90.0)
    _put(res, "ls.small", 1, 72.0, 92.0)
    _put(res, "warmup.small", 0, 73.5, 93.0)
    _put(res, "warmup.small", 1, 74.5, 93.0)
    _put(res, "ls.large", 0, 69.0, 89.0, train_s=60.0)
    md = render(build_report(s, res, "full"), "md").splitlines()
    # "paper time" only where a column's references have a time
    assert md[4] == ("| step | BS=64 top1 | Δ | cum Δ | BS=64 top5 | BS=64 time (min/epoch) | "
                     "paper top1 | paper Δ | paper cum Δ | paper top5 | paper time | runs | "
                     "BS=128 top1 | Δ | cum Δ | BS=128 top5 | BS=128 time (min/epoch) | "
                     "paper top1 | paper Δ | paper cum Δ | paper top5 | runs |")
    assert md[6] == ("| Linear scaling | 71.00 ± 1.41 | – | +0.00 | 91.00 ± 1.41 | 1.00 | "
                     "75.87 | – | +0.00 | 92.70 | 13.30 | 2 | "
                     "69.00 | – | +0.00 | 89.00 | 0.50 | 75.17 | – | +0.00 | 92.54 | 1 |")
    assert md[7] == ("| + LR warmup | 74.00 ± 0.71 | +3.00 | +3.00 | 93.00 ± 0.00 | 1.00 | "
                     "76.03 | +0.16 | +0.16 | – | – | 2 | "
                     "not run | – | – | not run | – | 75.93 | +0.76 | +0.76 | – | 0 (not run) |")
    csv_lines = render(build_report(s, res, "full"), "csv").splitlines()
    assert csv_lines[1].startswith("ls.small,Linear scaling,small,,completed,2,top1,71.0,1.4142,")


@pytest.mark.parametrize("name", ["imagenet_efficient", "imagenet_baseline_vs_efficient",
                                  "imagenet_refinements"])
def test_paper_column_studies_load(name):
    s = load_study(ROOT / "studies" / f"{name}.yaml")
    assert s.columns and all(x.ref for x in s.steps)
