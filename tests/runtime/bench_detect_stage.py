"""Detect stage throughput versus the bare model at the same batch size.

    python3 tests/runtime/bench_detect_stage.py --device cuda --arch yolo_nas_s --batch 8

(a) bare: ``backend.infer`` on one host batch, back to back; (b) stage: `DetectStage` fed
letterboxed items as shared-memory descriptors in a preprocess slab — on CUDA the slab is
registered as pinned memory and each batch is gathered with async host-to-device copies on the
stage's own stream (`stages.detect.gather.CudaGatherer`), then the same backend runs and boxes
are mapped back to source pixels. Random weights (throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "detect")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--arch", default="yolo_nas_s", help="yolo_nas_s/m/l, or 'tiny'")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--weights", help="a trained checkpoint instead of --arch (its input size)")
    args = ap.parse_args()

    import numpy as np
    import torch

    import pipeline.shm as shm
    from pipeline.messages import DetectionsMsg, ItemMsg
    from stages.detect.backends.torch_backend import TorchBackend
    from stages.detect.preprocess import letterbox, resize_to_for
    from stages.detect.stage import DetectStage, DetectStageConfig
    from stages.detect.types import ModelInfo

    torch.manual_seed(0)
    if args.weights:
        from stages.detect.weights import load_model

        model, info = load_model(args.weights)
        args.arch = f"{info.arch} ({Path(args.weights).name})"
    elif args.arch == "tiny":
        from tiny_detector import TinyDetector

        model = TinyDetector()
        info = ModelInfo(input_hw=(640, 640), num_classes=80)
    else:
        from stages.detect.nn.yolo_nas import ARCHS

        model = ARCHS[args.arch](num_classes=80)
        info = ModelInfo(input_hw=(640, 640), num_classes=80)
    hw = info.input_hw
    backend = TorchBackend(model, device=args.device, half=args.half, max_batch=args.batch,
                           info=info)  # fmt: skip
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(args.batch)]
    host = np.stack([letterbox(f, input_hw=hw, resize_to=resize_to_for(hw))[0] for f in frames])

    def timed(step: object, n_frames: int) -> float:
        for _ in range(3):  # warm-up (cuDNN autotune, allocator)
            step()  # type: ignore[operator]
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds:
            step()  # type: ignore[operator]
            done += n_frames
        return done / (time.perf_counter() - t0)

    bare = timed(lambda: backend.infer(host), args.batch)

    # on tmpfs, as in the pipeline: CUDA can pin tmpfs pages, not those of a disk file
    tmpfs = "/dev/shm" if Path("/dev/shm").is_dir() else None
    shm.SHM_DIR = Path(tempfile.mkdtemp(prefix="edgestream-bench-", dir=tmpfs))
    slab = shm.ShmRing.create(shm.ring_name("bench", "slab"), 4 * args.batch, 3 * hw[0] * hw[1])
    # a batch leaves when full (max_wait_ms 0 would send every frame alone: batch 1)
    stage = DetectStage(
        lambda: backend, DetectStageConfig(max_batch=args.batch, max_wait_ms=60_000)
    )
    stage.setup()
    gather = type(stage._gather).__name__
    seq = [0]

    def stage_step() -> None:
        out: list[object] = []
        for f in frames:
            with slab.writing((3, *hw)) as w:
                _, meta = letterbox(f, w.array, input_hw=hw, resize_to=resize_to_for(hw))
            i = seq[0]
            seq[0] += 1
            lb = (meta.scale, meta.pad_top, meta.pad_left, meta.src_h, meta.src_w)
            out += stage.process(ItemMsg("c", i, i, time.time(), "wallclock", 1920, 1080, *lb,
                                         w.ref))  # fmt: skip
        assert sum(isinstance(m, DetectionsMsg) for m in out) == args.batch  # one full batch

    # the letterbox is the preprocess workers' job: time it apart and take it out
    lb_s = timed(
        lambda: [letterbox(f, input_hw=hw, resize_to=resize_to_for(hw)) for f in frames],
        args.batch,
    )
    staged = timed(stage_step, args.batch)
    stage_only = 1.0 / max(1e-9, 1.0 / staged - 1.0 / lb_s)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device {name}; {args.arch} batch {args.batch}{' fp16' if args.half else ''}; "
          f"gather: {gather}")  # fmt: skip
    print(f"bare backend.infer          : {bare:8.1f} frames/s")
    print(f"detect stage (shm → detections): {stage_only:8.1f} frames/s "
          f"({staged:.1f} with the letterbox in the loop, letterbox alone {lb_s:.1f})")  # fmt: skip
    pinned = getattr(stage._gather, "registered_bytes", 0)
    print(f"slab pinned for DMA: {pinned / 2**20:.0f} MiB" if pinned else "slab not pinned")
    stage.close()
    slab.close()
    shutil.rmtree(shm.SHM_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
