"""The sink's outage buffer and its stream entry ids. Not thread-safe: the sink holds a lock.

Entry ids are explicit and deterministic: ``<capture ms>-<frame_id>`` for detections and
``<capture ms>-<n>`` (n = 0, 1, ... within the frame) for track events, fixed when a message
is enqueued. Redis rejects an ``XADD`` whose id is not above the stream's last id, so a flush
retried after a connection broke mid-pipeline cannot write an entry twice: the copy that
already landed is rejected, and the sink confirms it by reading that id back (same
``msg_id`` = duplicate, skipped). Consumers therefore never see duplicates, their read cursor
stays valid across a Redis restart (ids are not the server's clock), and ``XRANGE`` by
capture time works. The alternative, ``*`` ids plus a ``msg_id`` field, would push
deduplication onto every consumer. The price: ids must increase per stream, so when capture
time goes backwards the id is clamped to just above the previous one (``clamped_ids``); the
message keeps its true ``capture_ts``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from stages.sinks.codec import Pending


@dataclass(slots=True)
class Item:
    """One buffered stream entry."""

    pending: Pending
    key: str
    ms: int
    seq_hint: int
    enqueued_s: float
    entry_id: str = ""
    nbytes: int = field(default=0)
    result: bool = False  # a frame's detections message (not a track event)
    keep: bool = False  # of an offline camera: never dropped to make room (see OutageBuffer)


class EntryIds:
    """Assigns strictly increasing ``ms-seq`` ids per stream key."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self.clamped = 0

    def assign(self, item: Item) -> None:
        ms, seq = item.ms, item.seq_hint
        last = self._last.get(item.key)
        if last is not None and (ms, seq) <= last:
            ms, seq = last[0], last[1] + 1
            self.clamped += 1
        self._last[item.key] = (ms, seq)
        item.entry_id = f"{ms}-{seq}"

    def restart_above(self, key: str, last_id: tuple[int, int]) -> None:
        """The server holds ids up to ``last_id`` for ``key``: assign above it from now on."""
        self._last[key] = max(self._last.get(key, (0, 0)), last_id)


def parse_id(entry_id: str | bytes) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class OutageBuffer:
    """FIFO bounded by messages and bytes, counting queued, retried and in-flight entries.

    When a new entry does not fit, the oldest *fresh* entries are dropped: never the batch in
    flight, and never entries a failed flush had sent (``retry``): their fate is unknown (the
    server may have written them before the connection broke), so dropping them would make
    ``dropped`` count messages a consumer actually got. If no fresh entry is left to drop, the
    new entry is dropped instead. Either way the caller gets the dropped entries to count, and
    a dropped entry is one that never reached Redis.

    Entries marked ``keep`` (results of offline cameras) are never dropped to make room:
    `make_room` skips them, and the caller of `put` for a kept entry first waits until `full`
    is false (the sink holds the pipeline instead of losing results). ``put(...,
    evict_kept=True)`` lifts that protection (the sink gave up waiting). ``held`` /
    ``held_results`` / ``held_kept_results`` count what the buffer holds (queued, retried, in
    flight): messages, frames' detections messages, and those of kept entries.
    """

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.retry: deque[Item] = deque()
        self.queue: deque[Item] = deque()
        self.queued_bytes = 0
        self.inflight_messages = 0
        self.inflight_bytes = 0
        self.queue_kept = 0  # kept entries in ``queue`` (not in retry or in flight)
        self.held_kept = 0
        self.held_results = 0
        self.held_kept_results = 0

    @property
    def queued(self) -> int:
        """Entries waiting for a flush (retried ones first)."""
        return len(self.retry) + len(self.queue)

    @property
    def messages(self) -> int:
        return self.queued + self.inflight_messages

    @property
    def nbytes(self) -> int:
        return self.queued_bytes + self.inflight_bytes

    def full(self, item: Item) -> bool:
        """Whether ``item`` does not fit now. An empty buffer takes a kept entry of any size
        (waiting for room could never end)."""
        if item.keep and self.messages == 0:
            return False
        return self.messages + 1 > self.max_messages or self.nbytes + item.nbytes > self.max_bytes

    def make_room(self, item: Item, evict_kept: bool = False) -> list[Item]:
        """Drops the oldest fresh entries (not kept ones, unless ``evict_kept``) until ``item``
        fits or none is left to drop; returns the dropped ones (already removed)."""
        dropped: list[Item] = []
        while self.full(item):
            old = self._evict(evict_kept)
            if old is None:
                break
            dropped.append(old)
        return dropped

    def put(self, item: Item, evict_kept: bool = False) -> list[Item]:
        """Appends ``item``; returns what was dropped to make room (maybe ``[item]``)."""
        dropped = self.make_room(item, evict_kept)
        if self.full(item):
            dropped.append(item)
            return dropped
        self.append(item)
        return dropped

    def append(self, item: Item) -> None:
        """Appends ``item`` without checking the bounds (the caller checked `full`)."""
        self.queue.append(item)
        self.queued_bytes += item.nbytes
        self.queue_kept += item.keep
        self._tally(item, 1)

    def take(self, n: int) -> list[Item]:
        """Moves up to ``n`` entries from the head (retried entries first) into flight."""
        batch: list[Item] = []
        for source in (self.retry, self.queue):
            while source and len(batch) < n:
                item = source.popleft()
                if source is self.queue:
                    self.queue_kept -= item.keep
                batch.append(item)
        nbytes = sum(i.nbytes for i in batch)
        self.queued_bytes -= nbytes
        self.inflight_messages += len(batch)
        self.inflight_bytes += nbytes
        return batch

    def done(self, batch: list[Item]) -> None:
        """The flight of ``batch`` ended (written, duplicate or dropped)."""
        self.inflight_messages -= len(batch)
        self.inflight_bytes -= sum(i.nbytes for i in batch)
        for item in batch:
            self._tally(item, -1)

    def requeue(self, batch: list[Item]) -> None:
        """Puts in-flight entries back at the head, in their order, to be retried first."""
        self.inflight_messages -= len(batch)
        self.inflight_bytes -= sum(i.nbytes for i in batch)
        self.retry.extendleft(reversed(batch))
        self.queued_bytes += sum(i.nbytes for i in batch)

    def clear(self) -> list[Item]:
        """Empties the buffer (nothing may be in flight); returns what it held."""
        items = [*self.retry, *self.queue]
        self.retry.clear()
        self.queue.clear()
        self.queued_bytes = self.queue_kept = 0
        for item in items:
            self._tally(item, -1)
        return items

    def oldest_enqueued_s(self) -> float | None:
        head = self.retry or self.queue
        return head[0].enqueued_s if head else None

    def _evict(self, evict_kept: bool) -> Item | None:
        if not self.queue:
            return None
        if evict_kept or not self.queue_kept:
            old = self.queue.popleft()
        elif self.queue_kept == len(self.queue):
            return None
        else:  # the oldest entry that is not kept
            at = next(i for i, it in enumerate(self.queue) if not it.keep)
            old = self.queue[at]
            del self.queue[at]
        self.queued_bytes -= old.nbytes
        self.queue_kept -= old.keep
        self._tally(old, -1)
        return old

    def _tally(self, item: Item, sign: int) -> None:
        self.held_kept += sign * item.keep
        self.held_results += sign * item.result
        self.held_kept_results += sign * (item.result and item.keep)
