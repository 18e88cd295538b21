"""Per-camera in-order release by sequence number (pure: no I/O, no clock).

Several preprocess workers (and, across hosts, several detect stages) finish frames out of
order; the tracker needs them in order. Decode numbers the frames it forwards contiguously
per camera (``seq``), so the next expected ``seq`` is always known:

* an item whose ``seq`` is the next one is released at once, with every held successor;
* a tombstone (a frame dropped upstream, `DropMsg`) fills its gap without releasing anything
  for itself, so a drop never makes the reorderer wait;
* with ``timeout_s`` set (realtime), a gap older than that is skipped: what is held is released
  and the missing ``seq`` counted as lost; a late arrival for a skipped ``seq`` is discarded
  (counted) rather than sent out of order. Offline (``timeout_s=None``) it waits for ever —
  nothing is lost there, every ``seq`` arrives or is tombstoned;
* a camera first seen with a ``seq`` below ``start_window`` starts at 0 (its first frames may
  arrive out of order); one first seen further in (this stage restarted mid-stream) starts
  where it is;
* ``seq`` 0 after a camera has advanced means decode restarted (its numbering starts again):
  held items are released and the camera starts over.

An end marker (`end`) records the camera's last ``seq``; `finished` then says when every frame
up to it has been released.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Camera(Generic[T]):
    next_seq: int
    held: dict[int, tuple[T | None, float]] = field(default_factory=dict)  # seq -> (item, t)
    gap_since: float | None = None  # monotonic time the current gap was first seen
    last_seq: int | None = None  # from the end marker


@dataclass
class ReorderStats:
    released: int = 0
    tombstones: int = 0
    skipped: int = 0  # seqs given up on (timeout)
    late: int = 0  # arrivals for a seq already released or skipped
    restarts: int = 0


class Reorderer(Generic[T]):
    """Release ``(camera, seq, item)`` in ``seq`` order per camera."""

    def __init__(self, timeout_s: float | None = None, start_window: int = 256) -> None:
        if timeout_s is not None and timeout_s < 0:
            raise ValueError(f"timeout_s must be >= 0 or None, got {timeout_s}")
        self.timeout_s = timeout_s
        self.start_window = start_window
        self._cams: dict[str, _Camera[T]] = {}
        self.stats = ReorderStats()

    def held(self, camera_id: str | None = None) -> int:
        cams = self._cams.values() if camera_id is None else [self._cams.get(camera_id)]
        return sum(len(c.held) for c in cams if c is not None)

    def push(self, camera_id: str, seq: int, item: T | None, now_s: float) -> list[T]:
        """Add an item (``None``: tombstone); returns the items now releasable, in order."""
        cam = self._cams.get(camera_id)
        if cam is None:
            start = 0 if seq < self.start_window else seq
            cam = self._cams[camera_id] = _Camera(next_seq=start)
        elif seq == 0 and cam.next_seq > 0 and 0 not in cam.held:
            out = self._flush(cam)
            self.stats.restarts += 1
            self._cams[camera_id] = _Camera(next_seq=0)
            return out + self.push(camera_id, seq, item, now_s)
        if seq < cam.next_seq or seq in cam.held:
            self.stats.late += 1
            return []
        if item is None:
            self.stats.tombstones += 1
        cam.held[seq] = (item, now_s)
        out = self._release(cam)
        if cam.held and cam.gap_since is None:
            cam.gap_since = now_s
        return out

    def expire(self, now_s: float) -> list[T]:
        """Skip gaps older than the timeout (realtime); returns what that releases."""
        if self.timeout_s is None:
            return []
        out: list[T] = []
        for cam in self._cams.values():
            if cam.held and cam.gap_since is not None and now_s - cam.gap_since > self.timeout_s:
                first = min(cam.held)
                self.stats.skipped += first - cam.next_seq
                cam.next_seq = first
                out.extend(self._release(cam))
                cam.gap_since = now_s if cam.held else None
        return out

    def drain(self) -> list[T]:
        """Everything held, in seq order per camera, gaps skipped (shutdown)."""
        out: list[T] = []
        for cam in self._cams.values():
            out += self._flush(cam)
            if cam.held:
                cam.next_seq = max(cam.held) + 1
            cam.held.clear()
            cam.gap_since = None
        return out

    def end(self, camera_id: str, last_seq: int) -> None:
        cam = self._cams.get(camera_id)
        if cam is None:
            cam = self._cams[camera_id] = _Camera(next_seq=0)
        cam.last_seq = last_seq

    def finished(self, camera_id: str) -> bool:
        """True once the camera's end marker was seen and everything up to it released."""
        cam = self._cams.get(camera_id)
        return cam is not None and cam.last_seq is not None and cam.next_seq > cam.last_seq

    def _release(self, cam: _Camera[T]) -> list[T]:
        out: list[T] = []
        while cam.next_seq in cam.held:
            item, _ = cam.held.pop(cam.next_seq)
            cam.next_seq += 1
            if item is not None:
                out.append(item)
                self.stats.released += 1
        if not cam.held:
            cam.gap_since = None
        elif out or cam.gap_since is None:
            cam.gap_since = min(t for _, t in cam.held.values())
        return out

    def _flush(self, cam: _Camera[T]) -> list[T]:
        out = [item for _, (item, _t) in sorted(cam.held.items()) if item is not None]
        self.stats.released += len(out)
        return out
