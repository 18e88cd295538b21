"""Sharding cameras across replicas by rendezvous hashing (`pipeline.shard`): every camera has
exactly one owner, a new replica moves only ~1/(N+1) of them, and three `edgestream run
--shard k/3` processes on one config publish every camera exactly once to one Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipeline.config import validate_config
from pipeline.shard import Shard, apply_shard, owned, owner, run_idle, shard_from

REPO = Path(__file__).resolve().parents[2]
CAMERAS = [f"cam-{i:03d}" for i in range(200)]


def test_every_camera_has_exactly_one_owner_for_1_to_16_replicas() -> None:
    for n in range(1, 17):
        shards = [set(owned(CAMERAS, Shard(k, n))) for k in range(n)]
        assert sum(len(s) for s in shards) == len(CAMERAS)
        assert set().union(*shards) == set(CAMERAS)
        if n <= 8:  # roughly even: no replica gets more than twice its fair share
            assert max(len(s) for s in shards) <= 2 * len(CAMERAS) / n, (
                n,
                [len(s) for s in shards],
            )


def test_adding_a_replica_moves_few_cameras_and_only_to_it() -> None:
    for n in range(1, 16):
        before = {c: owner(c, n) for c in CAMERAS}
        after = {c: owner(c, n + 1) for c in CAMERAS}
        moved = [c for c in CAMERAS if before[c] != after[c]]
        assert len(moved) <= 2 * len(CAMERAS) / (n + 1), (n, len(moved))
        assert all(after[c] == n for c in moved)  # nothing moves between the old replicas


def test_owner_is_stable_across_processes() -> None:
    """Not Python's salted hash(): another interpreter agrees."""
    code = "from pipeline.shard import owner; print([owner(f'cam-{i:03d}', 7) for i in range(50)])"
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, env=env, check=True)  # fmt: skip
    assert out.stdout.strip() == str([owner(c, 7) for c in CAMERAS[:50]])


def test_shard_parsing_and_environment() -> None:
    assert Shard.parse("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(ValueError):
            Shard.parse(bad)
    assert shard_from(None, {}) is None
    assert shard_from("1/3", {"EDGESTREAM_SHARD_COUNT": "9"}) == Shard(1, 3)  # the flag wins
    env = {"EDGESTREAM_SHARD_COUNT": "4", "EDGESTREAM_SHARD_INDEX": "3"}
    assert shard_from(None, env) == Shard(3, 4)
    pod = {"EDGESTREAM_SHARD_COUNT": "4", "HOSTNAME": "edgestream-2"}
    assert shard_from(None, pod) == Shard(2, 4)
    named = {**pod, "EDGESTREAM_POD_NAME": "edge-gpu-1"}
    assert shard_from(None, named) == Shard(1, 4)
    with pytest.raises(ValueError, match="no index"):
        shard_from(None, {"EDGESTREAM_SHARD_COUNT": "4", "HOSTNAME": "box"})
    with pytest.raises(ValueError, match="give both"):
        shard_from(None, {"EDGESTREAM_SHARD_INDEX": "1"})
    with pytest.raises(ValueError, match=r"0\.\.3"):
        shard_from(None, {"EDGESTREAM_SHARD_COUNT": "4", "HOSTNAME": "edgestream-4"})


def _config(tmp_path: Path, videos: list[Path], **sinks: object) -> dict:
    return {
        "name": "shardtest",
        "realtime": False,
        "cameras": [{"id": f"cam{i}", "url": str(v)} for i, v in enumerate(videos)],
        "model": {"weights": str(REPO / "stages/detect/models/demo.onnx")},
        "sinks": sinks or {"jsonl": {"path": str(tmp_path / "out" / "{camera}.jsonl")}},
        "metrics": {"port": 0},
    }


def test_apply_shard_and_the_shard_command(tmp_path: Path) -> None:
    videos = [tmp_path / f"v{i}.mp4" for i in range(12)]
    for v in videos:
        v.write_bytes(b"")  # only checked to exist
    data = _config(tmp_path, videos)
    cfg = validate_config(data)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    seen: list[str] = []
    for k in range(3):
        mine = apply_shard(cfg, Shard(k, 3))
        assert mine.name == f"shardtest-{k}"  # replicas on one host never share shm names
        assert mine.camera_ids == owned(cfg.camera_ids, Shard(k, 3))
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "shard", "--replicas", "3", "--index", str(k),
             "-c", str(path)], capture_output=True, text=True, cwd=REPO, check=True,
        )  # fmt: skip
        assert out.stdout.split() == mine.camera_ids
        seen += mine.camera_ids
    assert sorted(seen) == sorted(cfg.camera_ids)
    assert apply_shard(cfg, None) is cfg


def test_a_replica_without_cameras_idles_healthy(tmp_path: Path) -> None:
    from pipeline.health import HealthServer

    port = HealthServer(port=0).start()  # a free port, released at once
    free = port.port
    port.stop()
    cfg = validate_config({**_config(tmp_path, [REPO / "README.md"]), "metrics": {"port": free}})
    empty = cfg.model_copy(update={"cameras": []})
    stop = threading.Event()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(run_idle(empty, Shard(1, 2), 1, stop)))
    t.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                for path in ("/healthz", "/readyz"):
                    with urllib.request.urlopen(f"http://127.0.0.1:{free}{path}", timeout=2) as r:
                        assert r.status == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        stop.set()
        t.join(10)
    assert result == [0]


@pytest.mark.redis
@pytest.mark.slow  # three pipelines (18 processes) at once on a shared 2-core box: ~40-90 s
def test_three_shards_publish_every_camera_exactly_once(
    tmp_path: Path, require: Callable[[str | None], None]
) -> None:
    sys.path.insert(0, str(REPO / "tests" / "sinks"))
    from redis_server import REDIS_SERVER, RedisServer

    require(None if REDIS_SERVER else "redis-server not installed (apt-get install redis-server)")
    import redis

    from stages.demo.scenes import ensure_scenes

    videos = ensure_scenes(tmp_path / "scenes", cameras=7, seconds=0.4)  # 10 frames each
    server = RedisServer(tmp_path / "redis").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(_config(tmp_path, videos, redis={"url": server.url})))
        for k in range(3):
            log = open(tmp_path / f"run{k}.log", "wb")  # noqa: SIM115 - closed with the process
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "run", "-c", str(path), "--shard", f"{k}/3"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            ))  # fmt: skip
        codes = [p.wait(timeout=400) for p in procs]
        logs = [(tmp_path / f"run{k}.log").read_text() for k in range(3)]
        assert codes == [0, 0, 0], [x[-2000:] for x in logs]
        r = redis.Redis.from_url(server.url)
        for i in range(7):
            entries = r.xrange(f"edgestream:cam{i}:detections")
            frame_ids = sorted(json.loads(fields[b"data"])["frame_id"] for _, fields in entries)
            assert frame_ids == list(range(10)), (i, frame_ids)
        owners = [owned([f"cam{i}" for i in range(7)], Shard(k, 3)) for k in range(3)]
        for k, log in enumerate(logs):
            assert f"shard {k}/3: {len(owners[k])} of 7 camera(s)" in log or not owners[k]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.stop()
