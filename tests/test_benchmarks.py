"""The step, pipeline, evaluation and GPU benchmark scripts run end to end with tiny settings on
CPU, so the figures in benchmarks/RESULTS.md stay reproducible (and a lent GPU can run
bench_gpu.py unchanged); bench_gpu's FLOP count is checked exactly. (bench_harness and
bench_fashion_scenes run whole studies: minutes, not smoke-tested; of smoke_metrics and
compare_trees, the tools that compare two commits, the comparing parts are.)"""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_gpu  # noqa: E402


def bench(name: str, *args: str) -> str:
    cmd = [sys.executable, str(ROOT / "benchmarks" / name), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def rows(out: str, first: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith(f"| {first}")]


def test_bench_gpu_small_runs_on_cpu():
    out = bench("bench_gpu.py", "--small", "--precisions", "bf16", "--batch-resnet", "4",
                "--batch-yolo", "2", "--size-resnet", "32", "--size-yolo", "64", "--warmup", "1",
                "--iters", "1")
    got = rows(out, "resnet50_d") + rows(out, "yolov3")
    assert [r[0] for r in got] == ["resnet50_d", "yolov3"]
    for r in got:
        assert r[1] == "bf16 + channels_last"
        assert float(r[4].replace(",", "")) > 0  # img/s
        assert float(r[5]) > 0  # training GFLOP per image
        assert r[7] == "–"  # no known peak on CPU: no MFU


def test_train_flops_per_image_is_three_forwards():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # forward: 8 × 8 outputs × 8 channels × (3 × 3 × 3) multiply-adds × 2 = 27,648 FLOPs
    assert bench_gpu.train_flops_per_image(conv, {"image": torch.zeros(2, 3, 8, 8)}) == 82944
    assert conv.training  # the count runs in eval mode and restores the mode


def test_resnet50_d_training_flops_at_224():
    from bench_cls_step import our_model

    model = our_model("resnet50_d")
    flops = bench_gpu.train_flops_per_image(model, {"image": torch.zeros(2, 3, 224, 224)})
    assert flops == 3 * 8_657_649_664  # 4.33 G multiply-adds a forward


def test_peak_override_and_unknown_device():
    assert bench_gpu.peak_tflops("bf16", 100.0) == 100.0
    if not torch.cuda.is_available():
        assert bench_gpu.peak_tflops("bf16", None) is None


def test_bench_throughput():
    out = bench("bench_throughput.py", "--batch", "32", "--iters", "2", "--rounds", "2")
    assert [r[0] for r in rows(out, "fp32") + rows(out, "bf16")] == [
        "fp32", "fp32 + channels_last", "bf16 + channels_last"]


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="needs .[bench] (timm)")
def test_bench_cls_step():
    out = bench("bench_cls_step.py", "--model", "resnet_tiny_d", "--batch", "16", "--iters", "2",
                "--rounds", "2", "--size", "28", "--precisions", "fp32")
    (r,) = rows(out, "fp32")
    assert r[4].endswith(")") and "×" in r[4]  # median paired ratio (min–max)


def test_bench_engine_options():
    out = bench("bench_engine_options.py", "--batch", "32", "--iters", "2", "--rounds", "2",
                "--sides", "optim.impl=fused", "optim.impl=loop")
    assert "optim.impl=loop" in out


def test_bench_cls_pipeline():
    out = bench("bench_cls_pipeline.py", "--images", "32", "--batch", "8", "--workers", "0",
                "--width", "64", "--height", "48", "--decode", "worker", "device")
    assert "img/s" in out and "| device | 0 |" in out
    diff = re.search(r"decode=device vs worker, 32 train \+ val images: max \|diff\| ([\d.]+)", out)
    assert diff and float(diff.group(1)) <= 1.01


def test_bench_detection_pipeline(tmp_path):
    out = bench("bench_detection_pipeline.py", "--size", "64", "--short", "64", "--max-side", "96",
                "--batch-size", "4", "--batches", "2", "--workers", "0", "--cache-dir",
                str(tmp_path), "--only", "augment+mixup+shapes", "rcnn flip",
                "--decode", "worker", "device")
    names = [tuple(r[:3]) for r in rows(out, "") if r[0] not in ("pipeline", "---")]
    mixed = "augment+mixup+shapes"
    assert names == [(mixed, "worker", "0"), (mixed, "device", "0"), ("rcnn flip", "worker", "0"),
                     ("rcnn flip", "device", "0")]


