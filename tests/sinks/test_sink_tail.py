"""``edgestream tail`` against a real redis-server: JSON lines, the table, camera filter, live."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis
from conftest import make_frame
from redis_server import RedisServer

from stages.sinks import cli
from stages.sinks.redis import RedisSink, RedisSinkConfig

pytestmark = pytest.mark.redis


def _publish(url: str, cameras: tuple[str, ...], frames: range) -> None:
    sink = RedisSink(RedisSinkConfig(url=url, flush_interval_ms=1))
    sink.setup()
    t0 = time.time() - 1
    for i in frames:
        for cam in cameras:
            sink.process(make_frame(cam, i, t0 + i / 30, n_objects=3, events=i == 0))
    assert sink.wait_idle(5)
    sink.close()


def test_tail_json_from_start_and_camera_filter(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _publish(redis_server.url, ("cam1", "cam2"), range(5))
    args = ["tail", "--url", redis_server.url, "--from-start", "--json", "--timeout-s", "3"]
    assert cli.main([*args, "--count", "10"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((d["camera"], d["frame_id"]) for d in docs) == sorted(
        (c, i) for c in ("cam1", "cam2") for i in range(5)
    )
    assert cli.main([*args, "--camera", "cam2", "--count", "3"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["camera"], d["frame_id"]) for d in docs] == [("cam2", 0), ("cam2", 1), ("cam2", 2)]
    assert cli.main([*args, "--events", "--count", "2"]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {(d["type"], d["kind"]) for d in docs} == {("track_event", "new")}


def _wait_for_blocked_xread(url: str, timeout_s: float = 10.0) -> None:
    """Waits until tail has resolved its cursors and sits in ``XREAD BLOCK``."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if any(c.get("cmd") == "xread" for c in client.client_list()):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise AssertionError("tail never reached XREAD")


def test_tail_live_table(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    _publish(redis_server.url, ("old",), range(3))  # before tail starts: not shown
    result: list[int] = []
    argv = ["tail", "--url", redis_server.url, "--count", "4", "--timeout-s", "8"]
    thread = threading.Thread(target=lambda: result.append(cli.main(argv)))
    thread.start()
    _wait_for_blocked_xread(redis_server.url)
    _publish(redis_server.url, ("old",), range(3, 5))
    _publish(redis_server.url, ("new",), range(2))  # a camera that appears later
    thread.join(10)
    assert result == [0]
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 4
    cells = sorted((r.split()[1], int(r.split()[3])) for r in rows)
    assert cells == [("new", 0), ("new", 1), ("old", 3), ("old", 4)]
    assert all("3 obj" in r and "person" in r for r in rows)


def test_tail_unreachable_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    from redis_server import free_port

    assert cli.main(["tail", "--url", f"redis://u:pw123@127.0.0.1:{free_port()}/0"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach redis://u:***@127.0.0.1" in err and "pw123" not in err
