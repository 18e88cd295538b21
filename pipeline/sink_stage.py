"""Sink stage glue: `TrackedMsg` → `FrameResult` → every configured sink (Redis, JSON lines).

Capture-to-publish latency is observed here, per camera, when a frame is handed to the sinks
(the Redis sink writes asynchronously, within ``flush_interval_ms`` more when Redis is up).

Live cameras: a frame older than ``max_age_s`` when it reaches this stage is dropped (counted,
``DropMsg`` reason ``stale``) instead of published: a sink slower than the cameras then makes
the pipeline drop frames rather than publish ever older ones, so latency stays bounded.

Offline runs end here: when every expected camera's `EndMsg` has arrived (the track stage
sends it after the camera's last frame), the sinks are flushed and closed and ``on_done`` is
called; the supervisor then stops the pipeline and exits 0.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any, Protocol

from pipeline.messages import DropMsg, EndMsg, Message, TrackedMsg
from stages.sinks.messages import FrameResult

log = logging.getLogger("edgestream.sink")

STAGE = "sink"


class ResultSink(Protocol):
    def setup(self) -> None: ...

    def process(self, frame: FrameResult) -> None: ...

    def close(self) -> None: ...


class SinkStage:
    """``setup() / process(msg) / close()`` fanning each frame out to ``sinks``.

    expected_cameras: the file cameras whose end finishes an offline run (empty: never ends).
    on_published(camera, e2e_latency_s, stage_ts): after each frame was handed to the sinks.
    on_done(): once every expected camera ended and the sinks were flushed.
    realtime_cameras / max_age_s: live cameras whose stale frames are dropped (None: never).
    """

    def __init__(
        self,
        sinks: Sequence[ResultSink],
        expected_cameras: Iterable[str] = (),
        on_published: Callable[[str, float, dict[str, float]], None] | None = None,
        on_done: Callable[[], None] | None = None,
        realtime_cameras: Container[str] = (),
        max_age_s: float | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.expected = frozenset(expected_cameras)
        self.ended: set[str] = set()
        self.on_published = on_published
        self.on_done = on_done
        self.realtime = realtime_cameras
        self.max_age_s = max_age_s
        self.stale = 0
        self.published = 0
        self.done = False
        self._closed = False

    def setup(self) -> None:
        for s in self.sinks:
            s.setup()

    def process(self, msg: Message) -> Iterable[Message]:
        if isinstance(msg, TrackedMsg):
            if (
                self.max_age_s is not None
                and msg.camera_id in self.realtime
                and time.time() - msg.capture_ts > self.max_age_s
            ):
                self.stale += 1
                return [DropMsg(msg.camera_id, msg.seq, STAGE, "stale", msg.frame_id)]
            frame = msg.to_frame_result()
            for s in self.sinks:
                s.process(frame)
            self.published += 1
            if self.on_published is not None:
                self.on_published(msg.camera_id, time.time() - msg.capture_ts, msg.stage_ts)
        elif isinstance(msg, EndMsg):
            self.ended.add(msg.camera_id)
            log.info("camera %s: end of file (last seq %d) published", msg.camera_id, msg.last_seq)
            if self.expected and self.expected <= self.ended and not self.done:
                self._close_sinks()
                self.done = True
                log.info("all %d file camera(s) ended: results flushed", len(self.expected))
                if self.on_done is not None:
                    self.on_done()
        return []

    def close(self) -> list[Message]:
        self._close_sinks()
        return []

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"published": self.published, "stale": self.stale}
        for s in self.sinks:
            fn = getattr(s, "stats", None)
            if callable(fn):
                out[type(s).__name__] = fn()
        return out

    def _close_sinks(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self.sinks:
            try:
                s.close()
            except Exception:
                log.exception("sink %s: close failed", type(s).__name__)
