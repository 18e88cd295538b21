"""The Redis sink: ``process()`` enqueues, a background thread writes pipelined batches.

Why a thread and not a non-blocking flush on a timer: redis-py is a blocking client, and the
slow cases are exactly the ones to isolate — a connect to an unreachable host waits
``connect_timeout_s``, a TLS handshake to a wrong CA fails after a round trip, a dead server
leaves a reply waiting ``socket_timeout_s``. On a thread, those waits never touch the caller:
``process()`` only encodes the frame (tens of us for 20 objects on an idle core, and the
byte bound is then exact) and appends it under a lock held for microseconds. The stage
contract has no tick either, so a
timer would need the runtime's cooperation to flush an idle sink. The cost is the GIL: the
flusher's CPU (pipelining, reply parsing) competes with the caller's, measured by
``tests/bench/bench_redis_sink.py``.

Delivery: per stream, entries are written in the order ``process()`` saw them, each exactly
once (deterministic entry ids, see `stages.sinks.redis.buffer`). When the buffer bound is hit,
the oldest queued entries are dropped, counted in ``dropped["buffer_full"]`` and logged. PUBLISH
notifications and the latest-state hash are best effort: a retried flush may PUBLISH twice
(subscribers can deduplicate on ``msg_id``) and they are not retried on their own errors.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from stages.sinks.codec import encode_frame
from stages.sinks.messages import DETECTIONS_TYPE, FrameResult
from stages.sinks.redis.buffer import EntryIds, Item, OutageBuffer, parse_id
from stages.sinks.redis.config import RedisSinkConfig
from stages.sinks.redis.connection import Connection, connect, describe_error

log = logging.getLogger("edgestream.sinks.redis")

DROP_REASONS = ("buffer_full", "shutdown", "rejected")
_RETRYABLE = (redis.ConnectionError, redis.TimeoutError, OSError)
_LOG_EVERY_S = 5.0


class _ServerRefused(Exception):
    """A command error that is not about one message (OOM, NOPERM, READONLY...): retry later."""


class RedisSink:
    """Publishes `FrameResult`s to per-camera Redis Streams (see `RedisSinkConfig`).

    Counters (also in `stats()`): ``published`` detections entries and ``events_published``
    track-event entries written; ``duplicates``: entries a retried flush found already written
    (not written again); ``dropped[reason]``: ``buffer_full``, ``shutdown`` (left at close),
    ``rejected`` (Redis refused that one entry, e.g. WRONGTYPE); ``reconnects``: recoveries
    after a failure; ``connection_errors``: failed attempts; ``clamped_ids`` /
    ``reassigned_ids``: entries whose id could not be their capture time (clock went back).
    """

    def __init__(self, config: RedisSinkConfig | None = None) -> None:
        self.config = config or RedisSinkConfig()
        cfg = self.config
        self._buffer = OutageBuffer(cfg.max_buffer_messages, cfg.max_buffer_bytes)
        self._ids = EntryIds()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._close_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._connected = False
        self._down_since: float | None = None
        self._last_drop_log = 0.0
        self._last_aux_log = 0.0
        self.published = 0
        self.events_published = 0
        self.duplicates = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self.reconnects = 0
        self.connection_errors = 0
        self.reassigned_ids = 0
        self.aux_errors = 0
        self.flushes = 0
        self.flusher_cpu_s = 0.0
        self.last_error: str | None = None

    # -- stage contract -------------------------------------------------------------------

    def setup(self) -> None:
        """Builds the client and starts the flusher. Never waits for Redis.

        Raises ValueError for configuration problems (a missing secret or TLS file).
        """
        if self._thread is not None:
            return
        self._conn = connect(self.config)
        self._thread = threading.Thread(target=self._run, name="redis-sink", daemon=True)
        self._thread.start()

    def process(self, frame: FrameResult) -> None:
        """Enqueues the frame's detections message and its track events. Never blocks on I/O."""
        cfg = self.config
        now = time.monotonic()
        ms = int(frame.capture_ts * 1000)
        items: list[Item] = []
        for n, pending in enumerate(encode_frame(frame)):
            if pending.kind == DETECTIONS_TYPE:
                key, seq = cfg.key_template.format(camera=frame.camera), frame.frame_id
            elif cfg.events_key_template is not None:
                key, seq = cfg.events_key_template.format(camera=frame.camera), n - 1
            else:
                continue
            items.append(Item(pending, key, ms, seq, now, nbytes=pending.nbytes))
        dropped: list[Item] = []
        with self._cond:
            was_empty = not self._buffer.queued
            for item in items:
                self._ids.assign(item)
                dropped += self._buffer.put(item)
            if dropped:
                self.dropped["buffer_full"] += len(dropped)
            if was_empty or self._buffer.queued >= cfg.max_batch_messages:
                self._cond.notify()
        if dropped:
            self._log_drops(len(dropped))

    def close(self) -> None:
        """Writes what is buffered for up to ``close_timeout_s``, then stops the flusher."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._close_deadline = time.monotonic() + self.config.close_timeout_s
            self._stop.set()
            self._cond.notify()
        thread.join(self.config.close_timeout_s + 2 * self.config.socket_timeout_s + 1.0)
        with self._cond:
            left = self._buffer.messages
            if left and not thread.is_alive():
                self._buffer = OutageBuffer(self._buffer.max_messages, self._buffer.max_bytes)
                self.dropped["shutdown"] += left
        if left:
            log.warning(
                "redis sink closed with %d messages not written to %s (%s)",
                left,
                self._display_url(),
                self.last_error or "close_timeout_s reached",
            )
        if self._conn is not None and not thread.is_alive():
            self._conn.client.close()
        self._thread = None

    # -- observability --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "published": self.published,
                "events_published": self.events_published,
                "duplicates": self.duplicates,
                "dropped": dict(self.dropped),
                "dropped_total": sum(self.dropped.values()),
                "reconnects": self.reconnects,
                "connection_errors": self.connection_errors,
                "connected": self._connected,
                "buffered_messages": self._buffer.messages,
                "buffered_bytes": self._buffer.nbytes,
                "clamped_ids": self._ids.clamped,
                "reassigned_ids": self.reassigned_ids,
                "aux_errors": self.aux_errors,
                "flushes": self.flushes,
                "flusher_cpu_s": self.flusher_cpu_s,
                "last_error": self.last_error,
            }

    def wait_idle(self, timeout_s: float) -> bool:
        """Waits until nothing is buffered (for tests and offline runs); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._cond:
                if self._buffer.messages == 0:
                    return True
            time.sleep(0.005)
        return False

    # -- flusher thread -------------------------------------------------------------------

    def _run(self) -> None:
        cpu0 = time.thread_time()
        backoff_s = self.config.reconnect_backoff_min_s
        while True:
            batch = self._next_batch()
            if batch is None:
                break
            try:
                if not self._connected:
                    self._connection().client.ping()
                    self._on_connected()
                failure = self._write(batch)
            except _RETRYABLE as exc:  # nothing of the batch is accounted for: retry it all
                with self._cond:
                    self._buffer.requeue(batch)
                failure = exc
            except Exception as exc:  # a bug or an unexpected reply: keep the thread alive
                log.debug("redis sink flush failed", exc_info=True)
                with self._cond:
                    self._buffer.requeue(batch)
                failure = exc
            if failure is not None:
                self._on_failure(failure)
                self._sleep_backoff(backoff_s)
                backoff_s = min(backoff_s * 2, self.config.reconnect_backoff_max_s)
            else:
                backoff_s = self.config.reconnect_backoff_min_s
            self.flusher_cpu_s = time.thread_time() - cpu0

    def _next_batch(self) -> list[Item] | None:
        """Waits until a batch is due (full, or its oldest entry waited flush_interval_ms);
        returns None when closing and everything is written or the deadline passed."""
        interval_s = self.config.flush_interval_ms / 1000
        with self._cond:
            while True:
                if self._stop.is_set():
                    if not self._buffer.queued or time.monotonic() >= self._close_deadline:
                        return None
                    return self._buffer.take(self.config.max_batch_messages)
                oldest = self._buffer.oldest_enqueued_s()
                if oldest is not None:
                    wait_s = oldest + interval_s - time.monotonic()
                    if wait_s <= 0 or self._buffer.queued >= self.config.max_batch_messages:
                        return self._buffer.take(self.config.max_batch_messages)
                else:
                    wait_s = None
                self._cond.wait(wait_s)

    def _write(self, batch: list[Item]) -> Exception | None:
        """One pipelined round trip. Entries to write again (refused by the server, or given
        new ids) go back to the head of the queue; returns the refusal to back off on."""
        cfg = self.config
        client = self._connection().client
        pipe = client.pipeline(transaction=False)
        publish_ts = time.time()
        xadd_at: list[int] = []
        n = 0
        for item in batch:
            body = item.pending.finalize(publish_ts)
            is_det = item.pending.kind == DETECTIONS_TYPE
            maxlen = cfg.maxlen if is_det else cfg.events_maxlen
            pipe.xadd(item.key, {"data": body}, id=item.entry_id, maxlen=maxlen, approximate=True)
            xadd_at.append(n)
            n += 1
            if is_det and cfg.latest_hash is not None:
                fields: dict[FieldT, EncodableT] = {
                    "data": body,
                    "frame_id": item.pending.frame_id,
                    "entry_id": item.entry_id,
                }
                pipe.hset(cfg.latest_hash.format(camera=item.pending.camera), mapping=fields)
                n += 1
            if is_det and cfg.publish_channel is not None:
                pipe.publish(cfg.publish_channel.format(camera=item.pending.camera), body)
                n += 1
        results = pipe.execute(raise_on_error=False)
        self.flushes += 1

        written: list[Item] = []
        rejected: list[Item] = []  # id not above the stream's last id
        dropped: list[Item] = []
        refused: list[Item] = []
        refusal: Exception | None = None
        aux = set(range(n)) - set(xadd_at)
        aux_failures = [r for i, r in enumerate(results) if i in aux and isinstance(r, Exception)]
        for item, at in zip(batch, xadd_at, strict=True):
            res = results[at]
            if not isinstance(res, Exception):
                written.append(item)
            elif refusal is not None:
                refused.append(item)
            elif "equal or smaller" in str(res):
                rejected.append(item)
            elif "WRONGTYPE" in str(res):
                dropped.append(item)
                log.error("redis refused %s: %s", item.key, self._redact(res))
            else:
                refusal = res
                refused.append(item)
        duplicates, retry = self._resolve_rejected(client, rejected) if rejected else ([], [])
        again = {id(i) for i in refused + retry}
        with self._cond:
            self._buffer.done(written + duplicates + dropped)
            if again:
                self._buffer.requeue([i for i in batch if id(i) in again])
            self.published += sum(1 for i in written if i.pending.kind == DETECTIONS_TYPE)
            self.events_published += sum(1 for i in written if i.pending.kind != DETECTIONS_TYPE)
            self.duplicates += len(duplicates)
            if dropped:
                self.dropped["rejected"] += len(dropped)
            self.aux_errors += len(aux_failures)
        if aux_failures and time.monotonic() - self._last_aux_log > _LOG_EVERY_S:
            self._last_aux_log = time.monotonic()
            log.warning("redis HSET/PUBLISH failed: %s", self._redact(aux_failures[0]))
        return None if refusal is None else _ServerRefused(str(refusal))

    def _resolve_rejected(
        self, client: redis.Redis, rejected: list[Item]
    ) -> tuple[list[Item], list[Item]]:
        """Splits rejected entries into duplicates (that id holds this very message: a retried
        flush) and regressions (the stream is ahead: they get ids above its last id)."""
        pipe = client.pipeline(transaction=False)
        for item in rejected:
            pipe.xrange(item.key, min=item.entry_id, max=item.entry_id, count=1)
        found = pipe.execute()
        needle = b'"msg_id":"%s"'
        duplicates, regressed = [], []
        for item, entries in zip(rejected, found, strict=True):
            data = entries[0][1].get(b"data", b"") if entries else b""
            if needle % item.pending.msg_id.encode() in data:
                duplicates.append(item)
            else:
                regressed.append(item)
        if not regressed:
            return duplicates, []
        keys = sorted({i.key for i in regressed})
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_stream(key)
        infos = pipe.execute()
        with self._cond:
            for key, info in zip(keys, infos, strict=True):
                self._ids.restart_above(key, parse_id(info["last-generated-id"]))
            for item in regressed:  # then everything queued for those keys, in order
                self._ids.assign(item)
            for item in (*self._buffer.retry, *self._buffer.queue):
                if item.key in keys:
                    self._ids.assign(item)
            self.reassigned_ids += len(regressed)
        log.warning(
            "%d entries for %s were behind the stream's last id (capture clock went back, or "
            "another writer uses these keys): written with later ids",
            len(regressed),
            ", ".join(keys),
        )
        return duplicates, regressed

    # -- connection state -----------------------------------------------------------------

    def _connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("RedisSink.setup() was not called")
        return self._conn

    def _on_connected(self) -> None:
        with self._cond:
            self._connected = True
            buffered = self._buffer.messages
            was_down, self._down_since = self._down_since, None
            if was_down is not None:
                self.reconnects += 1
        if was_down is not None:
            log.info(
                "redis sink reconnected to %s after %.1f s; writing %d buffered messages",
                self._display_url(),
                time.monotonic() - was_down,
                buffered,
            )
        else:
            log.info("redis sink connected to %s", self._display_url())

    def _on_failure(self, exc: BaseException) -> None:
        text = describe_error(exc, self._connection())
        self._connected = False
        with contextlib.suppress(Exception):  # drop broken sockets; the next try opens new ones
            self._connection().client.connection_pool.disconnect()
        with self._cond:
            self.connection_errors += 1
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
            buffered = self._buffer.messages
            repeat = text == self.last_error
            self.last_error = text
        if first or not repeat:
            log.error("redis sink: %s; buffering (%d messages) and retrying", text, buffered)
        else:
            log.debug("redis sink: still failing: %s", text)

    def _sleep_backoff(self, backoff_s: float) -> None:
        delay = backoff_s * random.uniform(0.8, 1.2)
        if self._stop.is_set():
            time.sleep(max(0.0, min(delay, self._close_deadline - time.monotonic())))
        else:
            self._stop.wait(delay)

    def _log_drops(self, n: int) -> None:
        now = time.monotonic()
        if now - self._last_drop_log < _LOG_EVERY_S:
            return
        self._last_drop_log = now
        cfg = self.config
        log.warning(
            "redis sink buffer full (max_buffer_messages=%d, max_buffer_bytes=%d): dropped %d "
            "oldest messages, %d in total, while %s is unreachable",
            cfg.max_buffer_messages,
            cfg.max_buffer_bytes,
            n,
            self.dropped["buffer_full"],
            self._display_url(),
        )

    def _display_url(self) -> str:
        return self._conn.display_url if self._conn else "redis"

    def _redact(self, text: object) -> str:
        return self._conn.redact(text) if self._conn else str(text)
