"""Deadline-aware, per-camera-fair batching policy of the detect stage (pure: no I/O, no clock).

**Newest frame wins.** Ahead of the model each live camera has ``slots_per_camera`` slots
(default 1). When a frame of a live camera (``droppable=True``) arrives and its slots are full,
the oldest waiting frame of that camera is replaced and returned as ``superseded``. With more
than one slot, a waiting frame older than ``max_frame_age_ms`` is superseded too — but only
by a newer frame of the same camera: the newest frame of a camera is never dropped for age.
So under any overload the model always works on each camera's newest frames, the queue ahead
of it holds at most ``cameras × slots`` live frames, and nothing is dropped for being slow.

Offline items (``droppable=False``: files read with ``realtime: false``) are never replaced or
dropped; they wait in arrival order (the runner's blocking sends bound how many arrive).

**When a batch leaves**: when ``max_batch`` items wait, or ``max_wait_ms`` after the oldest
waiting slot was filled, whichever comes first (a replaced frame hands its slot's waiting time
to its replacement, so a fast camera cannot postpone the deadline forever). It also leaves at
once when it cannot grow: every camera seen so far has all its slots filled with live frames
(and no offline item waits), so a newer frame could only replace a waiting one — at one camera
a frame never waits ``max_wait_ms`` for company that cannot come.

**What it holds**: one item of every camera with one waiting, cameras served longest ago first
(round-robin: with more cameras than ``max_batch``, the ones left out go first next time); then,
if room is left, further items of cameras that are behind (offline backlogs, or more than one
slot), oldest first. Items of one camera always leave in arrival order.

The trade-off of ``max_wait_ms``: longer waits fill bigger batches (higher GPU throughput) at
the cost of up to that much added latency on every frame when the cameras are few or slow.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Waiting(Generic[T]):
    """One queued item: ``arrival_s`` on the monotonic clock (when its slot was filled),
    ``capture_ts`` unix seconds."""

    camera_id: str
    item: T
    arrival_s: float
    capture_ts: float
    droppable: bool


@dataclass(frozen=True)
class Taken(Generic[T]):
    """What `BatchPolicy.take` returns: the batch (may be empty) and the items superseded for
    age by a newer frame of their camera (only with ``slots_per_camera`` > 1)."""

    batch: list[T]
    superseded: list[T]


class BatchPolicy(Generic[T]):
    """Queue items per camera and decide when a batch leaves and what it holds."""

    def __init__(
        self,
        max_batch: int,
        max_wait_ms: float,
        slots_per_camera: int = 1,
        max_frame_age_ms: float | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if slots_per_camera < 1:
            raise ValueError(f"slots_per_camera must be >= 1, got {slots_per_camera}")
        if max_frame_age_ms is not None and max_frame_age_ms <= 0:
            raise ValueError(f"max_frame_age_ms must be > 0 or None, got {max_frame_age_ms}")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self.slots = slots_per_camera
        self.max_age_s = None if max_frame_age_ms is None else max_frame_age_ms / 1e3
        self._queues: dict[str, deque[Waiting[T]]] = {}
        self._served: dict[str, int] = {}  # camera -> when it was last served (a serial number)
        self._serial = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(
        self, camera_id: str, item: T, now_s: float, capture_ts: float, droppable: bool = False
    ) -> list[T]:
        """Queue ``item``; returns the items of this camera it superseded (oldest first)."""
        q = self._queues.get(camera_id)
        if q is None:
            q = self._queues[camera_id] = deque()
        q.append(Waiting(camera_id, item, now_s, capture_ts, droppable))
        self._count += 1
        if not droppable:
            return []
        superseded: list[T] = []
        while sum(w.droppable for w in q) > self.slots:
            superseded.append(self._remove_oldest_droppable(q))
        return superseded

    def deadline(self) -> float | None:
        """Monotonic time at which the next batch must leave (None: empty). A full batch is
        due at once (the oldest slot's time, already past)."""
        heads = [q[0].arrival_s for q in self._queues.values() if q]
        if not heads:
            return None
        full = self._count >= self.max_batch or self._cannot_grow()
        return min(heads) + (0.0 if full else self.max_wait_s)

    def ready(self, now_s: float) -> bool:
        d = self.deadline()
        return d is not None and now_s >= d

    def take(self, now_s: float, wall_now: float, force: bool = False) -> Taken[T]:
        """The next batch if one is due (or any waiting items with ``force``), and the items
        superseded for age (removed whether or not a batch is due, so they are reported
        promptly)."""
        superseded = self._supersede_old(wall_now)
        if not (force and self._count) and not self.ready(now_s):
            return Taken([], superseded)
        batch: list[T] = []
        # pass 1: one item of every waiting camera, the camera served longest ago first
        waiting = [(cam, q) for cam, q in self._queues.items() if q]
        waiting.sort(key=lambda cq: (self._served.get(cq[0], 0), cq[1][0].arrival_s))
        for cam, q in waiting[: self.max_batch]:
            batch.append(q.popleft().item)
            self._serial += 1
            self._served[cam] = self._serial
        # pass 2: cameras that are behind fill what is left, oldest first
        while len(batch) < self.max_batch:
            heads = [q for q in self._queues.values() if q]
            if not heads:
                break
            batch.append(min(heads, key=lambda q: q[0].arrival_s).popleft().item)
        self._count -= len(batch)
        for cam in [c for c, q in self._queues.items() if not q]:
            del self._queues[cam]
        return Taken(batch, superseded)

    def drain(self) -> list[T]:
        """Everything still waiting, in arrival order (for shutdown)."""
        items = sorted((w for q in self._queues.values() for w in q), key=lambda w: w.arrival_s)
        self._queues.clear()
        self._count = 0
        return [w.item for w in items]

    def forget(self, camera_id: str) -> None:
        """Drop the round-robin memory of a camera that is gone (its items must be taken)."""
        self._served.pop(camera_id, None)

    # ------------------------------------------------------------------------------ internals
    def _cannot_grow(self) -> bool:
        """Every camera seen (waiting now, or served and not forgotten) has ``slots`` live
        frames waiting and nothing offline waits: no arrival can add to the batch."""
        if self.max_wait_s == 0.0:
            return False  # due at once anyway
        for cam in self._served.keys() | self._queues.keys():
            q = self._queues.get(cam)
            if q is None or len(q) < self.slots or not all(w.droppable for w in q):
                return False
        return True

    def _remove_oldest_droppable(self, q: deque[Waiting[T]]) -> T:
        i = next(i for i, w in enumerate(q) if w.droppable)
        old = q[i]
        del q[i]
        self._count -= 1
        if i == 0 and q:  # the slot keeps waiting since it was first filled
            q[0] = replace(q[0], arrival_s=min(q[0].arrival_s, old.arrival_s))
        return old.item

    def _supersede_old(self, wall_now: float) -> list[T]:
        if self.max_age_s is None or self.slots == 1:
            return []
        out: list[T] = []
        for q in self._queues.values():
            while True:
                live = [w for w in q if w.droppable]
                if len(live) < 2 or wall_now - live[0].capture_ts <= self.max_age_s:
                    break
                out.append(self._remove_oldest_droppable(q))
        return out
