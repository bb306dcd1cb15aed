#!/usr/bin/env bash
# pipeserve's GPU checks, in one run on a machine with a CUDA GPU and a python3 that has torch
# with CUDA (torchvision for the benchmark): under about five minutes, logs and figures in OUT.
#
#   bash scripts/gpu_check.sh OUT     (PYTHON=... to choose the interpreter)
#
# 1. the torch and image-tensor tests, GPU-marked ones included (none may skip here);
# 2. benchmarks/gpu_resnet.py: ResNet-50 served with batching off and on against the ideal, and
#    the scheduler at GPU rates (figures in OUT/gpu_bench.json);
# 3. the rest of the suite on this interpreter (modules whose packages are absent skip), capped.
# Each step's time is capped so that the later ones still run; the exit code is the first failure's.
set -u
out=$(mkdir -p "${1:-gpu-out}" && cd "${1:-gpu-out}" && pwd)
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
  "$py" -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "numpy", numpy.__version__,
  "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'
  "$py" -c 'import torchvision, cv2, onnxruntime as o; print("torchvision", torchvision.__version__,
  "opencv", cv2.__version__, "onnxruntime", o.__version__, o.get_available_providers())'
  echo "cores $(nproc): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

echo "== 1. torch and image-tensor tests (GPU ones included)"
timeout 150 "$py" -m pytest -q -p no:cacheprovider -rs --timeout 120 \
  tests/test_gpu.py tests/test_gpu_image.py tests/test_torch.py tests/test_image.py tests/test_onnx.py \
  >"$out/gpu_tests.log" 2>&1 || status=1
tail -n 40 "$out/gpu_tests.log"
if grep -q "no CUDA GPU" "$out/gpu_tests.log"; then
  echo "GPU tests were skipped: this machine has no usable CUDA GPU"
  status=1
fi

echo "== 2. benchmark"
timeout 300 "$py" benchmarks/gpu_resnet.py --repeats 3 --seconds 2 --json "$out/gpu_bench.json" \
  >"$out/gpu_bench.log" 2>&1 || status=1
tail -n 45 "$out/gpu_bench.log"

echo "== 3. core suite"
# Modules needing the server stack, Ray or the OCR models skip themselves where those are absent.
timeout 170 "$py" -m pytest -q -p no:cacheprovider -rs --timeout 120 --maxfail 20 tests \
  --ignore tests/test_gpu.py --ignore tests/test_gpu_image.py --ignore tests/test_torch.py \
  --ignore tests/test_image.py --ignore tests/test_onnx.py >"$out/core_tests.log" 2>&1 || status=1
tail -n 25 "$out/core_tests.log"
echo "== gpu_check exit $status"
exit $status
