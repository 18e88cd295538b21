"""Offline cameras lose nothing to a Redis outage, or say how much they lost.

The sink holds the caller (the pipeline) while its buffer is full, writes everything once
Redis is back, and ``close()`` waits for the last result; only a stop request or
``give_up_after_s`` ends the waiting, and what is then lost is counted per result. Live
cameras keep the bounded buffer that drops the oldest (tests/sinks/test_sink_outage.py).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from conftest import make_frame
from redis_server import free_port

from stages.sinks.codec import encode_frame
from stages.sinks.redis import RedisSink, RedisSinkConfig
from stages.sinks.redis.buffer import Item, OutageBuffer

LOGGER = "edgestream.sinks.redis"
T0 = 1_700_000_000.0


def _item(seq: int, keep: bool, result: bool = True) -> Item:
    pending = encode_frame(make_frame("cam1", seq, T0))[0]
    return Item(pending, "k", 1, seq, 0.0, nbytes=100, result=result, keep=keep)


def test_buffer_never_drops_kept_entries_to_make_room() -> None:
    buf = OutageBuffer(max_messages=3, max_bytes=10_000)
    kept = [_item(i, keep=True) for i in range(3)]
    live = [_item(10 + i, keep=False) for i in range(3)]
    assert buf.put(kept[0]) == [] and buf.put(live[0]) == [] and buf.put(kept[1]) == []
    # full: a live entry evicts the oldest *live* entry, never a kept one
    assert buf.put(live[1]) == [live[0]]
    assert [i.seq_hint for i in buf.queue] == [0, 1, 11]
    # a kept entry may evict a live one (make_room), and then fits
    assert buf.make_room(kept[2]) == [live[1]] and not buf.full(kept[2])
    buf.append(kept[2])
    assert (buf.held_kept, buf.held_results, buf.held_kept_results) == (3, 3, 3)
    # only kept entries left: nothing can be dropped for room; a new live entry is dropped
    assert buf.make_room(_item(20, keep=True)) == []
    assert buf.full(_item(20, keep=True))
    assert buf.put(live[2]) == [live[2]]
    # the sink gave up waiting: kept entries are dropped like live ones, oldest first
    late = _item(21, keep=True)
    assert buf.put(late, evict_kept=True) == [kept[0]]
    assert buf.messages == 3 and buf.held_kept_results == 3
    batch = buf.take(2)
    buf.done(batch)
    assert buf.held_kept_results == 1 and buf.held_results == 1
    assert buf.clear() == [late] and buf.messages == 0 and buf.held_kept == 0


def test_buffer_takes_an_oversized_kept_entry_when_empty() -> None:
    buf = OutageBuffer(max_messages=10, max_bytes=50)  # every entry is 100 bytes
    assert buf.put(_item(0, keep=False)) != []  # live: dropped, as before
    big = _item(1, keep=True)
    assert not buf.full(big)  # waiting for room could never end
    buf.append(big)
    assert buf.full(_item(2, keep=True))


def _sink(url: str, **over: Any) -> RedisSink:
    stop = over.pop("stop", threading.Event())
    values: dict[str, Any] = {
        "url": url,
        "events_key_template": None,
        "max_buffer_messages": 10,
        "connect_timeout_s": 0.3,
        "socket_timeout_s": 0.3,
        "reconnect_backoff_min_s": 0.05,
        "reconnect_backoff_max_s": 0.3,
        "close_timeout_s": 0.5,
    }
    sink = RedisSink(RedisSinkConfig(**{**values, **over}), lossless=lambda cam: cam != "live",
                     stop_requested=stop.is_set)  # fmt: skip
    sink.setup()
    return sink


def _frame_ids(server: Any, camera: str = "cam1") -> list[int]:
    entries = server.admin().xrange(f"edgestream:{camera}:detections")
    return [int(f[b"data"].split(b'"frame_id":')[1].split(b",")[0]) for _, f in entries]


class Producer(threading.Thread):
    """Calls ``sink.process`` for frames start..end-1 (it may be held), recording progress."""

    def __init__(self, sink: RedisSink, end: int, start: int = 0) -> None:
        super().__init__(daemon=True)
        self.sink, self.start_at, self.end = sink, start, end
        self.done_frames = start

    def run(self) -> None:
        for i in range(self.start_at, self.end):
            self.sink.process(make_frame("cam1", i, T0 + i / 25))
            self.done_frames = i + 1


@pytest.mark.redis
def test_outage_holds_offline_results_and_writes_every_one_once(
    redis_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = redis_factory(appendonly=True)
    sink = _sink(server.url)
    first = Producer(sink, 20)
    first.start()
    first.join(10)
    assert _wait(lambda: sink.stats()["held_results"] == 0, 5)
    server.kill()
    producer = Producer(sink, 60, start=20)
    producer.start()
    # the buffer (10 messages) fills and the caller is held, however long the outage lasts
    assert _wait(lambda: sink.stats()["holding"], 10), sink.stats()
    time.sleep(1.5)
    held_at = producer.done_frames
    time.sleep(0.5)
    assert producer.done_frames == held_at and producer.is_alive()
    assert 20 + 9 <= held_at <= 20 + 11, held_at  # the buffer's 10 plus the one being written
    stats = sink.stats()
    assert not stats["connected"] and stats["lost_results"] == 0
    server.start()  # the same port
    producer.join(20)
    assert not producer.is_alive()
    sink.close()
    stats = sink.stats()
    assert stats["lost_results"] == 0 and stats["dropped_total"] == 0, stats
    assert stats["held_results"] == 0 and stats["reconnects"] >= 1
    assert _frame_ids(server) == list(range(60))  # every frame once, in order
    text = caplog.text
    assert text.count("buffering") == 1, text  # down: once
    assert text.count("holding the pipeline") == 1, text
    assert text.count("reconnected") == 1, text  # up again: once


def _wait(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.redis
def test_close_waits_for_offline_results_until_redis_is_back(redis_factory: Any) -> None:
    server = redis_factory(appendonly=True)
    port = server.port
    server.kill()
    sink = _sink(f"redis://127.0.0.1:{port}/0", max_buffer_messages=100, close_timeout_s=0.2)
    for i in range(5):
        sink.process(make_frame("cam1", i, T0 + i))
    sink.process(make_frame("live", 0, T0))  # a live camera's result: close_timeout_s only
    closer = threading.Thread(target=sink.close, daemon=True)
    closer.start()
    closer.join(2.0)  # ten times close_timeout_s: still waiting for Redis
    assert closer.is_alive()
    assert sink.stats()["held_offline_results"] == 5
    server.start()
    closer.join(10)
    assert not closer.is_alive()
    assert _frame_ids(server) == list(range(5))
    assert _frame_ids(server, "live") == [0]
    assert sink.stats()["lost_results"] == 0


def test_stop_request_ends_the_wait_and_counts_what_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    stop = threading.Event()
    sink = _sink(f"redis://127.0.0.1:{free_port()}/0", max_buffer_messages=5, stop=stop)
    producer = Producer(sink, 8)
    producer.start()
    assert _wait(lambda: producer.done_frames == 5, 5)
    time.sleep(0.5)
    assert producer.done_frames == 5 and producer.is_alive()  # held: never reachable
    stop.set()  # SIGTERM
    producer.join(5)
    assert not producer.is_alive()
    t = time.monotonic()
    sink.close()
    assert time.monotonic() - t < 0.5 + 2 * 0.3 + 1.5  # close_timeout_s, then join the flusher
    stats = sink.stats()
    assert stats["lost_results"] == stats["lost_offline_results"] == 8, stats
    assert stats["dropped"]["shutdown"] == 8 and stats["held_results"] == 0
    assert "8 results (8 of offline cameras) not written" in caplog.text
    assert any(r.levelno == logging.ERROR and "not written" in r.message for r in caplog.records)


def test_give_up_after_s_stops_holding_and_counts_the_loss(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = _sink(f"redis://127.0.0.1:{free_port()}/0", max_buffer_messages=5, give_up_after_s=1.0)
    t = time.monotonic()
    producer = Producer(sink, 25)
    producer.start()
    producer.join(10)
    assert not producer.is_alive()
    waited = time.monotonic() - t
    assert 0.8 <= waited < 5, waited  # held until the outage lasted give_up_after_s
    assert sink.stats()["gave_up"]
    sink.close()
    stats = sink.stats()
    assert stats["lost_offline_results"] == 25, stats
    assert stats["dropped"]["gave_up"] == 25  # 20 for room, then the 5 left at close
    assert caplog.text.count("give_up_after_s=1") == 1


def test_live_results_keep_the_bounded_buffer() -> None:
    """A live camera is never held: the oldest is dropped and counted, as before."""
    sink = _sink(f"redis://127.0.0.1:{free_port()}/0", max_buffer_messages=5, close_timeout_s=0.1)
    t = time.monotonic()
    for i in range(20):
        sink.process(make_frame("live", i, T0 + i))
    assert time.monotonic() - t < 0.5
    sink.close()
    stats = sink.stats()
    assert stats["dropped"]["buffer_full"] == 15 and stats["dropped"]["shutdown"] == 5
    assert stats["lost_results"] == 20 and stats["lost_offline_results"] == 0
