#!/usr/bin/env bash
# The CUDA checks and figures in one go, for a machine with a GPU (a few minutes on an H100):
# the CUDA tests (fp16 loss scaling, bf16 vs fp32, the benchmark's MFU columns), then
# bench_gpu.py's ResNet-50-D / YOLOv3 throughput and MFU per precision, then the ImageNet
# and detection pipelines with decoding in the workers against decoding on the GPU
# (data.decode=device). Each part's output is also written to ${OUT:-.}/gpu_tests.txt,
# gpu_bench.txt, gpu_pipeline.txt and gpu_det_pipeline.txt.
# PYTHON picks the interpreter.
set -uo pipefail
OUT=${OUT:-.}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'" || exit 1
$PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/gpu_tests.txt"
tests=${PIPESTATUS[0]}
$PY benchmarks/bench_gpu.py "$@" 2>&1 | grep -v '^@ablate' | tee "$OUT/gpu_bench.txt"
bench=${PIPESTATUS[0]}
$PY benchmarks/bench_cls_pipeline.py --images 2048 --batch 256 --workers 4 8 \
    --decode worker device --device cuda 2>&1 | tee "$OUT/gpu_pipeline.txt"
cls=${PIPESTATUS[0]}
det=(--min-size 375 --max-size 500 --cache-dir "${TMPDIR:-/tmp}/ablate_scenes"
     --only "augment+mixup+shapes" "rcnn flip+mixup" --decode worker device --device cuda)
{ $PY benchmarks/bench_detection_pipeline.py "${det[@]}" --item-cost --items 128 &&
  $PY benchmarks/bench_detection_pipeline.py "${det[@]}" --workers 4 8 --batch-size 32 \
      --batches 20; } 2>&1 | tee "$OUT/gpu_det_pipeline.txt"
exit $(( tests || bench || cls || PIPESTATUS[0] ))
