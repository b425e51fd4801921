"""The MMDetection benchmark studies: the full-scale ones plan against a tiny COCO once the
pretrained ResNet-50 is in place (the loss grid without the paper's missing cells), and the
FashionScenes proxies run end to end at a shrunken smoke scale — the loss grid's cells each
with its loss and weight, the RPN rows with proposal recall, the scale rows with their drawn
training scales."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from tests.conftest import ROOT, tree_snapshot

STUDIES = ROOT / "studies"
GRID = [f"{loss}.{w}" for w in ("w1", "w2", "w5", "w10")
        for loss in ("smooth_l1", "l1", "balanced_l1", "iou", "giou", "bounded_iou")
        if not (w == "w10" and loss in ("smooth_l1", "l1", "balanced_l1"))]



@pytest.mark.parametrize("study, steps", [
    ("mmdet_losses_coco", GRID),
    ("mmdet_rpn_coco", ["beta_1_5", "beta_1_9", "beta_1_15", "border_inf", "neg_pos_3",
                        "neg_pos_5"]),
    ("mmdet_scales_coco", ["fixed", "value_800", "value_960", "value_800_long", "range_800",
                           "range_960", "range_480"])])
def test_full_scale_studies_plan(cli, results, coco_root, study, steps):
    path = STUDIES / f"{study}.yaml"
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 2 and "model.backbone_weights: no file at" in r.err
    (coco_root / "pretrained").mkdir()
    torch.save({}, coco_root / "pretrained" / "resnet50.pt")
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 0, r.err
    planned = [line.split(" seed 0")[0] for line in r.out.splitlines() if " seed 0: run" in line]
    assert sorted(planned) == sorted(steps)
    assert f"{len(steps)} runs: {len(steps)} to run" in r.out
    assert tree_snapshot(results) == {}


def _smoke(cli, results, tmp_path, fmnist_root, study, *extra):
    shrink = [f"paths.data={tmp_path}", f"data.fmnist_root={fmnist_root}", "data.num_train=16",
              "data.num_test=8", "train.batch_size=4", "train.eval_batch_size=4",
              "model.width=0.125", "launcher=inprocess", *extra]
    args = ["run", STUDIES / f"{study}.yaml", "--scale", "smoke", "--results", results]
    for o in shrink:
        args += ["--set", o]
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    return results / study / "smoke"


def _metrics(run):
    return json.loads((run / "seed0" / "metrics.json").read_text())


def test_fscenes_loss_grid_runs_each_cell_with_its_loss(cli, results, tmp_path, fmnist_root):
    out = _smoke(cli, results, tmp_path, fmnist_root, "fscenes_mmdet_losses")
    for loss in ("smooth_l1", "l1", "balanced_l1", "iou", "giou", "bounded_iou"):
        for col, weight in (("w1", 1), ("w5", 5)):
            m = _metrics(out / f"{loss}.{col}")
            assert m["status"] == "completed" and 0 <= m["metrics"]["map"] <= 100
            cfg = (out / f"{loss}.{col}" / "seed0" / "config.yaml").read_text()
            assert f"name: {loss}\n" in cfg and f"weight: {weight}\n" in cfg
    rep = cli("report", out)
    assert rep.code == 0
    assert "| regression loss | lw=1 | lw=5 | paper lw=1 | paper lw=5 |" in rep.out


def test_fscenes_rpn_rows_report_proposal_recall(cli, results, tmp_path, fmnist_root):
    out = _smoke(cli, results, tmp_path, fmnist_root, "fscenes_mmdet_rpn")
    for step in ("beta_1_5", "beta_1_9", "beta_1_15", "border_inf", "neg_pos_3", "neg_pos_5"):
        m = _metrics(out / step)
        assert m["status"] == "completed" and m["primary_metric"] == "ar100"
        assert set(m["metrics"]) >= {"ar10", "ar30", "ar100", "coco_ar10", "coco_ar30",
                                     "coco_ar100"}
        assert 0 <= m["metrics"]["ar10"] <= m["metrics"]["ar30"] <= m["metrics"]["ar100"] <= 100
    rep = cli("report", out, "--format", "csv")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(rep.out)) if r["metric"] == "ar100"}
    assert rows["neg_pos_3"]["parent"] == "border_inf" and rows["neg_pos_3"]["ref"] == "58.3"
    assert rows["beta_1_5"]["ref_delta"] == "-0.6"  # 56.5 − 57.1


def test_fscenes_scale_rows_train_at_their_scales(cli, results, tmp_path, fmnist_root):
    out = _smoke(cli, results, tmp_path, fmnist_root, "fscenes_mmdet_scales")
    for step in ("fixed", "value_800", "value_960", "value_800_long", "range_800", "range_960",
                 "range_480"):
        assert _metrics(out / step)["status"] == "completed"
    cfg = (out / "range_480" / "seed0" / "config.yaml").read_text()
    assert "train_scale_mode: range" in cfg and "- - 77\n" in cfg


@pytest.mark.parametrize("study, override, message", [
    ("fscenes_yolov3", "model.rpn.allowed_border=0",
     "step 'no_aug': unknown config key 'model.rpn.allowed_border' (keys in 'model': name,"),
    ("fscenes_mmdet_rpn", "+model.rcnn={box_loss:{name:giou}}",
     "step 'beta_1_5': model.rcnn.box_loss: an RPN-only model (model.rpn_only) has no RCNN "
     "head and no decoded boxes to apply it to"),
    ("fscenes_mmdet_scales", "data.train_scale_mode=ranged",
     "step 'fixed': data.train_scale_mode='ranged': must be one of value, range"),
    ("fscenes_mmdet_losses", "model.rcnn.box_loss.smooth_l1.beta=-1",
     "step 'smooth_l1.w1': model.rcnn.box_loss.smooth_l1.beta=-1: must be >= 0"),
])
def test_head_and_scale_options_a_model_cannot_take_exit_2(cli, results, tmp_path, fmnist_root,
                                                           study, override, message):
    path = STUDIES / f"{study}.yaml"
    r = cli("run", path, "--dry-run", "--results", results, "--set", f"paths.data={tmp_path}",
            "--set", f"data.fmnist_root={fmnist_root}", "--set", "data.num_train=16",
            "--set", "data.num_test=8", "--set", override)
    assert r.code == 2, r.out + r.err
    assert r.err.startswith(f"error: {path}: {message}"), r.err
    assert not results.exists()
