"""The Redis sink against a real redis-server: content, ids, schema, options, retried flushes."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import pytest
import redis
from conftest import make_frame
from redis_server import RedisServer

from stages.sinks.redis import RedisSink, RedisSinkConfig

pytestmark = pytest.mark.redis


def _entries(client: redis.Redis, key: str) -> list[tuple[str, dict[str, Any]]]:
    return [(i.decode(), json.loads(f[b"data"])) for i, f in client.xrange(key)]


def test_publishes_schema_valid_messages_per_camera(
    redis_server: RedisServer, validators: dict
) -> None:
    cfg = RedisSinkConfig(
        url=redis_server.url,
        latest_hash="edgestream:{camera}:latest",
        publish_channel="edgestream:{camera}:live",
        flush_interval_ms=5,
    )
    admin = redis_server.admin()
    pubsub = admin.pubsub()
    pubsub.subscribe("edgestream:cam-a:live")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    sink = RedisSink(cfg)
    sink.setup()
    t0 = time.time() - 2  # frames captured in the last 2 s
    try:
        for i in range(40):
            for cam in ("cam-a", "cam-b"):
                sink.process(make_frame(cam, i, t0 + i / 30, n_objects=i % 4, events=i % 10 == 0))
        assert sink.wait_idle(5)
    finally:
        sink.close()
    for cam in ("cam-a", "cam-b"):
        dets = _entries(admin, f"edgestream:{cam}:detections")
        assert [d["frame_id"] for _, d in dets] == list(range(40))
        for entry_id, doc in dets:
            validators["detections"].validate(doc)
            assert doc["camera"] == cam and doc["msg_id"] == f"{cam}:{doc['frame_id']}"
            # the entry id is <capture ms>-<frame_id>: readable, deterministic, XRANGE-able
            assert entry_id == f"{int(doc['capture_ts'] * 1000)}-{doc['frame_id']}"
            assert len(doc["objects"]) == doc["frame_id"] % 4
            assert 0 <= doc["latency_ms"]["publish"] < 5000
        events = _entries(admin, f"edgestream:{cam}:events")
        assert [e["frame_id"] for _, e in events] == [0, 10, 20, 30]
        for _, doc in events:
            validators["track_event"].validate(doc)
        latest = admin.hgetall(f"edgestream:{cam}:latest")
        assert json.loads(latest[b"data"])["frame_id"] == 39
        assert latest[b"entry_id"].decode() == dets[-1][0]
    live = []
    while (msg := pubsub.get_message(timeout=0.5)) is not None:
        live.append(json.loads(msg["data"])["frame_id"])
    assert live == list(range(40))
    pubsub.close()
    stats = sink.stats()
    assert stats["published"] == 80 and stats["events_published"] == 8
    assert stats["dropped_total"] == 0 and stats["buffered_messages"] == 0


def test_maxlen_trims_streams(redis_server: RedisServer) -> None:
    sink = RedisSink(RedisSinkConfig(url=redis_server.url, maxlen=100, max_batch_messages=50))
    sink.setup()
    t0 = time.time()
    for i in range(2000):
        sink.process(make_frame("cam", i, t0 + i / 1000, n_objects=0))
    assert sink.wait_idle(5)
    sink.close()
    length = redis_server.admin().xlen("edgestream:cam:detections")
    assert 100 <= length < 400  # MAXLEN ~ trims whole nodes: approximately 100


def test_retried_flush_writes_nothing_twice(redis_server: RedisServer) -> None:
    """The server freezes (SIGSTOP) while a batch is on the wire: the sink times out and
    retries, the frozen server then runs the first copy too. Every frame is stored once."""
    cfg = RedisSinkConfig(
        url=redis_server.url,
        socket_timeout_s=0.3,
        reconnect_backoff_min_s=0.5,
        reconnect_backoff_max_s=0.5,
        flush_interval_ms=1,
    )
    sink = RedisSink(cfg)
    sink.setup()
    t0 = time.time()
    assert redis_server.proc is not None
    try:
        sink.process(make_frame("cam", 0, t0))
        assert sink.wait_idle(5)
        os.kill(redis_server.proc.pid, signal.SIGSTOP)
        try:
            for i in range(1, 31):
                sink.process(make_frame("cam", i, t0 + i / 30, events=True))
            deadline = time.monotonic() + 5
            while sink.stats()["connection_errors"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os.kill(redis_server.proc.pid, signal.SIGCONT)
        assert sink.wait_idle(10)
    finally:
        sink.close()
    admin = redis_server.admin()
    frames = [d["frame_id"] for _, d in _entries(admin, "edgestream:cam:detections")]
    assert frames == list(range(31)), sink.stats()
    events = [d["msg_id"] for _, d in _entries(admin, "edgestream:cam:events")]
    assert len(events) == len(set(events)) == 30
    stats = sink.stats()
    assert stats["connection_errors"] >= 1 and stats["reconnects"] >= 1
    # the frozen server ran the first copy of the batch(es) on the wire: recognised, not rewritten
    assert stats["duplicates"] >= 1
    assert stats["published"] + stats["events_published"] + stats["duplicates"] == 61
    assert stats["dropped_total"] == 0


def test_stream_ahead_of_capture_clock_gets_later_ids(redis_server: RedisServer) -> None:
    """A restarted pipeline whose capture clock is behind what the stream holds: nothing is
    lost or mistaken for a duplicate; entries get ids above the stream's last id."""
    t0 = time.time()
    admin = redis_server.admin()
    admin.xadd("edgestream:cam:detections", {"data": "{}"}, id=f"{int(t0 * 1000) + 60_000}-0")
    sink = RedisSink(RedisSinkConfig(url=redis_server.url, flush_interval_ms=1))
    sink.setup()
    for i in range(5):
        sink.process(make_frame("cam", i, t0 + i / 30))
    assert sink.wait_idle(5)
    sink.close()
    frames = [d.get("frame_id") for _, d in _entries(admin, "edgestream:cam:detections")]
    assert frames == [None, 0, 1, 2, 3, 4]
    assert sink.stats()["reassigned_ids"] >= 1 and sink.stats()["duplicates"] == 0


def test_flusher_survives_an_unexpected_error(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = RedisSink(RedisSinkConfig(url=redis_server.url, reconnect_backoff_min_s=0.05))
    sink.setup()
    calls = {"n": 0}
    real_write = sink._write

    def flaky(batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyError("surprise")
        return real_write(batch)

    monkeypatch.setattr(sink, "_write", flaky)
    t0 = time.time() - 1
    for i in range(5):
        sink.process(make_frame("cam", i, t0 + i / 30))
    assert sink.wait_idle(5)
    sink.close()
    assert calls["n"] >= 2 and sink.stats()["published"] == 5
    assert redis_server.admin().xlen("edgestream:cam:detections") == 5
