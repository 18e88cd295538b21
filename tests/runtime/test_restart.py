"""A stage process killed with SIGKILL is restarted by the supervisor and the output resumes
(a looping file paced at its frame rate stands in for a live camera; results in a real Redis)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    PIPELINE_TIMEOUT_S,
    RESUME_S,
    STARTUP_S,
    VIDEO,
    alive,
    live_config,
    stage_pids,
    start_run,
    wait_for,
    write_config,
)
from redis_server import REDIS_SERVER, RedisServer


@pytest.mark.redis
@pytest.mark.timeout(PIPELINE_TIMEOUT_S)
def test_sigkill_stage_restarts_and_output_resumes(
    tmp_path: Path,
    require: Callable[[str | None], None],
    shared_data: Path,
    tiny_onnx: Path,
    reap: list[Any],
) -> None:
    require(None if REDIS_SERVER else "redis-server not installed (apt-get install redis-server)")
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
        wait_for(lambda: r.xlen(key) > 5, STARTUP_S, "first detections in Redis")
        victim = stage_pids(log)["detect"]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_for(lambda: not alive(victim), 5, "the killed stage to be gone")
        wait_for(lambda: stage_pids(log).get("detect") not in (None, victim), 15, "a restart")
        before = r.xlen(key)
        # bounded, not timed: the figure is printed (a busy CPU slows the restart's imports)
        wait_for(lambda: r.xlen(key) > before + 3, RESUME_S, "detections after the restart")
        resumed_s = time.monotonic() - killed_at
        print(f"output resumed {resumed_s:.1f} s after SIGKILL of detect")
        assert proc.poll() is None, "the supervisor must survive a stage crash"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        server.stop()
