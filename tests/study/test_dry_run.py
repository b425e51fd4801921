"""What a dry run tells a user setting up a full-scale study: the count of runs by what happens
to them, the paper's GPU-hours for those to train, and every missing file at once, each with
how to get it."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from ablate.study.driver import plan_summary
from tests.conftest import ROOT, tree_snapshot
from tests.study.test_imagenet_studies import data_root  # noqa: F401  (fixture)

STUDIES = ROOT / "studies"


def plan(action: str, gpu_hours: float | None = None) -> SimpleNamespace:
    return SimpleNamespace(action=action, step=SimpleNamespace(gpu_hours=gpu_hours))


def test_summary_counts_actions_and_sums_known_gpu_hours_of_full_runs_to_train():
    plans = [plan("run", 10.5), plan("resume", 2.0), plan("skip", 100.0), plan("share", 7.0),
             plan("run")]
    dep = SimpleNamespace(scale="full", plans=[plan("rerun", 1.25)])
    assert plan_summary(plans, [dep], "full") == (
        "6 runs: 2 to run, 1 to resume, 1 to rerun, 1 to share, 1 skipped; about 14 GPU-hours "
        "on the paper's hardware (the full-scale runs to train, known for 3 of the 4)")
    assert plan_summary(plans[:1], [], "full") == (
        "1 run: 1 to run; about 10 GPU-hours on the paper's hardware (the full-scale runs to "
        "train)")
    assert plan_summary([plan("run"), plan("refuse", 3.0)], [], "full") == (
        "2 runs: 1 to run, 1 refused; GPU-hours: not known (the paper gives no training times "
        "for these runs)")
    # other scales and finished studies say nothing of GPU-hours
    assert plan_summary(plans, [], "smoke") == "5 runs: 2 to run, 1 to resume, 1 to share, 1 skipped"
    assert plan_summary([plan("skip", 5.0)], [], "full") == "1 run: 1 skipped"


@pytest.mark.parametrize("study, last", [
    ("imagenet_baseline_vs_efficient", "6 runs: 6 to run; about 886 GPU-hours on the paper's "
                                       "hardware (the full-scale runs to train)"),
    ("imagenet_efficient", "10 runs: 10 to run; about 922 GPU-hours on the paper's hardware "
                           "(the full-scale runs to train, known for 5 of the 10)"),
    ("imagenet_tweaks", "4 runs: 4 to run; about 70 GPU-hours on the paper's hardware (the "
                        "full-scale runs to train, known for 1 of the 4)"),
    ("imagenet_refinements", "38 runs: 38 to run; GPU-hours: not known (the paper gives no "
                             "training times for these runs)"),
])
def test_dry_run_ends_with_the_summary(cli, results, data_root, study, last):  # noqa: F811
    r = cli("run", STUDIES / f"{study}.yaml", "--dry-run", "--results", results)
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1] == last
    assert tree_snapshot(results) == {}


def test_missing_data_and_weights_are_reported_together_with_how_to_get_them(
        cli, results, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "nodata"))
    r = cli("run", STUDIES / "yolov3_voc.yaml", "--dry-run", "--results", results)
    assert r.code == 2 and r.out == ""
    err = r.err.replace("\n", " ")
    assert err.startswith(f"error: {STUDIES / 'yolov3_voc.yaml'}: step 'no_aug': Pascal VOC not "
                          f"found: {tmp_path / 'nodata' / 'voc'} does not exist.")
    assert (f"model.backbone_weights: no file at '{tmp_path / 'nodata/pretrained/darknet53.pt'}' "
            "(weights are local files: an ImageNet Darknet-53 — train one with `ablate run "
            "imagenet_mixup_pretrain --only plain.darknet53` and copy its") in err
    assert not results.exists()


@pytest.mark.parametrize("value, message", [
    ("-3", "step 'a': 'gpu_hours' must be a positive number of GPU-hours, got -3"),
    ("many", "step 'a': 'gpu_hours' must be a positive number of GPU-hours, got 'many'"),
    ("{bs512: 2}", "step 'a': 'gpu_hours' is keyed by column; no column 'bs512' (did you mean "
                   "'bs256'?)"),
    ("{bs256: 0}", "step 'a': 'gpu_hours.bs256' must be a positive number of GPU-hours, got 0"),
])
def test_bad_gpu_hours_exit_2(cli, results, tmp_path, value, message):
    study = tmp_path / "s.yaml"
    study.write_text(textwrap.dedent(f"""
        name: s
        metric: top1
        columns: [{{id: bs256}}]
        steps:
          - {{id: a, gpu_hours: {value}}}
    """))
    r = cli("run", study, "--dry-run", "--results", results)
    assert r.code == 2 and r.err.replace("\n", " ") == f"error: {study}: {message} "
