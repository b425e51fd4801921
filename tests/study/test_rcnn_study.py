"""The Faster R-CNN Det-T4 studies: the FashionScenes one runs end to end at the smoke scale
(every row completes with the rcnn task's VOC07 mAP and the report computes the reference deltas
from the paper's mAP column), and the VOC one plans against a tiny devkit once its pretrained
ResNet-50 is in place."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from tests.conftest import ROOT, tree_snapshot
from tests.data.test_voc import list_full_trainval, make_devkit

STUDIES = ROOT / "studies"
STEPS = ["no_aug", "baseline", "cosine", "label_smoothing", "mixup"]


def test_fscenes_faster_rcnn_runs_end_to_end(cli, results, tmp_path, fmnist_root):
    shrink = [f"paths.data={tmp_path}", f"data.fmnist_root={fmnist_root}", "data.num_train=16",
              "data.num_test=8", "train.batch_size=4", "train.eval_batch_size=4",
              "model.width=0.125", "launcher=inprocess"]
    args = ["run", STUDIES / "fscenes_faster_rcnn.yaml", "--scale", "smoke", "--results", results]
    for o in shrink:
        args += ["--set", o]
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    for step in STEPS:
        run = results / "fscenes_faster_rcnn" / "smoke" / step / "seed0"
        m = json.loads((run / "metrics.json").read_text())
        assert m["status"] == "completed" and m["task"] == "rcnn"
        assert m["primary_metric"] == "map" and 0.0 <= m["metrics"]["map"] <= 100.0
        assert m["epochs"] == 2 and m["iterations"] == 8  # 16 scenes / 4 per batch × 2 epochs
    cfg = (results / "fscenes_faster_rcnn/smoke/mixup/seed0/config.yaml").read_text()
    assert "pipeline: rcnn" in cfg and "formula: paper" in cfg
    rep = cli("report", results / "fscenes_faster_rcnn", "--format", "csv")
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(rep.out))}
    assert rep.code == 0 and list(rows) == STEPS
    assert [rows[s]["ref"] for s in STEPS] == ["77.61", "77.77", "79.59", "80.23", "81.32"]
    assert rows["no_aug"]["ref_delta"] == "-0.16"
    assert rows["mixup"]["ref_delta"] == "1.09"  # 81.32 − 80.23, not the printed +0.89


@pytest.fixture
def voc_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_devkit(root / "voc")
    list_full_trainval(root / "voc")
    monkeypatch.setenv("ABLATE_DATA", str(root))
    return root


def test_faster_rcnn_voc_plans_and_needs_its_pretrained_resnet(cli, results, voc_root):
    path = STUDIES / "faster_rcnn_voc.yaml"
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 2 and "model.backbone_weights: no file at" in r.err
    assert "pretrained/resnet50.pt" in r.err and not results.exists()
    (voc_root / "pretrained").mkdir()
    torch.save({}, voc_root / "pretrained" / "resnet50.pt")
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 0, r.err
    for step in STEPS:
        assert step in r.out
    assert tree_snapshot(results) == {}
