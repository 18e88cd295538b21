"""Whole-pipeline throughput: N cameras through ``edgestream run`` offline, every frame.

    python3 tests/bench/bench_pipeline.py VIDEO [VIDEO ...] [--cameras 8] [--device cuda]
        [--weights stages/detect/models/demo.pth] [--max-batch 16] [--preprocess-workers 4]

Each camera plays one of the VIDEOs (cycled) with ``realtime: false`` (nothing dropped, decode
as fast as the pipeline takes frames), through decode → preprocess → detect → track → the JSON
lines sink, in the real process tree. What it prints comes from the published lines, not from
the stages' own counters:

- frames published per camera against the frames in its video (offline mode loses nothing);
- steady throughput: frames published per second between the first 10 % and the last line
  (so model load and process start-up are not counted), and the wall time of the whole run;
- the time frames spend between stages in that window (median, from the ``latency_ms`` each
  line carries), queueing included: offline, frames wait for the stage after them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def frames_in(video: Path) -> int:
    import av

    with av.open(str(video)) as c:
        return sum(1 for _ in c.decode(video=0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--weights", type=Path, default=REPO / "stages/detect/models/demo.pth")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--max-wait-ms", type=float, default=10.0)
    ap.add_argument("--preprocess-workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    counts = {str(v.resolve()): frames_in(v) for v in args.videos}
    work = Path(tempfile.mkdtemp(prefix="edgestream-bench-pipeline-"))
    cams = [
        {"id": f"cam{i:02d}", "url": str(args.videos[i % len(args.videos)].resolve())}
        for i in range(args.cameras)
    ]
    config = {
        "version": 1,
        "name": f"bench-{os.getpid()}",
        "realtime": False,
        "cameras": cams,
        "model": {
            "weights": str(args.weights.resolve()),
            "backend": args.backend,
            "device": args.device,
            "half": args.half,
        },
        "batching": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
        "preprocess": {"workers": args.preprocess_workers},
        "sinks": {"jsonl": {"path": str(work / "{camera}.jsonl"), "events": False}},
        "metrics": {"port": 0},
    }
    cfg = work / "bench.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "-c", str(cfg)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        print(f"edgestream run failed with rc {proc.returncode}")
        return 1

    published: list[float] = []
    stage_lat: dict[str, list[tuple[float, float]]] = {}
    short = []
    for cam in cams:
        lines = (work / f"{cam['id']}.jsonl").read_text().splitlines()
        want = counts[cam["url"]]
        if len(lines) != want:
            short.append(f"{cam['id']}: {len(lines)} of {want}")
        for line in lines:
            doc = json.loads(line)
            published.append(doc["publish_ts"])
            for stage, ms in doc.get("latency_ms", {}).items():
                stage_lat.setdefault(stage, []).append((doc["publish_ts"], ms))
    published.sort()
    start = published[len(published) // 10]
    steady = [t for t in published if t >= start]
    rate = (len(steady) - 1) / max(1e-9, steady[-1] - steady[0])

    dev = args.device
    if dev.startswith("cuda"):
        import torch

        dev = f"{dev} ({torch.cuda.get_device_name()})"
    print(
        f"{args.cameras} cameras, {args.weights.name} on {args.backend}/{dev}"
        f"{' fp16' if args.half else ''}, max_batch {args.max_batch}, "
        f"{args.preprocess_workers} preprocess workers, {os.cpu_count()} CPUs"
    )
    print(f"frames published: {len(published)} of {sum(counts[c['url']] for c in cams)}"
          f"{' — SHORT: ' + ', '.join(short) if short else ' (all)'}")  # fmt: skip
    print(f"steady throughput: {rate:.1f} frames/s ({rate / args.cameras:.1f} per camera); "
          f"whole run {wall:.1f} s wall including start-up")  # fmt: skip
    logs = (proc.stdout + proc.stderr).splitlines()
    summary = [line for line in logs if "edgestream.run: summary" in line]
    if summary:  # the pipeline's own: mean batch size shows whether detect was the bottleneck
        print("  pipeline says:", summary[-1].split("summary: ", 1)[1])
    for line in logs:  # the detect stage's word on the pinned slabs (CUDA only)
        if "direct GPU copies" in line:
            print("  detect:", line.split(": ", 1)[-1])
    # offline, capture times are the file's clock: only the time between stages means anything
    stages = list(stage_lat)
    for prev, stage in itertools.pairwise(stages):
        pairs = zip(stage_lat[prev], stage_lat[stage], strict=True)
        gaps = [b - a for (ts, a), (_, b) in pairs if ts >= start]
        if gaps:
            print(f"  {prev} -> {stage}: median {statistics.median(gaps):8.1f} ms")
    return 0 if not short else 1


if __name__ == "__main__":
    raise SystemExit(main())
