"""MegDet's studies (Meg-T3): the COCO one plans its ten rows against a tiny COCO tree, a batch
or BN layout the launch cannot give stops before anything runs (naming the step), and the
FashionScenes proxy runs end to end — linear scaling and warmup on the global batch, ghost-BN
groups of the row's BN size, wall time beside mAP and no Δ columns for rows that stand alone."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.conftest import ROOT, tree_snapshot

STUDIES = ROOT / "studies"
ROWS = ["b16_frozen", "b16_bn2", "b16_bn16", "b32_bn32", "b64_bn64", "b64_bn32", "b128_bn32",
        "b256_bn32", "b16_bn16_long", "b256_bn32_long",
        # Meg-T2 (frozen BN) and the rest of Meg-T3
        "b32_frozen", "b64_frozen", "b64_frozen_half_lr", "b128_frozen_half_lr", "b2_bn2",
        "b4_bn4", "b8_bn8", "b64_bn16", "b128_bn16", "b256_bn16", "b32_bn32_long",
        "b64_bn32_long", "b128_bn32_long", "b256_bn16_long"]



def test_megdet_coco_plans_every_row_and_needs_its_backbone(cli, results, coco_root):
    path = STUDIES / "megdet_coco.yaml"
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 2 and "step 'b16_frozen'" in r.err and "pretrained/resnet50.pt" in r.err
    (coco_root / "pretrained").mkdir()
    torch.save({}, coco_root / "pretrained" / "resnet50.pt")
    r = cli("run", path, "--dry-run", "--results", results)
    assert r.code == 0, r.err
    runs = [line.split(" seed")[0] for line in r.out.splitlines() if ": run " in line]
    assert runs == ROWS
    assert "train.batch_size=256 train.bn_group_size=32" in r.out
    assert "schedule.milestones=[11,14,17]" in r.out and "schedule.factor=[0.1,0.1,0.5]" in r.out
    # the paper's hours × GPUs of the rows it timed: 33.2 × 8 + 45.6 × 8 + … + 5.4 × 128; the
    # two failed rows have no time
    assert r.out.splitlines()[-1] == ("24 runs: 24 to run; about 9,038 GPU-hours on the paper's "
                                      "hardware (the full-scale runs to train, known for 22 of "
                                      "the 24)")
    # MegDet's warmup starts at the batch-16 rate; the half-LR rows halve the base LR
    assert "optim.lr=0.01" in r.out and "tricks.warmup.start_factor=0.125" in r.out
    assert "train.diverge_factor=10" in r.out
    assert tree_snapshot(results) == {}


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU refusal")
@pytest.mark.parametrize("dry", [True, False])
def test_bn_over_processes_on_cpu_exits_2_before_anything_runs(cli, results, coco_root, dry):
    """2 processes of 8 images cannot share BN over 16 on CPU (no SyncBatchNorm there)."""
    (coco_root / "pretrained").mkdir()
    torch.save({}, coco_root / "pretrained" / "resnet50.pt")
    r = cli("run", STUDIES / "megdet_coco.yaml", "--nproc", "2", "--results", results,
            *(["--dry-run"] if dry else []))
    assert r.code == 2
    assert r.err.startswith(f"error: {STUDIES / 'megdet_coco.yaml'}: step 'b16_bn16' (seed 0): "
                            "2 processes on CPU: bn_group_size 16 > per-process batch 8 needs "
                            "BN statistics synchronised across processes")
    assert tree_snapshot(results) == {}


def test_a_batch_the_processes_cannot_split_exits_2(cli, results, coco_root):
    (coco_root / "pretrained").mkdir()
    torch.save({}, coco_root / "pretrained" / "resnet50.pt")
    r = cli("run", STUDIES / "megdet_coco.yaml", "--nproc", "3", "--results", results)
    assert r.code == 2 and "step 'b16_frozen' (seed 0)" in r.err
    assert "train.batch_size=16 is not divisible by the 3 processes" in r.err
    assert tree_snapshot(results) == {}


def test_fscenes_megdet_rows_run_with_scaled_lr_and_ghost_groups(cli, results, tmp_path,
                                                                 fmnist_root):
    tiny = [f"paths.data={tmp_path}", f"data.fmnist_root={fmnist_root}", "data.num_train=64",
            "data.num_test=16", "data.train_size=64", "data.eval_size=64", "data.num_workers=0",
            "model.width=0.125", "train.eval_batch_size=16", "launcher=inprocess"]
    args = ["run", STUDIES / "fscenes_megdet.yaml", "--scale", "smoke", "--results", results,
            "--only", "b16_bn2,b64_bn16"]
    for o in tiny:
        args += ["--set", o]
    r = cli(*args)
    assert r.code == 0, r.out + r.err
    runs = results / "fscenes_megdet" / "smoke"
    for step, batch, group in [("b16_bn2", 16, 2), ("b64_bn16", 64, 16)]:
        d = runs / step / "seed0"
        m = json.loads((d / "metrics.json").read_text())
        assert m["status"] == "completed" and m["iterations"] == 2 * (64 // batch)
        log = list(csv.DictReader((d / "log.csv").open()))
        # linear scaling: 0.005 per 16 images; warmup over half of 2 epochs, then ×0.1 at 1
        assert float(log[0]["lr"]) == pytest.approx(0.005 * batch / 16)
        assert float(log[1]["lr"]) == pytest.approx(0.0005 * batch / 16)
        cfg = (d / "config.yaml").read_text()
        assert f"batch_size: {batch}" in cfg and f"bn_group_size: {group}" in cfg
    rep = cli("report", runs, "--format", "md")
    lines = rep.out.splitlines()
    assert "| step | map | time (min) | paper map | paper time | runs |" in lines
    assert any(line.startswith("| batch 16, BN size 2 (8 devices × 2) |") and
               line.endswith("| 31.00 | 45.60 | 1 |") for line in lines)
    assert any("| batch 32, BN size 32 | not run |" in line for line in lines)
