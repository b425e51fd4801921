"""The GPU benchmark script runs end to end (on CPU with tiny models), so a lent GPU can run it
unchanged."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_small_runs_on_cpu():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--small",
           "--precisions", "bf16", "--batch-resnet", "4", "--batch-yolo", "2",
           "--size-resnet", "32", "--size-yolo", "64", "--warmup", "1", "--iters", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines()
            if line.startswith("| resnet50_d") or line.startswith("| yolov3")]
    assert [r[0].strip() for r in rows] == ["resnet50_d", "yolov3"]
    for r in rows:
        assert r[1].strip() == "bf16 + channels_last"
        assert float(r[4].replace(",", "")) > 0  # img/s
        assert float(r[5]) > 0  # training GFLOP per image
        assert r[7].strip() == "–"  # no known peak on CPU: no MFU
