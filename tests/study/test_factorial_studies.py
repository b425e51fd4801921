"""Det-T5's Faster R-CNN rows and the Det-T6/T7 factorials: the COCO studies plan against tiny
ImageNet and COCO trees with their pre-training study planned first, and a factorial runs end
to end — two classification backbones, each initialising the tiny Faster R-CNN without and with
detection mixup — into its 2 × 2 report."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from tests.conftest import ROOT, tree_snapshot
from tests.data.test_coco import make_coco_train_val
from tests.study.test_imagenet_studies import make_imagenet_1000

STUDIES = ROOT / "studies"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = make_imagenet_1000(tmp_path / "data")
    make_coco_train_val(root / "coco")
    monkeypatch.setenv("ABLATE_DATA", str(root))
    return root


def _runs(out: str) -> list[str]:
    return [line.split(":")[0] for line in out.splitlines()
            if ": run" in line and not line.startswith("uses")]


def test_faster_rcnn_coco_plans_both_backbones_and_needs_their_files(cli, results, data_root):
    path = STUDIES / "faster_rcnn_coco.yaml"
    (data_root / "pretrained").mkdir()
    torch.save({}, data_root / "pretrained" / "resnet50.pt")
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 2 and "step 'original.r101'" in r.err
    assert "pretrained/resnet101_d.pt" in r.err and not results.exists()
    torch.save({}, data_root / "pretrained" / "resnet101_d.pt")
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 0, r.err
    assert _runs(r.out) == ["original.r50 seed 0", "bof.r50 seed 0", "original.r101 seed 0",
                            "bof.r101 seed 0"]
    assert tree_snapshot(results) == {}


@pytest.mark.parametrize("study, backbone", [("mixup_phases_frcnn_coco", "resnet101_d"),
                                             ("mixup_phases_yolov3_coco", "darknet53")])
def test_mixup_phase_studies_plan_their_pretraining_first(cli, results, data_root, study,
                                                          backbone):
    r = cli("run", STUDIES / f"{study}.yaml", "--dry-run", "--results", results)
    assert r.code == 0, r.err
    uses = [line.split(":")[0] for line in r.out.splitlines() if line.startswith("uses ")]
    assert uses == [f"uses imagenet_mixup_pretrain full plain.{backbone} seed 0",
                    f"uses imagenet_mixup_pretrain full mixup.{backbone} seed 0"]
    assert _runs(r.out) == ["pre.det seed 0", "pre_mixup.det seed 0", "pre.det_mixup seed 0",
                            "pre_mixup.det_mixup seed 0"]
    assert tree_snapshot(results) == {}


PRETRAIN = """
name: pre
metric: top1
base:
  model: resnet_tiny_d
  model.variant: b
  model.depth: 14
  model.width: 0.125
  model.small_input: false
  data.root: {fmnist}
  data.train_subset: 64
  data.test_subset: 32
  train.batch_size: 32
  train.epochs: 1
steps:
  - id: plain
    parent: null
  - id: mixup
    add: [mixup]
"""

FACTORIAL = """
name: phases
metric: map
layout: factorial
rows_title: backbone pre-training
uses:
  plain: {{study: pre, step: plain}}
  mixup: {{study: pre, step: mixup}}
base:
  model: faster_rcnn_tiny
  model.width: 0.125
  data: fashion_scenes
  data.fmnist_root: {fmnist}
  data.num_train: 8
  data.num_test: 4
  data.num_workers: 0
  train.batch_size: 4
  train.eval_batch_size: 4
  train.epochs: 1
  schedule.milestones: [1]
columns:
  - id: det
    label: -mixup det
  - id: det_mixup
    label: +mixup det
    add: [mixup]
steps:
  - id: pre
    label: -mixup pre
    parent: null
    set: {{model.backbone_weights: '${{uses.plain}}'}}
    ref: {{det: {{map: 39.9}}, det_mixup: {{map: 40.1}}}}
  - id: pre_mixup
    label: +mixup pre
    set: {{model.backbone_weights: '${{uses.mixup}}'}}
    ref: {{det: {{map: 40.1}}, det_mixup: {{map: 41.1}}}}
"""


def test_factorial_runs_end_to_end_from_its_pretraining(cli, results, tmp_path, fmnist_root):
    (tmp_path / "pre.yaml").write_text(textwrap.dedent(PRETRAIN).format(fmnist=fmnist_root))
    path = tmp_path / "phases.yaml"
    path.write_text(textwrap.dedent(FACTORIAL).format(fmnist=fmnist_root))
    r = cli("run", path, "--results", results, "--set", f"paths.data={tmp_path}",
            "--set", "launcher=inprocess")
    assert r.code == 0, r.out + r.err
    runs = results / "phases" / "full"
    for step, pre in [("pre.det", "plain"), ("pre.det_mixup", "plain"),
                      ("pre_mixup.det", "mixup"), ("pre_mixup.det_mixup", "mixup")]:
        m = json.loads((runs / step / "seed0" / "metrics.json").read_text())
        assert m["status"] == "completed" and m["task"] == "rcnn"
        assert ("mixup" in m["tricks"]) == step.endswith("det_mixup")
        log = (runs / step / "seed0" / "stdout.log").read_text()
        ckpt = results / "pre" / "full" / pre / "seed0" / "checkpoints" / "last.pt"
        assert "backbone_weights: loaded" in log and str(ckpt) in log
    assert json.loads((results / "pre" / "full" / "mixup" / "seed0" / "metrics.json")
                      .read_text())["tricks"]["mixup"]["alpha"] == 0.2
    lines = r.out.splitlines()
    head = [i for i, line in enumerate(lines) if line.startswith("| backbone pre-training")][-1]
    assert lines[head] == ("| backbone pre-training | -mixup det | +mixup det "
                           "| Δ (+mixup det − -mixup det) | paper -mixup det "
                           "| paper +mixup det | paper Δ |")
    assert lines[head + 4].startswith("| Δ (+mixup pre − -mixup pre) |")
    assert lines[head + 4].endswith("| +0.20 | +1.00 | +0.80 |")
