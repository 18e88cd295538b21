"""The GPU hot path, measured in one process per check (tests/bench/gpu_checks.sh runs them all).

    python3 tests/bench/bench_gpu_hotpath.py model       [--device cuda] [--batch 1 16 32]
    python3 tests/bench/bench_gpu_hotpath.py postprocess [--device cuda] [--batch 16 32]
    python3 tests/bench/bench_gpu_hotpath.py pipeline    [--device cuda] --cameras 16 --batch 16
    python3 tests/bench/bench_gpu_hotpath.py tensorrt    [--batch 16 32]
    python3 tests/bench/bench_gpu_hotpath.py letterbox   [--device cuda] [VIDEO]

Every check prints one human line per figure and one ``RESULT {json}`` line. The model is the
demo model (``stages/detect/models/demo.pth``, YOLO-NAS N at 416) unless ``--weights``; the
frames are synthetic 1080p street scenes (`stages.demo.scenes`, the demo model's own domain;
written once into ``--work``), so postprocess sees real detections.

- ``model``: the bare model (``TorchBackend.infer`` on a host batch: copy in, forward, NMS,
  copy out), frames/s and ms per batch at each ``--batch``: the ceiling.
- ``postprocess``: the model's real outputs for a batch, postprocessed per image (one host
  sync per image and NMS pass) and batched (`stages.detect.postprocess.postprocess_batched`),
  ms each (median of 20, synchronised), and whether the detections are the same.
- ``pipeline``: the whole process tree with ``--cameras`` live synthetic 1080p cameras (each
  a scene played in a loop at ``--scene-fps``, 25 by default), ``batching.max_batch``
  ``--batch``; published frames/s over a ``--seconds`` window, capture->publish p50/p95, the p50
  of each stage mark, drops, GPU utilisation and memory (pynvml, when it answers), and
  ``efficiency`` = published frames/s / the bare model's frames/s at that batch (measured before
  and after in the same run, averaged). Whether the cameras offer more than the model takes
  depends on the GPU: ``offered_fps`` is printed beside it; a higher ``--scene-fps`` offers more
  (a capacity run: the pipeline's own ceiling and which stage sets it).
- ``tensorrt``: when ``import tensorrt`` works, the demo model exported to ONNX (uint8 input,
  dynamic batch) and built into an FP16 engine (profile 1..max ``--batch``), its frames/s at
  each batch and its detections against the PyTorch model's; otherwise one line saying so.
- ``letterbox``: the device letterbox (`stages.detect.preprocess.letterbox_device`) against
  OpenCV's on a real clip: pixel difference, and detection agreement of the model on both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO)]
DEMO = REPO / "stages" / "detect" / "models" / "demo.pth"
VIDEO = REPO.parent / "shared" / "data" / "media" / "car-detection.mp4"


def result(check: str, **figures: Any) -> None:
    print("RESULT " + json.dumps({"check": check, **figures}, default=float), flush=True)


def scenes(args: argparse.Namespace, n: int = 4) -> list[Path]:
    from stages.demo.scenes import ensure_scenes

    t0 = time.perf_counter()
    w, h = (int(v) for v in args.scene_size.split("x"))
    fps = args.scene_fps
    paths = ensure_scenes(args.work, n, args.scene_seconds, size=(w, h), fps=fps)
    print(f"scenes: {n} x {args.scene_seconds:g} s of {w}x{h}@{fps:g} "
          f"({time.perf_counter() - t0:.0f} s to make or find)")  # fmt: skip
    return paths


def letterboxed(paths: list[Path], hw: tuple[int, int], n: int) -> np.ndarray:
    """(n, 3, H, W) uint8: frames of the scenes, letterboxed as preprocess does."""
    import av

    from stages.detect.preprocess import letterbox, resize_to_for

    out: list[np.ndarray] = []
    for path in paths:
        with av.open(str(path)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i % 10 == 0:
                    rgb = frame.to_ndarray(format="rgb24")
                    out.append(letterbox(rgb, None, hw, resize_to_for(hw))[0])
                if len(out) >= n:
                    return np.stack(out)
    while len(out) < n:
        out += out[: n - len(out)]
    return np.stack(out[:n])


def open_torch(weights: Path, device: str, max_batch: int) -> Any:
    from stages.detect.backends import open_backend

    return open_backend("torch", weights, device=device, max_batch=max_batch)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def bare_fps(backend: Any, batch: np.ndarray, seconds: float = 3.0) -> dict[str, float]:
    """Back-to-back ``infer`` on one host batch: frames/s and ms per batch (median)."""
    for _ in range(3):
        backend.infer(batch)
    times: list[float] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        backend.infer(batch)
        times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    return {"batch": len(batch), "ms_per_batch": ms, "fps": len(batch) * 1e3 / ms}


def cmd_model(args: argparse.Namespace) -> None:
    backend = open_torch(args.weights, args.device, max(args.batch))
    frames = letterboxed(scenes(args), backend.info.input_hw, max(args.batch))
    rows = []
    for b in args.batch:
        r = bare_fps(backend, frames[:b], args.seconds)
        rows.append(r)
        print(f"bare model {args.weights.name} on {args.device}, batch {b:3d}: "
              f"{r['fps']:8.1f} frames/s ({r['ms_per_batch']:.2f} ms per batch)")  # fmt: skip
    backend.close()
    result("model", weights=args.weights.name, device=args.device, rows=rows)


def cmd_postprocess(args: argparse.Namespace) -> None:
    import torch

    from stages.detect.postprocess import postprocess
    from stages.detect.types import NMSParams

    backend = open_torch(args.weights, args.device, max(args.batch))
    frames = letterboxed(scenes(args), backend.info.input_hw, max(args.batch))
    params = NMSParams()
    rows = []
    for b in args.batch:
        x = torch.from_numpy(frames[:b]).to(args.device)
        with torch.inference_mode():
            boxes, scores = backend._forward(x)  # the raw outputs infer() postprocesses
        timing: dict[str, float] = {}
        outs: dict[str, Any] = {}
        for name, batched in (("per_image", False), ("batched", True)):
            times = []
            for _ in range(20):
                sync(args.device)
                t0 = time.perf_counter()
                outs[name] = postprocess(boxes, scores, params, batched=batched)
                sync(args.device)
                times.append(time.perf_counter() - t0)
            timing[name] = 1e3 * statistics.median(times)
        same = all(
            np.array_equal(a.boxes, c.boxes)
            and np.array_equal(a.scores, c.scores)
            and np.array_equal(a.class_ids, c.class_ids)
            for a, c in zip(outs["batched"], outs["per_image"], strict=True)
        )
        dets = sum(len(d) for d in outs["batched"])
        rows.append({"batch": b, **{f"{k}_ms": v for k, v in timing.items()}, "same": same,
                     "detections": dets})  # fmt: skip
        print(f"postprocess on {args.device}, batch {b:3d} ({dets} detections): per image "
              f"{timing['per_image']:.2f} ms, batched {timing['batched']:.2f} ms "
              f"({timing['per_image'] / timing['batched']:.1f}x); same: {same}")  # fmt: skip
    backend.close()
    result("postprocess", device=args.device, rows=rows)


def cmd_pipeline(args: argparse.Namespace) -> None:
    from pipeline.config import PipelineConfig
    from pipeline.run import Pipeline
    from stages.bench.measure import (
        GpuSampler,
        ProcSampler,
        accounting,
        read_jsonl,
        window_stats,
    )
    from stages.bench.runs import live_config

    paths = scenes(args)
    (batch,) = args.batch[:1]
    backend = open_torch(args.weights, args.device, batch)
    frames = letterboxed(paths, backend.info.input_hw, batch)
    bare_before = bare_fps(backend, frames, 3.0)
    backend.close()
    out = Path(tempfile.mkdtemp(prefix="edgestream-gpu-pipeline-", dir=args.work))
    cameras = [
        {"id": f"cam{i:02d}", "url": str(paths[i % len(paths)]), "loop": True}
        for i in range(args.cameras)
    ]
    sinks = {"jsonl": {"path": str(out / "{camera}.jsonl"), "events": False}}
    cfg = PipelineConfig.model_validate(
        live_config(
            f"gpu{int(time.time()) % 100000}",
            cameras,
            sinks,
            summary_interval_s=5,
            model={"weights": str(args.weights), "backend": "torch", "device": args.device},
            batching={"max_batch": batch, "max_wait_ms": args.max_wait_ms},
            preprocess={"workers": args.preprocess_workers},
            decode={"processes": args.decode_processes},
        )
    )
    pipe = Pipeline(cfg).start()
    try:
        deadline = time.monotonic() + 180
        while not any(p.stat().st_size for p in out.glob("*.jsonl")):
            if time.monotonic() > deadline:
                raise RuntimeError("nothing published within 180 s")
            time.sleep(0.2)
        t0 = time.time() + 5.0
        time.sleep(max(0.0, t0 - time.time()))
        gpu = GpuSampler()
        procs = ProcSampler(lambda: pipe.stats()["pids"])
        gpu.start()
        procs.start()
        time.sleep(max(0.0, t0 + args.seconds - time.time()))
        cpu = procs.stop()
        gpu_fig = gpu.stop() or {}
        t1 = time.time()
    finally:
        code = pipe.stop()
    stats = pipe.stats()
    ws = window_stats(read_jsonl(out), [c["id"] for c in cameras], t0, t1)
    fps = ws["fps"]
    backend = open_torch(args.weights, args.device, batch)
    bare_after = bare_fps(backend, frames, 3.0)
    backend.close()
    bare = (bare_before["fps"] + bare_after["fps"]) / 2
    drops = accounting(stats["cameras"])["drops"]
    p50, p95 = (ws["latency_ms"][q] or float("nan") for q in ("p50", "p95"))
    stages_p50 = ws["stages_p50_ms"]
    fig = {
        "cameras": args.cameras,
        "batch": batch,
        "scene": f"{args.scene_size}@{args.scene_fps:g}",
        "decode_processes": cfg.decode_processes(),
        "offered_fps": args.cameras * args.scene_fps,
        "published_fps": fps,
        "bare_fps": bare,
        "efficiency": fps / bare,
        "p50_ms": p50,
        "p95_ms": p95,
        "stages_p50_ms": stages_p50,
        "mean_batch": stats["batches"].get("mean_size"),
        "drops": drops,
        "gpu_util_mean": gpu_fig.get("util_pct_mean"),
        "gpu_mem_mb_max": gpu_fig.get("mem_used_mb_max"),
        **cpu,
        "exit": code,
    }
    print(f"pipeline, {args.cameras} synthetic {args.scene_size} cameras "
          f"({fig['decode_processes']} decode process(es)) offering "
          f"{fig['offered_fps']:.0f} frames/s, max_batch {batch}: {fps:.1f} frames/s published "
          f"= {fig['efficiency']:.2f} x bare {bare:.1f} frames/s; capture->publish p50 "
          f"{p50:.0f} / p95 {p95:.0f} ms; mean batch {fig['mean_batch']}; exit {code}; "
          f"drops {drops}; GPU util {fig['gpu_util_mean']} %, "
          f"memory {fig['gpu_mem_mb_max']} MB")  # fmt: skip
    print(f"  where the time goes (p50 ms since capture, by stage mark): {stages_p50}")
    print(f"  CPU: {cpu.get('cpu_cores')} cores in all; by process: {cpu.get('cpu_by_role')}")
    result("pipeline", **fig)


def cmd_tensorrt(args: argparse.Namespace) -> None:
    try:
        import tensorrt as trt
    except ImportError as e:
        print(f"TensorRT: NOT RUN - tensorrt is not importable here ({e}); "
              "pip install edgestream[tensorrt] on the GPU machine to run this check")  # fmt: skip
        result("tensorrt", ran=False, reason=str(e))
        return
    from stages.detect.backends.tensorrt_backend import TensorRTBackend
    from stages.detect.engine_cache import build_engine
    from stages.detect.export import export_onnx
    from stages.detect.quantize import match_detections
    from stages.detect.weights import load_model

    model, info = load_model(args.weights)
    onnx = export_onnx(model.eval(), args.work / "demo_uint8_dyn.onnx", input_dtype="uint8",
                       dynamic_batch=True, input_hw=info.input_hw,
                       class_names=info.class_names or None)  # fmt: skip
    t0 = time.perf_counter()
    precision = "fp16"
    try:
        engine = build_engine(onnx, precision=precision, max_batch=max(args.batch),
                              cache_dir=args.work / "engines", progress=False)  # fmt: skip
    except Exception as e:  # TensorRT 11 needs ModelOpt for FP16 of a plain ONNX: say so
        print(f"TensorRT: FP16 build failed ({type(e).__name__}: {e}); building FP32")
        precision = "fp32"
        engine = build_engine(onnx, precision=precision, max_batch=max(args.batch),
                              cache_dir=args.work / "engines", progress=False)  # fmt: skip
    build_s = time.perf_counter() - t0
    print(f"TensorRT {trt.__version__}: {precision} engine built (or found) in {build_s:.0f} s: "
          f"{engine}")  # fmt: skip
    backend = TensorRTBackend(engine, max_batch=max(args.batch))
    torch_backend = open_torch(args.weights, "cuda", max(args.batch))
    frames = letterboxed(scenes(args), info.input_hw, max(args.batch))
    rows = []
    for b in args.batch:
        r = bare_fps(backend, frames[:b], args.seconds)
        a = backend.infer(frames[:b])
        ref = torch_backend.infer(frames[:b])
        n_ref = sum(len(d) for d in ref)
        matched = sum(len(match_detections(y, x, 0.9)) for x, y in zip(a, ref, strict=True))
        rows.append({**r, "detections": n_ref, "matched_iou_0.9": matched})
        print(f"TensorRT {precision} batch {b:3d}: {r['fps']:8.1f} frames/s "
              f"({r['ms_per_batch']:.2f} ms per batch); {matched} of {n_ref} PyTorch "
              "detections matched (same class, IoU >= 0.9)")  # fmt: skip
    backend.close()
    torch_backend.close()
    result("tensorrt", ran=True, version=trt.__version__, precision=precision, build_s=build_s,
           rows=rows)  # fmt: skip


def cmd_letterbox(args: argparse.Namespace) -> None:
    import av
    import torch

    from stages.detect.preprocess import letterbox, letterbox_device, resize_to_for
    from stages.detect.quantize import match_detections

    video = args.video
    if not video.is_file():  # a machine without the shared clips: a synthetic scene instead
        print(f"letterbox: {video} is not here; using a synthetic scene")
        video = scenes(args)[0]
    backend = open_torch(args.weights, args.device, 8)
    hw = backend.info.input_hw
    diffs: list[float] = []
    n_ref = n_match = n_got = 0
    cpu_ms: list[float] = []
    dev_ms: list[float] = []
    with av.open(str(video)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i % 3:
                continue
            rgb = frame.to_ndarray(format="rgb24")
            t0 = time.perf_counter()
            ref_img, _ = letterbox(rgb, None, hw, resize_to_for(hw))
            cpu_ms.append(1e3 * (time.perf_counter() - t0))
            src = torch.from_numpy(rgb).to(args.device)
            sync(args.device)
            t0 = time.perf_counter()
            dev_img, _ = letterbox_device(src, hw, resize_to_for(hw))
            sync(args.device)
            dev_ms.append(1e3 * (time.perf_counter() - t0))
            dev_np = dev_img.cpu().numpy()
            diffs.append(float(np.abs(dev_np.astype(np.int16) - ref_img.astype(np.int16)).mean()))
            a, b = backend.infer(np.stack([dev_np, ref_img]))
            n_ref += len(b)
            n_got += len(a)
            n_match += len(match_detections(b, a, 0.5))
    backend.close()
    fig = {
        "frames": len(diffs),
        "mean_abs_pixel_diff": statistics.mean(diffs),
        "detections_opencv": n_ref,
        "detections_device": n_got,
        "matched_iou_0.5": n_match,
        "agreement": n_match / max(1, max(n_ref, n_got)),
        "opencv_ms": statistics.median(cpu_ms),
        "device_ms": statistics.median(dev_ms),
    }
    print(f"letterbox on {args.device} vs OpenCV, {fig['frames']} frames of {video.name}: "
          f"mean |pixel diff| {fig['mean_abs_pixel_diff']:.2f}; detections {n_got} vs {n_ref}, "
          f"{n_match} matched (same class, IoU >= 0.5): agreement {fig['agreement']:.3f}; "
          f"{fig['device_ms']:.2f} ms (device), {fig['opencv_ms']:.2f} ms (OpenCV)")  # fmt: skip
    result("letterbox", device=args.device, **fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=["model", "postprocess", "pipeline", "tensorrt", "letterbox"])
    ap.add_argument("video", nargs="?", type=Path, default=VIDEO)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--weights", type=Path, default=DEMO)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16, 32])
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--preprocess-workers", type=int, default=8)
    ap.add_argument("--decode-processes", default="auto", help="decode.processes (auto, 1..16)",
                    type=lambda v: v if v == "auto" else int(v))  # fmt: skip
    ap.add_argument("--scene-size", default="1920x1080", help="synthetic cameras' WxH")
    ap.add_argument("--scene-seconds", type=float, default=8.0)
    ap.add_argument("--scene-fps", type=float, default=25.0, help="synthetic cameras' frames/s")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgestream-gpu")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    {
        "model": cmd_model,
        "postprocess": cmd_postprocess,
        "pipeline": cmd_pipeline,
        "tensorrt": cmd_tensorrt,
        "letterbox": cmd_letterbox,
    }[args.check](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
