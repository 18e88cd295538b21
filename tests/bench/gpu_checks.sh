#!/usr/bin/env bash
# The GPU checks of issue 18 in one call (at most ~8 minutes), for an NVIDIA machine with CUDA
# PyTorch. Run from the repository root:
#
#   OUT=/tmp/gpu bash tests/bench/gpu_checks.sh
#
# What it runs, in this order (each step bounded; the whole run stops starting steps after
# BUDGET_S, default 470 s):
#   1. the machine (GPU, driver, torch, CUDA, CPUs)
#   2. GPU and TensorRT tests (pytest -m "gpu or tensorrt"): pinned-slab gather, CUDA backends,
#      batched postprocess = per-image on CUDA tensors, engines (skipped without TensorRT)
#   3. synthetic 1080p street scenes for the cameras (written once into $OUT/work)
#   4. the bare model (demo model, PyTorch on CUDA): frames/s at batch 1, 16, 32 - the ceiling
#   5. postprocess on the GPU: per image vs batched, ms per batch of 16 and 32, same detections
#   6. the whole pipeline with 16, then 32 live synthetic 1080p cameras (25 frames/s each):
#      published frames/s, efficiency (= / bare model at the same batch, same run), p50/p95;
#      32 again with one decode process (decode.processes: auto gives 2 there; A/B in one run);
#      then 32 cameras at 100 frames/s each (a capacity run: where the pipeline tops out)
#   7. TensorRT: the demo model exported, an FP16 engine built and run at batch 16 and 32 (its
#      frames/s and agreement with PyTorch) - or one line saying plainly that TensorRT is not
#      importable here
#   8. the device letterbox against OpenCV's on car-detection.mp4 (detection agreement)
# Every figure is also one "RESULT {json}" line; $OUT/gpu-checks.log has it all, and
# $OUT/results.jsonl the RESULT lines alone.
#
# Packages missing there can travel as wheels in .whl/ (installed into /tmp/site first); the
# real clip for step 8 in .gpudata/ when ../shared is not beside the checkout.
# A dry run of the whole script on a CPU box (small, to check it end to end):
#   DEVICE=cpu SCENE=320x192 CAMS="2 4 4" OUT=/tmp/gpu-dry bash tests/bench/gpu_checks.sh
set -u
OUT=${OUT:-/tmp/edgestream-gpu}
BUDGET_S=${BUDGET_S:-470}
DEVICE=${DEVICE:-cuda}
SCENE=${SCENE:-1920x1080}
read -r CAMS_A CAMS_B CAMS_C <<<"${CAMS:-16 32 32}"
WORK=${WORK:-$OUT/work}
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if compgen -G ".whl/*.whl" >/dev/null \
    && ! python3 -c "import av, zmq, redis, pydantic, setproctitle" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
VIDEO=../shared/data/media/car-detection.mp4
[ -f "$VIDEO" ] || VIDEO=.gpudata/car-detection.mp4
HOT="python3 tests/bench/bench_gpu_hotpath.py --work $WORK --device $DEVICE --scene-size $SCENE"

step() { echo; echo "=== [$SECONDS s] $*"; }
# run LIMIT_S CMD...: CMD under a timeout of LIMIT_S, or less when the budget is running out
run() {
    local limit=$1 left=$((BUDGET_S - SECONDS))
    shift
    if [ "$left" -lt 20 ]; then
        echo "SKIPPED (budget of ${BUDGET_S} s spent): $*"
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    timeout "$limit" "$@"
    local rc=$?
    [ $rc -eq 124 ] && echo "TIMED OUT after ${limit} s: $*"
    return 0
}
{
    step machine
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    python3 -c "import sys, torch, numpy, av, zmq; print(sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'numpy',
numpy.__version__, 'av', av.__version__, 'zmq', zmq.__version__)"
    python3 -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>/dev/null \
        || echo "tensorrt: NOT importable here (the TensorRT steps will say so)"
    nproc
    # the frame rings live in /dev/shm: 32 cameras of 1080p need more than a container's 64 MB
    df -h /dev/shm | tail -1
    shm_mb=$(df -m --output=size /dev/shm | tail -1 | tr -d ' ')
    if [ "${shm_mb:-0}" -lt 8192 ]; then
        mount -o remount,size=16G /dev/shm && echo "/dev/shm enlarged to 16G" \
            || echo "/dev/shm is ${shm_mb} MB and could not be enlarged"
    fi

    step "GPU and TensorRT tests"
    run 120 python3 -m pytest -p no:cacheprovider -m "gpu or tensorrt" -rA -q \
        tests/runtime/test_gpu_gather.py tests/detect/test_backends.py \
        tests/detect/test_postprocess.py tests/detect/test_tensorrt.py \
        tests/detect/test_engine_cache.py

    step "synthetic 1080p scenes"
    run 120 $HOT model --batch 1 --seconds 0.5 >/dev/null

    step "bare model: demo model (YOLO-NAS N 416), PyTorch on CUDA"
    run 60 $HOT model --batch 1 16 32

    step "postprocess on the GPU: per image vs batched"
    run 45 $HOT postprocess --batch 16 32

    step "pipeline: $CAMS_A live synthetic $SCENE cameras, max_batch 16"
    run 100 $HOT pipeline --cameras "$CAMS_A" --batch 16 --seconds 15 --preprocess-workers 8
    step "pipeline: $CAMS_B live synthetic $SCENE cameras, max_batch 32"
    run 110 $HOT pipeline --cameras "$CAMS_B" --batch 32 --seconds 15 --preprocess-workers 10
    step "pipeline: the same with one decode process (as before decode.processes)"
    run 110 $HOT pipeline --cameras "$CAMS_B" --batch 32 --seconds 15 --preprocess-workers 10 \
        --decode-processes 1
    step "pipeline at capacity: $CAMS_C cameras at 100 frames/s each, max_batch 32"
    run 60 $HOT model --batch 1 --seconds 0.5 --scene-fps 100 --scene-seconds 2 >/dev/null
    run 110 $HOT pipeline --cameras "$CAMS_C" --batch 32 --seconds 15 --preprocess-workers 12 \
        --scene-fps 100 --scene-seconds 2

    step "TensorRT: build and run an FP16 engine of the demo model"
    run 150 $HOT tensorrt --batch 16 32

    step "device letterbox vs OpenCV"
    run 40 $HOT letterbox "$VIDEO"

    step done
} 2>&1 | tee "$OUT/gpu-checks.log"
grep '^RESULT ' "$OUT/gpu-checks.log" | sed 's/^RESULT //' >"$OUT/results.jsonl"
