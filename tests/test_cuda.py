"""The CUDA paths (skipped without a GPU): fp16 with dynamic loss scaling and bf16 runs through
the worker on the GPU, channels_last, ImageNet's and the detection loaders' ``decode: device``
(nvJPEG) against the worker path, and the GPU benchmark's MFU figures. Run them on a GPU
machine with ``python -m pytest -q tests/test_cuda.py``."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ablate.engine import run_io
from ablate.worker import run
from tests.engine.test_worker import make_run
from tests.test_imagenet_data import STD, build, make_imagenet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
ROOT = Path(__file__).resolve().parents[1]


def cuda_run(tmp_path, fmnist_root, precision: str) -> tuple[dict, dict]:
    tricks = ("tricks=[amp]", f"tricks.amp.dtype={precision}") if precision != "fp32" else ()
    config, _ = make_run(tmp_path, fmnist_root, "train.channels_last=true", "seed=0",
                         tricks=tricks)
    result = run(config)
    return result, run_io.load_checkpoint(tmp_path / "checkpoints" / "last.pt")


def test_fp16_run_scales_the_loss(tmp_path, fmnist_root):
    result, ckpt = cuda_run(tmp_path, fmnist_root, "fp16")
    assert result["status"] == "completed" and result["precision"] == "fp16"
    assert result["device"].startswith("cuda")
    assert math.isfinite(result["metrics"]["train_loss"])
    scale = ckpt["scaler"]["scale"]  # dynamic: starts at 2^16, halves on overflow, doubles
    assert scale > 0 and math.log2(scale) == int(math.log2(scale))
    assert ckpt["iteration"] == 12


def test_bf16_and_fp32_runs_agree(tmp_path, fmnist_root):
    fp32, _ = cuda_run(tmp_path / "fp32", fmnist_root, "fp32")
    bf16, ckpt = cuda_run(tmp_path / "bf16", fmnist_root, "bf16")
    assert ckpt["scaler"] == {}  # no loss scaling outside fp16
    assert bf16["metrics"]["train_loss"] == pytest.approx(fp32["metrics"]["train_loss"], rel=0.05)


def test_bench_gpu_reports_mfu():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--small",
           "--precisions", "bf16", "fp16", "--batch-resnet", "32", "--batch-yolo", "8",
           "--size-resnet", "64", "--size-yolo", "128", "--warmup", "2", "--iters", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
            if line.startswith("| resnet50_d") or line.startswith("| yolov3")]
    assert len(rows) == 4
    name = torch.cuda.get_device_name()
    for r in rows:
        assert float(r[9]) > 0  # peak GiB allocated
        if any(k in name for k in ("H100", "H200", "A100")):
            assert r[7].endswith("%") and float(r[7].rstrip(" %")) > 0


def test_imagenet_device_decode_on_the_gpu(tmp_path):
    """nvJPEG's inverse DCT and the float resize differ from libjpeg and the uint8 resize by a
    level or two: the same items, labels and draws, pixels close."""
    tree = make_imagenet(tmp_path / "imagenet")
    for split in (0, 1):
        want = list(build(tree, "data.jitter=0.4")[split])
        got = list(build(tree, "data.jitter=0.4", "data.decode=device",
                         device=torch.device("cuda"))[split])
        assert len(got) == len(want)
        for a, b in zip(want, got):
            assert b["image"].is_cuda and torch.equal(a["label"], b["label"].cpu())
            levels = ((a["image"] - b["image"].cpu()) * STD.view(1, 3, 1, 1) * 255).abs()
            assert levels.mean() < 2 and levels.quantile(0.99) < 8


def test_detection_device_decode_on_the_gpu(tmp_path):
    """The YOLO (augmentation, mixup, random shapes) and Faster R-CNN (flip, mixup, padding)
    pipelines with ``decode: device`` on the GPU against the worker path on the CPU: the same
    targets (drawn on the host), pixels within a level or two (nvJPEG, float resize kernels)."""
    from ablate.data.pipelines.detection import build_detection_loaders
    from ablate.data.pipelines.rcnn import build_rcnn_loaders
    from tests.conftest import trick_plugins
    from ablate.data.loading import IMAGENET_STD
    from ablate.data.datasets.fashion_scenes import fashion_scenes_dataset, fashion_scenes_root

    root = fashion_scenes_root(tmp_path, num_train=24, num_test=6)
    train, test = (fashion_scenes_dataset(root, s) for s in ("train", "test"))
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255

    def yolo(**kw):
        plugins = trick_plugins(
            "yolo", {"data_augmentation": {}, "mixup": {"off_last_epochs": 0},
                     "random_shapes": {"sizes": [96, 128], "every": 1}})
        return build_detection_loaders(train, test, batch_size=4, train_size=128,
                                       eval_size=128, plugins=plugins, **kw)

    def rcnn(**kw):
        plugins = trick_plugins("rcnn", {"data_augmentation": {}, "mixup": {}})
        return build_rcnn_loaders(train, test, batch_size=3, scale=(100, 160), plugins=plugins,
                                  **kw)

    for loaders in (yolo, rcnn):
        want = [list(loader) for loader in loaders()]
        got = [list(loader) for loader in loaders(decode="device", device="cuda")]
        for w, g in zip(want, got):
            assert len(w) == len(g)
            for a, b in zip(w, g):
                assert b["image"].is_cuda and a["image"].shape == b["image"].shape
                for k in ("boxes", "labels", "weights"):
                    assert torch.equal(a[k], b[k].cpu()), k
                levels = ((a["image"] - b["image"].float().cpu()) * std).abs()
                assert levels.mean() < 2 and levels.quantile(0.99) < 8
