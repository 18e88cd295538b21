"""Deadline-aware, per-camera-fair batching policy of the detect stage (pure: no I/O, no clock).

A batch leaves when it is full (``max_batch`` items waiting) or ``max_wait_ms`` after the oldest
waiting item arrived, whichever comes first. Which items go into a batch when more are waiting
than fit: first the oldest item of every camera (oldest cameras first), so a camera with a
backlog can never starve the others; then, if room is left, further items of cameras that are
behind (more than one item queued), oldest first. Items of one camera always leave in arrival
order.

Realtime items (``droppable=True``) older than ``max_frame_age_ms`` (capture to now) are
dropped instead of batched: running the model on a frame nobody will look at only delays the
next one. Offline items are never dropped.

The trade-off of ``max_wait_ms``: longer waits fill bigger batches (higher GPU throughput) at
the cost of up to that much added latency on every frame when the cameras are few or slow.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Waiting(Generic[T]):
    """One queued item: ``arrival_s`` on the monotonic clock, ``capture_ts`` unix seconds."""

    camera_id: str
    item: T
    arrival_s: float
    capture_ts: float
    droppable: bool


@dataclass(frozen=True)
class Taken(Generic[T]):
    """What `BatchPolicy.take` returns: the batch (may be empty) and the items dropped stale."""

    batch: list[T]
    stale: list[T]


class BatchPolicy(Generic[T]):
    """Queue items per camera and decide when a batch leaves and what it holds."""

    def __init__(
        self, max_batch: int, max_wait_ms: float, max_frame_age_ms: float | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_frame_age_ms is not None and max_frame_age_ms <= 0:
            raise ValueError(f"max_frame_age_ms must be > 0 or None, got {max_frame_age_ms}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.max_age_s = None if max_frame_age_ms is None else max_frame_age_ms / 1e3
        self._queues: dict[str, deque[Waiting[T]]] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(
        self, camera_id: str, item: T, now_s: float, capture_ts: float, droppable: bool = False
    ) -> None:
        q = self._queues.get(camera_id)
        if q is None:
            q = self._queues[camera_id] = deque()
        q.append(Waiting(camera_id, item, now_s, capture_ts, droppable))
        self._count += 1

    def deadline(self) -> float | None:
        """Monotonic time at which the oldest waiting item's batch must leave (None: empty)."""
        heads = [q[0].arrival_s for q in self._queues.values() if q]
        return min(heads) + self.max_wait_s if heads else None

    def ready(self, now_s: float) -> bool:
        d = self.deadline()
        return d is not None and (self._count >= self.max_batch or now_s >= d)

    def take(self, now_s: float, wall_now: float, force: bool = False) -> Taken[T]:
        """The next batch if one is due (or any waiting items with ``force``), and stale drops.

        Stale items are removed whether or not a batch is due, so they are reported promptly.
        """
        stale = self._drop_stale(wall_now)
        if not (force and self._count) and not self.ready(now_s):
            return Taken([], stale)
        batch: list[T] = []
        # pass 1: the oldest item of every camera, cameras with the oldest heads first
        for q in sorted((q for q in self._queues.values() if q), key=lambda q: q[0].arrival_s):
            if len(batch) == self.max_batch:
                break
            batch.append(q.popleft().item)
        # pass 2: cameras that are behind fill what is left, oldest first
        while len(batch) < self.max_batch:
            heads = [q for q in self._queues.values() if q]
            if not heads:
                break
            batch.append(min(heads, key=lambda q: q[0].arrival_s).popleft().item)
        self._count -= len(batch)
        for cam in [c for c, q in self._queues.items() if not q]:
            del self._queues[cam]
        return Taken(batch, stale)

    def drain(self) -> list[T]:
        """Everything still waiting, in arrival order (for shutdown)."""
        items = sorted((w for q in self._queues.values() for w in q), key=lambda w: w.arrival_s)
        self._queues.clear()
        self._count = 0
        return [w.item for w in items]

    def _drop_stale(self, wall_now: float) -> list[T]:
        if self.max_age_s is None:
            return []
        stale: list[T] = []
        for q in self._queues.values():
            if not any(w.droppable for w in q):
                continue
            keep: list[Waiting[T]] = []
            for w in q:
                if w.droppable and wall_now - w.capture_ts > self.max_age_s:
                    stale.append(w.item)
                else:
                    keep.append(w)
            q.clear()
            q.extend(keep)
        self._count -= len(stale)
        return stale
