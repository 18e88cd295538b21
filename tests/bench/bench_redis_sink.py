"""Redis sink throughput, publish latency and CPU at 1, 8 and 32 cameras x 30 fps.

    python3 tests/bench/bench_redis_sink.py [--seconds 5] [--url redis://...]

Without ``--url`` it starts its own ``redis-server`` on a free port (``tests/sinks/redis_server``).
Each frame carries 20 tracked objects (~3 KB of JSON). The producer paces frames at 30 fps per
camera and calls ``RedisSink.process()`` as the runtime would; a consumer in another process
(so it does not share the GIL) reads the streams with ``XREAD BLOCK`` and stamps arrivals.

- messages/s: detections messages visible in Redis per second of the run.
- publish latency: ``process()`` called -> entry visible to the consumer (both wall clock, same
  host), p50 / p99 / max. It includes the flush interval (default 10 ms).
- sink CPU: the thread CPU time spent inside ``process()`` (encoding) plus the flusher thread's,
  as a share of one core: "keeps up" = under one core, nothing dropped, nothing left buffered.

A last unpaced run pushes 32 cameras' frames as fast as ``process()`` takes them, to show the
ceiling of one sink on this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "sinks")]

import redis  # noqa: E402

from pipeline.payloads import FrameResult, TrackedObject  # noqa: E402
from stages.sinks.redis import RedisSink, RedisSinkConfig  # noqa: E402

FPS = 30
OBJECTS = 20
CLASSES = ("person", "car", "truck", "bicycle", "dog")


def frames_for(camera: str, n: int, t0: float) -> list[FrameResult]:
    out = []
    for i in range(n):
        objects = [
            TrackedObject(
                track_id=1000 + k,
                class_id=k % len(CLASSES),
                class_name=CLASSES[k % len(CLASSES)],
                score=0.3 + 0.03 * k,
                box=(13.7 * k + 0.25 * i, 200.5 + k, 13.7 * k + 80.125, 380.75 + k),
            )
            for k in range(OBJECTS)
        ]
        ts = t0 + i / FPS
        stage_ts = {"decode": ts + 0.004, "detect": ts + 0.031, "track": ts + 0.033}
        out.append(FrameResult(camera, i, ts, 1920, 1080, objects, stage_ts))
    return out


def consume(url: str, keys: list[str], expected: int, timeout_s: float, conn: Any) -> None:
    """Child process: XREAD every key from the start; send back {(key, frame_id): arrival}."""
    client = redis.Redis.from_url(url)
    cursors: Any = dict.fromkeys(keys, "0-0")
    arrivals: dict[tuple[str, int], float] = {}
    conn.send("ready")
    deadline = time.time() + timeout_s
    while len(arrivals) < expected and time.time() < deadline:
        for key, entries in client.xread(cursors, count=2000, block=200) or ():
            now = time.time()
            k = key.decode()
            for entry_id, _ in entries:
                arrivals[(k, int(entry_id.split(b"-")[1]))] = now
            cursors[k] = entries[-1][0]
    conn.send(arrivals)


def run(url: str, cameras: int, seconds: float, paced: bool, prefix: str) -> dict[str, Any]:
    n = int(seconds * FPS)
    t0 = time.time()
    cams = [f"cam{c:02d}" for c in range(cameras)]
    frames = {cam: frames_for(cam, n, t0) for cam in cams}
    cfg = RedisSinkConfig(url=url, key_template=prefix + ":{camera}:detections")
    keys = [cfg.stream_key(c) for c in cams]
    parent, child = mp.Pipe()
    consumer = mp.Process(target=consume, args=(url, keys, n * cameras, seconds + 60, child))
    consumer.start()
    assert parent.recv() == "ready"
    sink = RedisSink(cfg)
    sink.setup()
    enqueued: dict[tuple[str, int], float] = {}
    encode_cpu = 0.0
    start = time.time()
    for i in range(n):
        if paced:
            time.sleep(max(0.0, start + i / FPS - time.time()))
        for cam, key in zip(cams, keys, strict=True):
            c0 = time.thread_time()
            enqueued[(key, i)] = time.time()
            sink.process(frames[cam][i])
            encode_cpu += time.thread_time() - c0
    sink.wait_idle(60)
    arrivals: dict[tuple[str, int], float] = parent.recv()
    consumer.join(10)
    sink.close()
    stats = sink.stats()
    wall = max(arrivals.values()) - start if arrivals else float("nan")
    lat_ms = sorted((arrivals[k] - enqueued[k]) * 1e3 for k in arrivals)
    cpu = encode_cpu + stats["flusher_cpu_s"]
    return {
        "cameras": cameras,
        "mode": f"{FPS} fps" if paced else "max",
        "messages": len(arrivals),
        "expected": n * cameras,
        "msg_s": len(arrivals) / wall,
        "p50_ms": statistics.median(lat_ms),
        "p99_ms": lat_ms[int(0.99 * (len(lat_ms) - 1))],
        "max_ms": lat_ms[-1],
        "encode_us": encode_cpu / (n * cameras) * 1e6,
        "flusher_us": stats["flusher_cpu_s"] / (n * cameras) * 1e6,
        "cpu_core": cpu / wall,
        "dropped": stats["dropped_total"],
        "flushes": stats["flushes"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="paced run length per point")
    ap.add_argument("--url", default=None, help="an existing Redis (default: start one)")
    args = ap.parse_args()
    server = None
    url = args.url
    if url is None:
        from redis_server import RedisServer

        server = RedisServer(Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
        url = server.url
    try:
        results = [run(url, c, args.seconds, True, f"bench{c}") for c in (1, 8, 32)]
        results.append(run(url, 32, args.seconds, False, "benchmax"))
    finally:
        if server is not None:
            server.stop()
    print(
        f"{'cameras':>7} {'mode':>7} {'msgs':>6} {'msg/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'enc us':>7} {'flush us':>8} {'CPU core':>8} {'dropped':>7}  keeps up"
    )
    for r in results:
        ok = r["messages"] == r["expected"] and r["dropped"] == 0 and r["cpu_core"] < 1.0
        print(
            f"{r['cameras']:>7} {r['mode']:>7} {r['messages']:>6} {r['msg_s']:>8.0f} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {r['encode_us']:>7.0f} "
            f"{r['flusher_us']:>8.0f} {r['cpu_core']:>8.1%} {r['dropped']:>7}  "
            + ("yes" if ok else "NO")
            * (r["mode"] != "max")
        )
    ref_us = min(timeit.repeat("sum(range(1000))", number=2000, repeat=3)) / 2000 * 1e6
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load}; reference sum(range(1000)) = "
        f"{ref_us:.1f} us (~8 us on an idle modern core: scale CPU figures by that ratio)"
    )
    per_msg_us = results[-1]["encode_us"] + results[-1]["flusher_us"]
    print(
        f"one core at {per_msg_us:.0f} us/message of sink CPU ~ {1e6 / per_msg_us:.0f} msg/s "
        f"~ {1e6 / per_msg_us / FPS:.0f} cameras at {FPS} fps ({OBJECTS} objects per frame)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
