"""Sink stage adapter: `TrackedMsg` → `FrameResult` → every configured sink (Redis, JSON lines).

Capture-to-publish latency is observed here, per camera, when a frame is handed to the sinks
(the Redis sink writes asynchronously: at once, or within ``flush_interval_ms`` when set).

Nothing is dropped here: every result that reaches this stage was computed, and is published,
however old it is (frames are skipped ahead of detect, never after).

Offline runs end here: when every expected camera's `EndMsg` has arrived (the track stage
sends it after the camera's last frame), the sinks are flushed and closed — the Redis sink
waits for an outage to end so that no offline result is lost — and ``on_done`` is called; the
supervisor then stops the pipeline. Results a sink could not write anyway (the run was stopped
during an outage, or ``give_up_after_s`` expired) are in `stats` (``unwritten``); the run then
exits with `pipeline.procs.EXIT_RESULTS_LOST`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable, Sequence
from typing import Any, Protocol

from pipeline.messages import EndMsg, Message, TrackedMsg
from pipeline.payloads import FrameResult

log = logging.getLogger("edgestream.sink")

STAGE = "sink"


class ResultSink(Protocol):
    def setup(self) -> None: ...

    def process(self, frame: FrameResult) -> None: ...

    def close(self) -> None: ...


class SinkStage:
    """``setup() / process(msg) / close()`` fanning each frame out to ``sinks``.

    expected_cameras: the file cameras whose end finishes an offline run (empty: never ends).
    on_published(camera, latency_s, stage_ts): after each frame was handed to the sinks;
        latency_s is capture → publish, or receive → publish for ``file_cameras``.
    on_done(): once every expected camera ended and the sinks were flushed.
    file_cameras: cameras whose capture time is a file's media time (open time + pts): read
        offline faster or slower than real time, "capture to publish" would measure how far
        decode ran ahead, not how long a frame took; theirs is measured from when decode
        handed the frame over.
    enrich(frame): what every frame goes through before the sinks see it (zone and line
        analytics, `stages.analytics.ZoneAnalytics.process`); None: nothing.
    """

    def __init__(
        self,
        sinks: Sequence[ResultSink],
        expected_cameras: Iterable[str] = (),
        on_published: Callable[[str, float, dict[str, float]], None] | None = None,
        on_done: Callable[[], None] | None = None,
        file_cameras: Container[str] = (),
        enrich: Callable[[FrameResult], FrameResult] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.enrich = enrich
        self.file_cameras = file_cameras
        self.expected = frozenset(expected_cameras)
        self.ended: set[str] = set()
        self.on_published = on_published
        self.on_done = on_done
        self.published = 0
        self.done = False
        self._closed = False

    def setup(self) -> None:
        for s in self.sinks:
            s.setup()

    def process(self, msg: Message) -> Iterable[Message]:
        if isinstance(msg, TrackedMsg):
            frame = msg.to_frame_result()
            if self.enrich is not None:
                frame = self.enrich(frame)
            for s in self.sinks:
                s.process(frame)
            self.published += 1
            if self.on_published is not None:
                start = msg.capture_ts
                if msg.camera_id in self.file_cameras:
                    start = msg.stage_ts.get("decode", start)
                self.on_published(msg.camera_id, time.time() - start, msg.stage_ts)
        elif isinstance(msg, EndMsg):
            self.ended.add(msg.camera_id)
            what = "end of file" if msg.camera_id in self.file_cameras else "camera ended"
            log.info("camera %s: %s (last seq %d) published", msg.camera_id, what, msg.last_seq)
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
        """``published``, each sink's own stats under its class name, and per sink (by its
        ``name``) the results not written: ``unwritten`` (lost, or still buffered: lost too if
        the stage ends now) and ``unwritten_offline`` (those of offline cameras)."""
        out: dict[str, Any] = {"published": self.published}
        unwritten: dict[str, int] = {}
        unwritten_offline: dict[str, int] = {}
        for s in self.sinks:
            fn = getattr(s, "stats", None)
            if not callable(fn):
                continue
            st = fn()
            out[type(s).__name__] = st
            if "lost_results" in st:
                name = str(getattr(s, "name", type(s).__name__))
                unwritten[name] = int(st["lost_results"]) + int(st.get("held_results", 0))
                unwritten_offline[name] = int(st.get("lost_offline_results", 0)) + int(
                    st.get("held_offline_results", 0)
                )
        out["unwritten"] = unwritten
        out["unwritten_offline"] = unwritten_offline
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