def test_bench_detection_pipeline_item_cost(tmp_path):
    out = bench("bench_detection_pipeline.py", "--item-cost", "--items", "4", "--rounds", "1",
                "--size", "64", "--short", "64", "--max-side", "96", "--min-size", "48",
                "--max-size", "64", "--only", "augment", "rcnn flip", "--cache-dir", str(tmp_path),
                "--decode", "worker", "device")
    names = [r[0] for r in rows(out, "") if r[0] not in ("pipeline", "---")]
    assert names == ["decode", "augment", "rcnn flip", "augment, decode=device: worker",
                     "rcnn flip, decode=device: worker", "augment, decode=device: cpu",
                     "rcnn flip, decode=device: cpu"]
    assert all(float(r[1]) > 0 for r in rows(out, "") if r[0] in names)


def test_bench_eval():
    out = bench("bench_eval.py", "--images", "50", "--dets", "10", "--repeats", "1")
    assert "voc07" in out and "identical" in out


def test_bench_rcnn_step(tmp_path):
    out = bench("bench_rcnn_step.py", "--batch", "2", "--iters", "1", "--rounds", "1",
                "--data-dir", str(tmp_path))
    assert [r[0] for r in rows(out, "ablate") + rows(out, "plain") + rows(out, "torchvision")] == [
        "ablate", "plain loop", "torchvision ref", "torchvision ref, stock RoIAlign"]


def test_bench_proposal_recall_sides_agree_on_random_proposals():
    out = bench("bench_proposal_recall.py", "--images", "6", "--proposals", "200",
                "--rounds", "1")
    ours, coco = rows(out, "MMDetection")[0], rows(out, "COCOeval")[0]
    assert ours[3] == coco[3]  # the same AR@100 / 300 / 1000 on these proposals


def test_bench_yolo_step(tmp_path):
    out = bench("bench_yolo_step.py", "--size", "64", "--batch", "4", "--bn-group", "2",
                "--iters", "1", "--rounds", "1", "--workers", "0", "--data-dir", str(tmp_path))
    assert "img/s" in out


def test_bench_roi_align():
    assert "ms" in bench("bench_roi_align.py")


def test_smoke_metrics_compare_names_each_difference(tmp_path):
    before = tmp_path / "before.json"
    before.write_text('{"s/smoke/a/seed0": {"status": "completed", "top1": 80.5}, '
                      '"s/smoke/b/seed0": {"status": "completed", "top1": 81.0}}')
    cmd = [sys.executable, str(ROOT / "benchmarks" / "smoke_metrics.py"), "compare",
           str(before)]
    same = subprocess.run([*cmd, str(before)], capture_output=True, text=True)
    assert (same.returncode, same.stdout) == (0, "2 runs before, 2 after, 0 differ\n")
    after = tmp_path / "after.json"
    after.write_text('{"s/smoke/a/seed0": {"status": "completed", "top1": 80.5}, '
                     '"s/smoke/b/seed0": {"status": "completed", "top1": 81.25}}')
    changed = subprocess.run([*cmd, str(after)], capture_output=True, text=True)
    assert changed.returncode == 1
    assert changed.stdout == ("differs: s/smoke/b/seed0: {'status': 'completed', 'top1': 81.0} -> "
                              "{'status': 'completed', 'top1': 81.25}\n"
                              "2 runs before, 2 after, 1 differ\n")


def test_compare_trees_reads_the_benchmarks_tables():
    import compare_trees

    out = ("| side | img/s | ratio |\n|---|---|---|\n| ablate | 1,234 | 1.00× |\n"
           "| plain loop | 1,100 | 1.12× |\n| fp32 + channels_last | 2,370 | 3,000 |\n"
           "| 2 | 178 | 11.4 |\n")
    assert compare_trees.ROW.findall(out) == [("ablate", "1,234"),
                                              ("fp32 + channels_last", "2,370"), ("2", "178")]
