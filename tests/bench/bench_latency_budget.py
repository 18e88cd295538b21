"""Where a frame's time goes at light load: the per-stage timestamps every message carries,
as p50 / p95 per segment, and the pipeline's own share.

    python3 tests/bench/bench_latency_budget.py [VIDEO] [--cameras 1] [--detect-fps 5]
        [--seconds 30] [--weights stages/detect/models/demo.onnx] [--threads 2] [--redis]
        [--json OUT]

The real process tree (``pipeline.run.Pipeline``): ``--cameras`` live cameras, each the VIDEO
played in a loop at its own frame rate (``realtime: true``) and sampled at ``--detect-fps``,
the model on ONNX Runtime (CPU), published to the JSON lines sink (default) or to a real Redis
started for the run (``--redis``, XADD as in production; the lines are read back with XRANGE).
Over the steady window (first published frame + 5 s, for ``--seconds``) every published
detections message gives its ``latency_ms`` (ms from capture to the end of each stage), cut
into segments:

    decode            capture -> decode          demux + decode (+ the file's pacing)
    hop+letterbox     decode -> preprocess       frames edge, shm read, letterbox
    hop to detect     preprocess -> detect_in    items edge
    batching wait     detect_in -> detect_batch  waiting for the batch to leave
    gather            detect_batch -> detect_gather
    model             detect_gather -> detect_infer   the backend call: forward pass + NMS
    map+message       detect_infer -> detect     boxes to source pixels, message built
    hop+track         detect -> track            detections edge, tracking
    hop+publish       track -> publish           tracked edge, serialisation, publish

``own`` is the pipeline's own share: capture -> publish minus decode minus model (with a
version whose messages lack the detect marks, minus the bare model's ms per image measured in
the same run instead: ``own_vs_bare``, printed for every version so before/after compare).
The bare model (one image at a time, ``OnnxRuntimeBackend.infer``) is measured before and
after the run. Timings on a shared machine are noisy: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_VIDEO = REPO.parent / "shared" / "data" / "media" / "car-detection.mp4"
DEFAULT_WEIGHTS = REPO / "stages" / "detect" / "models" / "demo.onnx"

SEGMENTS: list[tuple[str, str, str]] = [
    ("decode", "capture", "decode"),
    ("hop+letterbox", "decode", "preprocess"),
    ("hop to detect", "preprocess", "detect_in"),
    ("batching wait", "detect_in", "detect_batch"),
    ("gather", "detect_batch", "detect_gather"),
    ("model", "detect_gather", "detect_infer"),
    ("map+message", "detect_infer", "detect"),
    ("hop+track", "detect", "track"),
    ("hop+publish", "track", "publish"),
]


def segments_of(latency_ms: dict[str, float]) -> dict[str, float]:
    """Segment -> ms for one message; a stamp a version lacks merges its segment into the
    next one it has (named ``A..B``)."""
    stamps = {"capture": 0.0, **latency_ms}
    out: dict[str, float] = {}
    start, name = "capture", ""
    for seg, _a, b in SEGMENTS:
        name = seg if not name else f"{name}..{seg}"
        if b in stamps:
            out[name] = stamps[b] - stamps[start]
            start, name = b, ""
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else float("nan")


def breakdown(docs: list[dict[str, Any]], bare_ms: float) -> dict[str, Any]:
    per: dict[str, list[float]] = {}
    own: list[float] = []
    own_vs_bare: list[float] = []
    e2e: list[float] = []
    for d in docs:
        lat = d["latency_ms"]
        seg = segments_of(lat)
        for k, v in seg.items():
            per.setdefault(k, []).append(v)
        total = lat["publish"]
        e2e.append(total)
        decode = lat.get("decode", 0.0)
        own_vs_bare.append(total - decode - bare_ms)
        if "model" in seg:
            own.append(total - decode - seg["model"])
    table = {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in per.items()}
    return {
        "segments_ms": table,
        "e2e_ms": {"p50": pct(e2e, 50), "p95": pct(e2e, 95)},
        "own_ms": {"p50": pct(own, 50), "p95": pct(own, 95)} if own else None,
        "own_vs_bare_ms": {"p50": pct(own_vs_bare, 50), "p95": pct(own_vs_bare, 95)},
    }


def bare_model(path: Path, threads: int, video: Path, n: int = 30) -> float:
    """Median ms per image of the model alone (ONNX Runtime, one letterboxed frame of
    ``video`` at a time, postprocess included, as the detect stage calls it)."""
    import statistics

    from stages.detect.backends.onnxruntime_backend import OnnxRuntimeBackend
    from stages.detect.preprocess import letterbox, resize_to_for
    from stages.detect.sources import iter_frames

    with OnnxRuntimeBackend(path, intra_op_threads=threads, max_batch=1) as backend:
        hw = backend.info.input_hw
        frames = []
        for frame in iter_frames(video):
            frames.append(letterbox(frame.rgb, None, hw, resize_to_for(hw))[0][None])
            if len(frames) == 8:
                break
        for x in frames[:3]:  # warm-up
            backend.infer(x)
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            backend.infer(frames[i % len(frames)])
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def read_redis(url: str, cameras: int) -> list[dict[str, Any]]:
    import redis

    from stages.sinks.redis.config import DEFAULT_KEY_TEMPLATE

    r = redis.Redis.from_url(url)
    out = []
    for i in range(cameras):
        for _id, fields in r.xrange(DEFAULT_KEY_TEMPLATE.format(camera=f"cam{i}")):
            out.append(json.loads(fields[b"data"]))
    return out


def run(video: Path, weights: Path, cameras: int, detect_fps: float, seconds: float,
        threads: int, work: Path, redis_url: str | None,
        redis_options: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    from pipeline.config import PipelineConfig
    from pipeline.run import Pipeline
    from stages.bench.runs import live_config

    out = work / "out"
    sinks: dict[str, Any] = {"jsonl": {"path": str(out / "{camera}.jsonl"),
                                       "flush_each_line": True}}  # fmt: skip
    if redis_url is not None:
        sinks = {"redis": {"url": redis_url, **redis_options}}
    cameras_ = [{"id": f"cam{i}", "url": str(video), "loop": True} for i in range(cameras)]
    model = {"weights": str(weights), "backend": "onnxruntime", "device": "cpu", "threads": threads}
    cfg = PipelineConfig.model_validate(
        live_config(
            f"budget{int(time.time()) % 100000}",
            cameras_,
            sinks,
            detect_fps,
            summary_interval_s=10,
            model=model,
        )
    )
    pipe = Pipeline(cfg).start()
    try:
        deadline = time.monotonic() + 300
        while True:
            if time.monotonic() > deadline:
                raise RuntimeError("nothing published within 300 s")
            if pipe.stats()["cameras"] and any(
                c.get("published", 0) for c in pipe.stats()["cameras"].values()
            ):
                break
            time.sleep(0.2)
        t0 = time.time() + 5.0
        time.sleep(max(0.0, t0 + seconds - time.time()))
        t1 = time.time()
    finally:
        code = pipe.stop()
    stats = pipe.stats()
    if redis_url is not None:
        docs = read_redis(redis_url, cameras)
    else:
        lines = [x for p in sorted(out.glob("*.jsonl")) for x in p.read_text().split("\n")]
        docs = [json.loads(x) for x in lines if x.strip()]
    window = [d for d in docs if d.get("type", "detections") == "detections"
              and "latency_ms" in d and t0 <= d["publish_ts"] < t1]  # fmt: skip
    drops: dict[str, int] = {}
    for c in stats["cameras"].values():
        for reason, k in c["dropped"].items():
            drops[reason] = drops.get(reason, 0) + k
    return {
        "exit": code,
        "window_s": t1 - t0,
        "docs": window,
        "fps": len(window) / (t1 - t0),
        "fps_per_camera": len(window) / (t1 - t0) / cameras,
        "mean_batch": stats["batches"].get("mean_size"),
        "drops": drops,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video", nargs="?", type=Path, default=DEFAULT_VIDEO)
    ap.add_argument("--cameras", type=int, default=1)
    ap.add_argument("--detect-fps", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--redis", action="store_true", help="publish to a local redis-server")
    ap.add_argument("--redis-flush-ms", type=float, default=None,
                    help="sinks.redis.flush_interval_ms (default: the sink's)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    bare_before = bare_model(args.weights, args.threads, args.video)
    flush = {} if args.redis_flush_ms is None else {"flush_interval_ms": args.redis_flush_ms}
    with tempfile.TemporaryDirectory(prefix="edgestream-budget-") as tmp:
        server = None
        if args.redis:
            sys.path.insert(0, str(REPO / "tests" / "sinks"))
            from redis_server import RedisServer

            server = RedisServer(Path(tmp) / "redis").start()
        try:
            r = run(args.video, args.weights, args.cameras, args.detect_fps, args.seconds,
                    args.threads, Path(tmp), server.url if server else None,
                    flush)  # fmt: skip
        finally:
            if server is not None:
                server.stop()
    bare_after = bare_model(args.weights, args.threads, args.video)
    bare_ms = (bare_before + bare_after) / 2
    figures = {
        "cameras": args.cameras,
        "detect_fps": args.detect_fps,
        "sink": "redis" if args.redis else "jsonl",
        "bare_model_ms": {"before": bare_before, "after": bare_after},
        "published_fps": r["fps"],
        "published_fps_per_camera": r["fps_per_camera"],
        "mean_batch": r["mean_batch"],
        "drops": r["drops"],
        "exit": r["exit"],
        "frames": len(r["docs"]),
        **breakdown(r["docs"], bare_ms),
    }
    print(f"{args.cameras} camera(s) at {args.detect_fps:g} frames/s, {figures['sink']} sink, "
          f"{len(r['docs'])} frames in {r['window_s']:.0f} s: {r['fps']:.1f} frames/s "
          f"({r['fps_per_camera']:.2f} per camera), mean batch {r['mean_batch']}, "
          f"bare model {bare_ms:.1f} ms/image, drops {r['drops'] or 'none'}")  # fmt: skip
    print(f"{'segment':<36} {'p50 ms':>8} {'p95 ms':>8}")
    for k, v in figures["segments_ms"].items():
        print(f"{k:<36} {v['p50']:8.1f} {v['p95']:8.1f}")
    rows = [("capture -> publish", figures["e2e_ms"])]
    if figures["own_ms"] is not None:
        rows.append(("own (minus decode, model)", figures["own_ms"]))
    rows.append(("own (minus decode, bare model)", figures["own_vs_bare_ms"]))
    for name, v in rows:
        print(f"{name:<36} {v['p50']:8.1f} {v['p95']:8.1f}")
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if r["exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
