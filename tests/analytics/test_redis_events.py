"""Zone and line events through the real Redis sink: on the camera's events stream beside the
track events, valid against the schema; counts in the detections stream."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sinks"))
from redis_server import REDIS_SERVER, RedisServer
from test_schema import crossing_frames

from stages.sinks import schemas
from stages.sinks.redis import RedisSink
from stages.sinks.redis.config import RedisSinkConfig

pytestmark = pytest.mark.redis


def test_events_reach_the_events_stream(tmp_path: Path) -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis").start()
    try:
        sink = RedisSink(RedisSinkConfig(url=server.url))
        sink.setup()
        frames = crossing_frames()
        for frame in frames:
            sink.process(frame)
        sink.close()
        client = redis.Redis.from_url(server.url)
        events = [json.loads(f[b"data"]) for _, f in client.xrange("edgestream:cam:events")]
        dets = [json.loads(f[b"data"]) for _, f in client.xrange("edgestream:cam:detections")]
    finally:
        server.stop()
    validator = jsonschema.Draft202012Validator(schemas.load(schemas.ANALYTICS_EVENT_V1))
    for doc in events:
        validator.validate(doc)
    assert sorted(d["kind"] for d in events) == ["line_cross", "zone_enter"]
    assert len(dets) == len(frames)
    assert dets[-1]["lines"]["door"]["in"] == 1
    assert dets[-1]["zones"]["right"]["occupancy"] == 1
    assert sink.stats()["events_published"] == 2
