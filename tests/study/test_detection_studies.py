"""The shipped detection studies: the full-scale ones plan against (tiny) VOC and COCO data, a
missing pretrained file stops them before anything runs, and the COCO study runs end to end with
the tiny YOLOv3 — one set of weights scored at three input sizes by pycocotools."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from tests.conftest import ROOT, tree_snapshot
from tests.data.test_coco import make_coco_train_val
from tests.data.test_voc import list_full_trainval, make_devkit

STUDIES = ROOT / "studies"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    make_devkit(root / "voc")
    make_coco_train_val(root / "coco")
    monkeypatch.setenv("ABLATE_DATA", str(root))
    return root


@pytest.mark.parametrize("study, steps", [
    ("yolov3_voc", ["no_aug", "baseline", "sync_bn", "random_shapes", "cosine",
                    "label_smoothing", "mixup"]),
    ("yolov3_voc_mixup", ["baseline", "even", "beta_1_0", "beta_1_5"]),
    ("yolov3_coco", ["original", "bof"])])
def test_full_scale_studies_plan_and_need_their_pretrained_file(cli, results, data_root, study,
                                                                steps):
    path = STUDIES / f"{study}.yaml"
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 2 and "model.backbone_weights: no file at" in r.err
    assert f"step '{steps[0]}'" in r.err and not results.exists()

    (data_root / "pretrained").mkdir()
    torch.save({}, data_root / "pretrained" / "darknet53.pt")
    r = cli("run", path, "--dry-run", "--results", results)
    if "voc" in study:  # 3 training images: the full recipe's batch of 64 never fills
        assert r.code == 2 and "no training step: 3 training images are fewer than one " \
                               "global batch (train.batch_size=64)" in r.err
        list_full_trainval(data_root / "voc")
        r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 0, r.err
    for step in steps:
        assert f"{step}" in r.out
    assert tree_snapshot(results) == {}


def test_bad_eval_size_is_refused_before_training(cli, results, data_root):
    r = cli("run", STUDIES / "yolov3_coco.yaml", "--dry-run", "--results", results,
            "--set", "model.backbone_weights=null", "--set", "data.eval_size=[416,400]")
    assert r.code == 2 and "step 'original'" in r.err and "eval_size" in r.err


def test_coco_study_runs_end_to_end_with_three_eval_sizes(cli, results, data_root):
    tiny = ["model=yolov3_tiny", "model.backbone_weights=null", "model.width=0.125",
            "data.num_classes=3", "data.train_size=64", "data.num_workers=0",
            "train.batch_size=2", "train.eval_batch_size=4", "train.bn_group_size=1",
            "launcher=inprocess"]
    args = ["run", STUDIES / "yolov3_coco.yaml", "--scale", "smoke", "--results", results]
    for o in tiny:
        args += ["--set", o]
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    for step in ("original", "bof"):
        m = json.loads((results / "yolov3_coco" / "smoke" / step / "seed0" /
                        "metrics.json").read_text())
        assert m["status"] == "completed" and m["primary_metric"] == "map"
        sizes = {k for k in m["metrics"] if k.startswith("map@")}
        assert sizes == {"map@320", "map@416", "map@608"}
        assert m["metrics"]["map"] == m["metrics"]["map@416"]
        assert all(0.0 <= m["metrics"][k] <= 100.0 for k in sizes)
    rep = cli("report", results / "yolov3_coco", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(rep.out)))
    assert rep.code == 0 and len(rows) == 6
    assert [(r["id"], r["metric"], r["ref"]) for r in rows] == [
        ("original", "map@320", "28.2"), ("original", "map@416", "31.0"),
        ("original", "map@608", "33.0"), ("bof", "map@320", "33.6"), ("bof", "map@416", "36.0"),
        ("bof", "map@608", "37.0")]
    bof = {r["metric"]: r for r in rows if r["id"] == "bof"}
    assert bof["map@416"]["ref_delta"] == "5.0"  # 36.0 - 31.0, computed, not copied
