#!/usr/bin/env bash
# The GPU checks in one short run (about 5 minutes), for an NVIDIA machine with CUDA PyTorch:
# the GPU/TensorRT tests, the detect stage's pinned-slab gather against the bare model, and the
# whole pipeline on N cameras. Run from the repository root:
#
#   OUT=/tmp/gpu bash tests/bench/gpu_checks.sh [VIDEO ...]
#
# Packages missing there can travel as wheels in .whl/ (installed into /tmp/site first). VIDEOs
# (default: .gpuwork/*.mp4) feed the pipeline benchmark. Everything is logged to $OUT.
set -u
OUT=${OUT:-/tmp/edgestream-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
videos=("$@")
[ ${#videos[@]} -gt 0 ] || videos=(.gpuwork/*.mp4)

step() { echo; echo "=== [$SECONDS s] $*"; }
{
    step machine
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import sys, torch, numpy, av, zmq; print(sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'numpy',
numpy.__version__, 'av', av.__version__, 'zmq', zmq.__version__)"
    nproc

    step "GPU and TensorRT tests"
    timeout 240 python3 -m pytest -p no:cacheprovider -m "gpu or tensorrt" -rA -q \
        tests/runtime/test_gpu_gather.py tests/detect/test_backends.py \
        tests/decode/test_decode_files.py tests/detect/test_tensorrt.py \
        tests/detect/test_engine_cache.py tests/track/test_appearance.py

    step "detect stage (pinned slab, CUDA gather) vs bare model"
    for args in "--arch yolo_nas_s --batch 8" "--arch yolo_nas_s --batch 32" \
        "--arch yolo_nas_s --batch 32 --half" "--weights stages/detect/models/demo.pth --batch 16"; do
        # shellcheck disable=SC2086
        timeout 90 python3 tests/runtime/bench_detect_stage.py --device cuda --seconds 4 $args
    done

    step "whole pipeline on the GPU: 16 cameras, demo model (YOLO-NAS N 416), batches of 16"
    timeout 120 python3 tests/bench/bench_pipeline.py "${videos[@]}" --cameras 16 \
        --device cuda --max-batch 16 --preprocess-workers 6
    step "the same, 24 cameras, batches of 32, 8 preprocess workers"
    timeout 120 python3 tests/bench/bench_pipeline.py "${videos[@]}" --cameras 24 \
        --device cuda --max-batch 32 --preprocess-workers 8
    step done
} 2>&1 | tee "$OUT/gpu-checks.log"
