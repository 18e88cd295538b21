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
once (deterministic entry ids, see `stages.sinks.redis.buffer`). PUBLISH notifications and the
latest-state hash are best effort: a retried flush may PUBLISH twice (subscribers can
deduplicate on ``msg_id``) and they are not retried on their own errors.

Outages: the sink retries with backoff and logs once per state change (down, holding the
pipeline, given up, up again). What happens to results depends on their camera:

* live cameras (the default): when the buffer bound is hit, the oldest queued entries are
  dropped, counted in ``dropped["buffer_full"]`` and logged; ``process()`` never waits.
* offline cameras (``lossless(camera)`` true: ``realtime: false``): nothing is dropped.
  ``process()`` waits for room in the buffer, which holds the pipeline upstream (its offline
  sends block), and ``close()`` returns only once every entry is written. Two things end the
  wait, and what is then lost is counted (``lost_offline_results``): ``stop_requested()``
  (SIGTERM: ``close()`` keeps trying for ``close_timeout_s``) and an outage longer than
  ``give_up_after_s`` (from then on offline results are buffered like live ones until Redis
  is back).
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from pipeline.payloads import DETECTIONS_TYPE, FrameResult
from stages.sinks.codec import encode_frame
from stages.sinks.redis.buffer import EntryIds, Item, OutageBuffer, parse_id
from stages.sinks.redis.config import RedisSinkConfig
from stages.sinks.redis.connection import Connection, connect, describe_error

log = logging.getLogger("edgestream.sinks.redis")

DROP_REASONS = ("buffer_full", "shutdown", "rejected", "gave_up")
_RETRYABLE = (redis.ConnectionError, redis.TimeoutError, OSError)
_LOG_EVERY_S = 5.0


class _ServerRefused(Exception):
    """A command error that is not about one message (OOM, NOPERM, READONLY...): retry later."""


