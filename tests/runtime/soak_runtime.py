"""Soak the live pipeline: RSS of the whole process tree, fps and latency over time.

    python3 tests/runtime/soak_runtime.py --minutes 10 --cameras 2 [--weights tiny.onnx]

Cameras are a looping file paced at its own frame rate (a stand-in for RTSP). Without
``--weights`` a tiny random ONNX detector is exported to a temporary folder (the point is the
runtime, not the model). Drives the pipeline through `pipeline.run.Pipeline`, the programmatic
API: ``with Pipeline(cfg) as p: p.stats()``. Prints one line per sample and the peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "detect")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument(
        "--video", type=Path, default=REPO.parent / "shared/data/media/car-detection.mp4"
    )
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--sample-s", type=float, default=30.0)
    args = ap.parse_args()

    import os

    from conftest import rss_mb  # this folder's shared helpers (the script runs from here)

    from pipeline.config import validate_config
    from pipeline.logs import setup_logging
    from pipeline.run import Pipeline

    setup_logging("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="edgestream-soak-"))
    weights = args.weights
    if weights is None:
        from tiny_detector import TinyDetector

        from stages.detect.export import export_onnx

        weights = export_onnx(TinyDetector(), tmp / "tiny.onnx", batch_size=1)
    cfg = validate_config({
        "name": "soak",
        "camera_defaults": {"loop": True},
        "cameras": [{"id": f"cam{i}", "url": str(args.video)} for i in range(args.cameras)],
        "model": {"weights": str(weights), "device": "cpu", "threads": 1, "max_detections": 20},
        "sinks": {"jsonl": {"path": str(tmp / "{camera}.jsonl"), "events": False}},
        "metrics": {"port": 0},
        "logging": {"summary_interval_s": 0},
    })  # fmt: skip
    peak = 0.0
    start = time.monotonic()
    with Pipeline(cfg) as p:
        print(f"{'t_s':>6} {'rss_mb':>8} {'fps':>6} {'published':>9} {'dropped':>8} "
              f"{'p50_ms':>7} {'p99_ms':>7} restarts")  # fmt: skip
        while time.monotonic() - start < args.minutes * 60:
            time.sleep(args.sample_s)
            st = p.stats()
            pids = [os.getpid(), *st["pids"].values()]
            rss = rss_mb(pids)
            peak = max(peak, rss)
            cams = st["cameras"].values()
            p50 = max((c["latency_p50_ms"] or 0 for c in cams), default=0)
            p99 = max((c["latency_p99_ms"] or 0 for c in cams), default=0)
            print(f"{time.monotonic() - start:6.0f} {rss:8.0f} {sum(c['fps'] for c in cams):6.1f} "
                  f"{sum(c['published'] for c in cams):9d} "
                  f"{sum(c['dropped_total'] for c in cams):8d} {p50:7.0f} {p99:7.0f} "
                  f"{sum(st['restarts'].values())}", flush=True)  # fmt: skip
    print(f"peak RSS of the process tree: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
