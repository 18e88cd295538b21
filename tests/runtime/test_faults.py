"""Faults on a live pipeline (a looping file paced at its frame rate stands in for a camera):
SIGKILL of a stage → restarted, output resumes (real Redis); SIGTERM → exit 0 within 10 s
with no process or shared-memory segment left; a slow sink → frames dropped and counted,
memory and latency bounded."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    REPO,
    VIDEO,
    alive,
    children_of,
    pipeline_config,
    read_jsonl,
    start_run,
    write_config,
)

sys.path.insert(0, str(REPO / "tests" / "sinks"))
from redis_server import REDIS_SERVER, RedisServer

SHM = Path(os.environ.get("EDGESTREAM_SHM_DIR", "/dev/shm"))


def live_config(tmp: Path, model: Path, video: str, n: int = 2, **over: Any) -> dict[str, Any]:
    cams = {f"live{i}": video for i in range(n)}
    cfg = pipeline_config(tmp, model, cams, realtime=True, camera_defaults={"loop": True}, **over)
    cfg["sinks"]["jsonl"]["flush_each_line"] = True
    return cfg


def wait_for(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def stage_pids(log: Path) -> dict[str, int]:
    text = log.read_text()
    m = re.findall(r"pipeline \S+ started: (.*)", text)
    pids = dict((k, int(v)) for k, v in (kv.split("=") for kv in m[-1].split(", "))) if m else {}
    for key, pid in re.findall(r"(\S+) restarted \(pid (\d+)", text):
        pids[key] = int(pid)
    return pids


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def segments(name: str) -> list[str]:
    return sorted(p.name for p in SHM.glob(f"edgestream-{name}-*"))


@pytest.mark.redis
@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")
def test_sigkill_stage_restarts_and_output_resumes(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    import redis

    server = RedisServer(tmp_path / "redis").start()
    try:
        cfg = live_config(tmp_path, tiny_onnx, str(shared_data / "media" / VIDEO), n=1)
        cfg["sinks"]["redis"] = {"url": server.url}
        log = tmp_path / "run.log"
        proc = start_run(write_config(tmp_path, cfg), log)
        reap.append(proc)
        r = redis.Redis.from_url(server.url)
        key = "edgestream:live0:detections"
        wait_for(lambda: r.xlen(key) > 5, 90, "first detections in Redis")
        victim = stage_pids(log)["detect"]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: not alive(victim), 5, "the killed stage to be gone")
        wait_for(lambda: stage_pids(log).get("detect") not in (None, victim), 10, "a restart")
        before = r.xlen(key)
        wait_for(lambda: r.xlen(key) > before + 3, 10 - (time.monotonic() - killed_at) + 5,
                 "detections after the restart")  # fmt: skip
        resumed_s = time.monotonic() - killed_at
        print(f"output resumed {resumed_s:.1f} s after SIGKILL of detect")
        assert proc.poll() is None, "the supervisor must survive a stage crash"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        server.stop()


def test_sigterm_exits_zero_no_leftovers(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    cfg = live_config(tmp_path, tiny_onnx, str(shared_data / "media" / VIDEO))
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    out = tmp_path / "out" / "live0.jsonl"
    wait_for(lambda: len(read_jsonl(out)) > 3, 90, "published frames")
    tree = children_of(proc.pid)
    assert len(tree) >= 6, tree  # decode, 2 preprocess, detect, track, sink
    assert segments(cfg["name"]), "live frames travel through shared memory"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=12)
    print(f"SIGTERM → exit {rc} in {time.monotonic() - t0:.1f} s")
    assert rc == 0, log.read_text()[-3000:]
    # multiprocessing's resource tracker leaves when it sees the supervisor's pipe close
    left = [p for p in tree if alive(p)]
    cmdlines = {p: Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ") for p in left}
    wait_for(lambda: not any(alive(p) for p in tree), 3, f"leftover processes {cmdlines}")
    assert segments(cfg["name"]) == []
    assert not any(p.name.startswith(f"edgestream-{cfg['name']}-") for p in Path("/tmp").iterdir())


@pytest.mark.slow
def test_slow_sink_drops_frames_memory_and_latency_bounded(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    """The jsonl sink writes into a FIFO that this test drains slowly: the sink stage blocks on
    every write, like a sink on a slow disk or network."""
    cfg = live_config(tmp_path, tiny_onnx, str(shared_data / "media" / VIDEO), n=2,
                      batching={"max_frame_age_ms": 500})  # fmt: skip
    fifo_dir = tmp_path / "out"
    fifo_dir.mkdir()
    for cam in ("live0", "live1"):
        os.mkfifo(fifo_dir / f"{cam}.jsonl")
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    lines: list[bytes] = []
    fast = threading.Event()  # set at shutdown: drain what is left, do not break the pipe

    def slow_reader(path: Path) -> None:  # ~2 frames/s per camera
        with path.open("rb") as f:
            for line in f:
                lines.append(line)
                if not fast.is_set():
                    time.sleep(0.5)

    readers = [threading.Thread(target=slow_reader, args=(fifo_dir / f"live{i}.jsonl",),
                                daemon=True) for i in range(2)]  # fmt: skip
    for t in readers:
        t.start()
    wait_for(lambda: len(lines) > 4, 90, "published frames")
    time.sleep(3)
    tree = [proc.pid, *children_of(proc.pid)]
    rss_early = rss_mb(tree)
    n_early = len(lines)
    time.sleep(12)
    rss_late = rss_mb(tree)
    import json

    late = [json.loads(x) for x in lines[n_early:]]
    late_latency_s = [d["latency_ms"]["publish"] / 1e3 for d in late if d["type"] == "detections"]
    proc.send_signal(signal.SIGTERM)
    fast.set()
    rc = proc.wait(timeout=15)
    text = log.read_text()
    summary = [x for x in text.splitlines() if "summary:" in x][-1]
    print(summary)
    print(f"RSS {rss_early:.0f} → {rss_late:.0f} MB; late latency max "
          f"{max(late_latency_s, default=0):.2f} s over {len(late_latency_s)} frames")  # fmt: skip
    assert rc == 0
    assert "Broken pipe" not in text
    dropped = int(re.search(r"dropped (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert dropped > 0, summary
    assert rss_late - rss_early < 100, "memory grows with a slow sink"
    assert late_latency_s, "nothing published late in the run"
    # frames older than 2 x max_frame_age_ms are dropped before the sink; one blocked write
    # (the reader's 0.5 s) may add to it
    assert max(late_latency_s) < 2 * 0.5 + 2.0, late_latency_s


def test_bad_weights_is_fatal_not_restarted(
    tmp_path: Path, shared_data: Path, tiny_onnx: Path, reap: list[Any]
) -> None:
    """A weights file the backend cannot open fails the same way on every restart: the run
    exits non-zero with the reason, and a stale segment of a dead run is cleaned at start."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    cfg = pipeline_config(tmp_path, bad, {"c": str(shared_data / "media" / VIDEO)})
    stale = SHM / f"edgestream-{cfg['name']}-999999999-frames.c.1"  # pid that cannot exist
    stale.write_bytes(b"\0" * 64)
    os.utime(stale, (time.time() - 60, time.time() - 60))
    log = tmp_path / "run.log"
    proc = start_run(write_config(tmp_path, cfg), log)
    reap.append(proc)
    rc = proc.wait(timeout=90)
    text = log.read_text()
    assert rc == 2, text[-3000:]
    assert "bad.onnx" in text and "configuration error" in text
    assert "restarted" not in text
    assert not stale.exists()
    assert segments(cfg["name"]) == []