class RedisSink:
    """Publishes `FrameResult`s to per-camera Redis Streams (see `RedisSinkConfig`).

    Counters (also in `stats()`): ``published`` detections entries and ``events_published``
    track-event entries written; ``duplicates``: entries a retried flush found already written
    (not written again); ``dropped[reason]``: ``buffer_full``, ``shutdown`` (left at close),
    ``rejected`` (Redis refused that one entry, e.g. WRONGTYPE), ``gave_up`` (offline
    results dropped after ``give_up_after_s``); ``reconnects``: recoveries after a failure;
    ``connection_errors``: failed attempts; ``clamped_ids`` / ``reassigned_ids``: entries
    whose id could not be their capture time (clock went back). Results (a frame's detections
    message; track events not counted): ``lost_results`` will never be written,
    ``held_results`` are buffered now, and ``lost_offline_results`` / ``held_offline_results``
    are those of offline cameras.

    lossless: camera id -> whether its results must not be dropped (offline cameras); None:
        every camera is live.
    stop_requested: polled while ``process()`` or ``close()`` wait for Redis; true ends the
        wait (a SIGTERM of the run).
    """

    name = "redis"

    def __init__(
        self,
        config: RedisSinkConfig | None = None,
        lossless: Callable[[str], bool] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config or RedisSinkConfig()
        cfg = self.config
        self._lossless = lossless or (lambda _camera: False)
        self._stop_requested = stop_requested or (lambda: False)
        self._buffer = OutageBuffer(cfg.max_buffer_messages, cfg.max_buffer_bytes)
        self._ids = EntryIds()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # the flusher waits for work on it
        self._room = threading.Condition(self._lock)  # process() waits for room on it
        self._stop = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None
        self._connected = False
        self._down_since: float | None = None
        self._gave_up = False
        self._holding = False
        self.lost_results = 0
        self.lost_offline_results = 0
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
        """Enqueues the frame's detections message and its track events. Never blocks on I/O;
        for an offline camera it waits while the buffer is full (see the module doc)."""
        cfg = self.config
        now = time.monotonic()
        ms = int(frame.capture_ts * 1000)
        keep = self._lossless(frame.camera)
        items: list[Item] = []
        for n, pending in enumerate(encode_frame(frame)):
            is_det = pending.kind == DETECTIONS_TYPE
            if is_det:
                key, seq = cfg.key_template.format(camera=frame.camera), frame.frame_id
            elif cfg.events_key_template is not None:
                key, seq = cfg.events_key_template.format(camera=frame.camera), n - 1
            else:
                continue
            items.append(Item(pending, key, ms, seq, now, nbytes=pending.nbytes,
                              result=is_det, keep=keep))  # fmt: skip
        dropped: list[Item] = []
        with self._cond:
            wake = False  # the flusher may be waiting without a deadline for an empty queue
            for item in items:
                self._ids.assign(item)
                if item.keep and not self._gave_up:
                    dropped += self._buffer.make_room(item)
                    if not self._buffer.full(item) or self._wait_for_room(item, dropped):
                        wake |= not self._buffer.queued
                        self._buffer.append(item)
                        continue
                    if not self._gave_up:  # stopping: this one cannot be buffered
                        self._count_lost([item], "shutdown")
                        continue
                wake |= not self._buffer.queued
                dropped += self._buffer.put(item, evict_kept=self._gave_up)
            if dropped:
                self._count_lost([i for i in dropped if not i.keep], "buffer_full")
                self._count_lost([i for i in dropped if i.keep], "gave_up")
            if wake or self._buffer.queued >= cfg.max_batch_messages:
                self._cond.notify()
        if dropped:
            self._log_drops(len(dropped))

    def _wait_for_room(self, item: Item, dropped: list[Item]) -> bool:
        """With the lock held: waits until ``item`` (kept) fits; False when the wait ends
        first (stop requested, or the sink gave up). Entries it drops go to ``dropped``. A
        Redis slower than the pipeline holds it silently, like any blocking edge; an outage
        is logged (once)."""
        while self._buffer.full(item):
            self._check_give_up()
            if self._gave_up or self._stop.is_set() or self._stop_requested():
                return False
            if not self._holding and self._down_since is not None:  # once per outage
                self._holding = True
                log.warning(
                    "redis sink buffer full (%d messages, %d bytes) while %s is down: holding "
                    "the pipeline until it is back (offline results are never dropped)",
                    self._buffer.messages,
                    self._buffer.nbytes,
                    self._display_url(),
                )
            self._cond.notify()
            self._room.wait(0.1)
            dropped += self._buffer.make_room(item)
        return True

    def close(self) -> None:
        """Writes what is buffered, then stops the flusher. Results of offline cameras are
        waited for without a time limit, unless a stop was requested or the sink gave up
        (``give_up_after_s``); everything else for up to ``close_timeout_s``. What is left is
        counted as lost (``dropped["shutdown"]`` or ``["gave_up"]``) and logged as an error
        when offline results are among it."""
        thread = self._thread
        if thread is None:
            return
        with self._cond:
            self._closing = True  # flush now, not flush_interval_ms later
            self._cond.notify()
        bounded_since: float | None = None
        waiting_logged = False
        while thread.is_alive():
            with self._cond:
                self._check_give_up()
                left, kept = self._buffer.messages, self._buffer.held_kept
                if left == 0:
                    break
                unbounded = kept and not self._gave_up and not self._stop_requested()
                if unbounded and not waiting_logged and not self._connected:
                    waiting_logged = True
                    log.warning(
                        "redis sink: waiting for %s to write %d buffered messages of offline "
                        "cameras (the run ends when they are written; stop it to give up)",
                        self._display_url(),
                        kept,
                    )
            now = time.monotonic()
            if unbounded:
                bounded_since = None
            elif bounded_since is None:
                bounded_since = now
            elif now - bounded_since >= self.config.close_timeout_s:
                break
            time.sleep(0.02)
        with self._cond:
            self._stop.set()
            self._cond.notify()
            self._room.notify_all()
        thread.join(2 * self.config.socket_timeout_s + 1.0)
        with self._cond:
            left = self._buffer.messages
            if left and not thread.is_alive():
                self._count_lost(self._buffer.clear(), "gave_up" if self._gave_up else "shutdown")
            lost, offline = self.lost_results, self.lost_offline_results
            reasons = ", ".join(f"{k} {n}" for k, n in self.dropped.items() if n)
        if left or lost:
            (log.error if offline else log.warning)(
                "redis sink closed: %d results (%d of offline cameras) not written to %s in "
                "this run; messages dropped: %s (left at close: %d; %s)",
                lost,
                offline,
                self._display_url(),
                reasons or "none",
                left,
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
                "lost_results": self.lost_results,
                "lost_offline_results": self.lost_offline_results,
                "held_results": self._buffer.held_results,
                "held_offline_results": self._buffer.held_kept_results,
                "holding": self._holding,
                "gave_up": self._gave_up,
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
        """Waits until a batch is due (full, or its oldest entry waited flush_interval_ms, or
        closing); returns None once `close()` stops the flusher."""
        interval_s = self.config.flush_interval_ms / 1000
        with self._cond:
            while True:
                if self._stop.is_set():
                    return None
                oldest = self._buffer.oldest_enqueued_s()
                if oldest is not None:
                    wait_s = oldest + interval_s - time.monotonic()
                    due = wait_s <= 0 or self._buffer.queued >= self.config.max_batch_messages
                    if due or self._closing:
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
                self._count_lost(dropped, "rejected")
            self.aux_errors += len(aux_failures)
            self._room.notify_all()
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
            self._gave_up = self._holding = False
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
            self.last_error = text
            self._check_give_up()
        if first:  # once per outage; the reason now is always in stats()["last_error"]
            log.error("redis sink: %s; buffering (%d messages) and retrying", text, buffered)
        else:
            log.debug("redis sink: still failing: %s", text)

    def _check_give_up(self) -> None:
        """With the lock held: gives up holding offline results once the outage has lasted
        ``give_up_after_s`` (logged once per outage)."""
        limit = self.config.give_up_after_s
        if limit is None or self._gave_up or self._down_since is None:
            return
        down_s = time.monotonic() - self._down_since
        if down_s < limit:
            return
        self._gave_up = True
        self._room.notify_all()
        log.error(
            "redis sink: %s unreachable for %.0f s (give_up_after_s=%g): results of offline "
            "cameras are no longer held; %d buffered messages wait for it, and what is lost "
            "is counted (the run will exit non-zero)",
            self._display_url(),
            down_s,
            limit,
            self._buffer.messages,
        )

    def _count_lost(self, items: list[Item], reason: str) -> None:
        """With the lock held: ``items`` will never be written."""
        self.dropped[reason] += len(items)
        self.lost_results += sum(i.result for i in items)
        self.lost_offline_results += sum(i.result and i.keep for i in items)

    def _sleep_backoff(self, backoff_s: float) -> None:
        self._stop.wait(backoff_s * random.uniform(0.8, 1.2))

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
