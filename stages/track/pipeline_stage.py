"""Track stage adapter: per-camera reordering by ``seq``, then `stages.track.TrackStage`.

Detections reach this stage out of order (several preprocess workers, batches that mix
cameras); the tracker needs each camera's frames in order. A `pipeline.reorder.Reorderer`
releases them in ``seq`` order: tombstones (`DropMsg`) fill gaps at once, and a gap that stays
open longer than the camera's timeout is skipped (realtime: ``reorder_timeout_ms``; offline: a
long safety timeout, hit only when a stage crashed with frames in flight).

Every detection of a frame is published: those matched by a confirmed track carry its id, the
others ``track_id: null`` (not yet confirmed, or ignored by the tracker as too small or too
weak). So the sink sees exactly the detector's output plus ids — what ``edgestream detect``
prints, frame for frame, when nothing is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.messages import DetectionsMsg, DropMsg, EndMsg, Message, TrackedMsg
from pipeline.reorder import Reorderer
from stages.sinks.messages import track_events_from, tracked_objects
from stages.track.stage import TrackStage, TrackStageConfig

log = logging.getLogger("edgestream.track")

STAGE = "track"


@dataclass(frozen=True)
class OrderedTrackConfig:
    """track: the tracker settings. class_names: names by class id (``class_<id>`` beyond).
    realtime_cameras: cameras whose gaps are skipped after ``reorder_timeout_ms``; the others
    wait up to ``offline_timeout_s`` (a crash upstream lost frames in flight).
    classes: per camera, the class ids it publishes (a camera not named publishes every
    class); the other detections are dropped before the tracker sees them.
    """

    track: TrackStageConfig = field(default_factory=TrackStageConfig)
    class_names: Sequence[str] = ()
    realtime_cameras: Container[str] = field(default_factory=frozenset)
    reorder_timeout_ms: float = 500.0
    offline_timeout_s: float = 60.0
    classes: Mapping[str, frozenset[int]] = field(default_factory=dict)


class OrderedTrackStage:
    """``setup() / process(msg) / tick(now) / close()``: DetectionsMsg in order → TrackedMsg."""

    poll_interval_ms = 20

    def __init__(
        self,
        config: OrderedTrackConfig,
        on_skipped: Callable[[str, int], None] | None = None,
    ) -> None:
        self.config = config
        self.tracker = TrackStage(config.track)
        self.live: Reorderer[DetectionsMsg] = Reorderer(config.reorder_timeout_ms / 1e3)
        self.offline: Reorderer[DetectionsMsg] = Reorderer(config.offline_timeout_s)
        self._ends: dict[str, EndMsg] = {}
        self.on_skipped = on_skipped  # (camera, how many seqs) skipped after a timeout

    def setup(self) -> None:
        self.tracker.setup()

    def _reorderer(self, camera_id: str) -> Reorderer[DetectionsMsg]:
        return self.live if camera_id in self.config.realtime_cameras else self.offline

    def process(self, msg: Message) -> Iterable[Message]:
        now = time.monotonic()
        if isinstance(msg, DetectionsMsg):
            released = self._reorderer(msg.camera_id).push(msg.camera_id, msg.seq, msg, now)
        elif isinstance(msg, DropMsg):
            released = self._reorderer(msg.camera_id).push(msg.camera_id, msg.seq, None, now)
        elif isinstance(msg, EndMsg):
            self._reorderer(msg.camera_id).end(msg.camera_id, msg.last_seq)
            self._ends[msg.camera_id] = msg
            released = []
        else:
            log.warning("track: ignoring unexpected %s", type(msg).__name__)
            return []
        return self._track(released)

    def tick(self, now: float | None = None) -> Iterable[Message]:
        mono = time.monotonic()
        out: list[DetectionsMsg] = []
        for r in (self.live, self.offline):
            before = r.stats.skipped
            out += r.expire(mono)
            if r.stats.skipped != before:
                log.warning("track: skipped %d missing frame(s) after the reorder timeout",
                            r.stats.skipped - before)  # fmt: skip
        return self._track(out)

    def close(self) -> list[Message]:
        """Track what is still held (gaps skipped) so a drained shutdown publishes it."""
        out = self._track(self.live.drain() + self.offline.drain())
        self.tracker.close()
        return out

    def _track(self, released: list[DetectionsMsg]) -> list[Message]:
        out: list[Message] = [self._tracked(d) for d in released]
        for cam, end in list(self._ends.items()):
            if self._reorderer(cam).finished(cam):
                del self._ends[cam]
                self.tracker.drop(cam)  # ended or removed: a re-added camera starts afresh
                out.append(end)
        return out

    def _only_wanted_classes(self, d: DetectionsMsg) -> DetectionsMsg:
        wanted = self.config.classes.get(d.camera_id)
        if wanted is None or not len(d.class_ids):
            return d
        keep = np.isin(d.class_ids, np.fromiter(wanted, np.int64, len(wanted)))
        if keep.all():
            return d
        features = None if d.features is None else d.features[keep]
        return replace(d, boxes=d.boxes[keep], scores=d.scores[keep],
                       class_ids=d.class_ids[keep], features=features)  # fmt: skip

    def _tracked(self, d: DetectionsMsg) -> TrackedMsg:
        d = self._only_wanted_classes(d)
        features = d.features if d.features is not None and d.features.shape[1] else None
        result = self.tracker.tracker(d.camera_id).update(
            d.boxes, d.scores, d.class_ids, d.capture_ts, features
        )
        names = self.config.class_names
        objects = tracked_objects(d.boxes, d.scores, d.class_ids, result.tracks, names)
        return TrackedMsg(
            camera_id=d.camera_id,
            frame_id=d.frame_id,
            seq=d.seq,
            capture_ts=d.capture_ts,
            width=d.width,
            height=d.height,
            objects=objects,
            events=track_events_from(result.events, names),
            stage_ts={**d.stage_ts, STAGE: time.time()},
        )
