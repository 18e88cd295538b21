"""Detection speed on this machine: ms per image for each backend and batch size.

    python3 tests/bench/bench_detect.py [--ref-dir /tmp/ref_onnx] [--batches 1 4 8]

Rows:
- ``torch``: `TorchBackend` (fused YOLO-NAS S, CPU), uint8 batch in → detections out (NMS incl.).
- ``ort graph (edgestream)`` / ``ort graph (reference)``: the bare ONNX Runtime session on the
  raw-outputs graph, edgestream's export versus the graph super-gradients 3.7.1 exports
  (made by ``tests/parity/export_reference_onnx.py`` in the reference venv; skipped if absent).
  Same session options, runs interleaved round by round so machine noise hits both alike.
- ``onnxruntime backend``: `OnnxRuntimeBackend` end to end (uint8 in, NMS, detections out).

Figures are medians over ``--repeats`` rounds after a warm-up; compare ratios within one run.
Weights are deterministic (tests/parity/det_weights.py): speed does not depend on their values
except through the number of boxes NMS sees, which the deterministic weights keep realistic.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "parity"))


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _bench_batch(
    b: int,
    model: object,
    images: list[np.ndarray],
    threads: int,
    args: argparse.Namespace,
    tmp: Path,
) -> list[tuple[str, int, float, str]]:
    from stages.detect.backends.onnxruntime_backend import OnnxRuntimeBackend
    from stages.detect.backends.torch_backend import TorchBackend
    from stages.detect.export import export_onnx
    from stages.detect.preprocess import letterbox_batch

    rows: list[tuple[str, int, float, str]] = []
    batch_u8, _ = letterbox_batch(images)
    batch_f = batch_u8.astype(np.float32) / np.float32(255.0)

    tb = TorchBackend(model, device="cpu", max_batch=b)
    rows.append(("torch backend", b, _median_ms(lambda: tb.infer(batch_u8), args.repeats) / b, ""))

    # Same batch mode on both sides: a fixed-batch reference graph if there is one for this
    # size, else both dynamic.
    ref_path = args.ref_dir / f"yolo_nas_s_b{b}.onnx"
    if not ref_path.exists():
        ref_path = args.ref_dir / "yolo_nas_s_dyn.onnx"
    dynamic = ref_path.name.endswith("_dyn.onnx")
    ours_path = tmp / f"ours_b{b}.onnx"
    export_onnx(
        model, ours_path, nms="none", input_dtype="float", batch_size=b, dynamic_batch=dynamic
    )
    ours = _session(ours_path, threads)
    ref = _session(ref_path, threads) if ref_path.exists() else None
    feeds_ours = {ours.get_inputs()[0].name: batch_f}
    ours.run(None, feeds_ours)
    t_ours: list[float] = []
    t_ref: list[float] = []
    if ref is not None:
        feeds_ref = {ref.get_inputs()[0].name: batch_f}
        ref.run(None, feeds_ref)
    for _ in range(args.repeats):  # interleaved rounds: noise hits both alike
        t0 = time.perf_counter()
        ours.run(None, feeds_ours)
        t_ours.append((time.perf_counter() - t0) * 1e3)
        if ref is not None:
            t0 = time.perf_counter()
            ref.run(None, feeds_ref)
            t_ref.append((time.perf_counter() - t0) * 1e3)
    m_ours = statistics.median(t_ours) / b
    if ref is not None:
        m_ref = statistics.median(t_ref) / b
        rows.append(("ort graph (reference)", b, m_ref, ref_path.name))
        rows.append(("ort graph (edgestream)", b, m_ours, f"{m_ours / m_ref:.3f}x reference"))
    else:
        rows.append(("ort graph (edgestream)", b, m_ours, f"no {ref_path}"))

    ob = OnnxRuntimeBackend(ours_path, max_batch=b, intra_op_threads=threads)
    rows.append(
        ("onnxruntime backend", b, _median_ms(lambda: ob.infer(batch_u8), args.repeats) / b, "")
    )
    lb = _median_ms(lambda: letterbox_batch(images), args.repeats) / b
    rows.append(("letterbox 1920x1080", b, lb, ""))
    return rows


def _deterministic_s() -> torch.nn.Module:
    """YOLO-NAS S with the parity tests' name-derived weights (no checkpoint needed)."""
    from det_weights import deterministic_state_dict

    from stages.detect.nn.yolo_nas import yolo_nas_s

    model = yolo_nas_s(num_classes=80)
    sd = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    dtypes = {k: str(v.numpy().dtype) for k, v in sd.items()}
    weights = deterministic_state_dict(shapes, dtypes, variant="yolo_nas_s")
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref-dir", type=Path, default=Path("/tmp/ref_onnx"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="ORT/torch threads (0: all cores)")
    args = ap.parse_args()

    import os

    from synthetic_images import synthetic_rgb

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model = _deterministic_s()
    images = [synthetic_rgb(1080, 1920, tag=f"bench{i}") for i in range(max(args.batches))]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{threads} threads; torch {torch.__version__}"
    )

    rows: list[tuple[str, int, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in args.batches:
            rows += _bench_batch(b, model, images[:b], threads, args, Path(tmp))

    print(f"\n{'path':26} {'batch':>5} {'ms/image':>9}  note")
    for name, b, ms, note in rows:
        print(f"{name:26} {b:5d} {ms:9.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
