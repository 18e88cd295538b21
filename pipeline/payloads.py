"""The wire payload types: what the track stage publishes and every sink receives.

`FrameResult` is one processed frame of one camera: its tracked objects (`TrackedObject`, boxes
in source-image pixels) and the track lifecycle events (`TrackLifecycleEvent`) the tracker
raised on it, so one message per frame is all the runtime hands a sink. Every field is checked
in ``__post_init__``: a sink can then encode and publish without ever raising on bad data,
which is what keeps ``process()`` crash-free. `LetterboxMeta` says how a source image was
mapped into the model input (preprocess → detect).

These live in the runtime, not in a stage: `pipeline.messages` carries them between processes,
and `pipeline/` imports nothing from `stages/` (see `pipeline`). The JSON documents built from
them (``to_json_dict``) follow the schemas in ``stages/sinks/schemas/``; the byte encoding used
on the wire lives in `stages.sinks.codec`; the conversion from the tracker's own types in
`stages.sinks.messages`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SCHEMA_VERSION = "1.1"
"""``major.minor`` of both documents. A minor bump only adds optional fields; a consumer
written for 1.x keeps working. A major bump gets new schema files (``*.v2.schema.json``)."""

DETECTIONS_TYPE = "detections"
TRACK_EVENT_TYPE = "track_event"
EVENT_KINDS = ("new", "lost", "recovered", "removed")
ANALYTICS_EVENT_TYPE = "analytics_event"
ANALYTICS_EVENT_KINDS = ("zone_enter", "zone_exit", "line_cross")
LINE_DIRECTIONS = ("in", "out")


def _finite(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


def _check_camera(camera: str) -> None:
    if not isinstance(camera, str) or not camera or len(camera) > 200:
        raise ValueError(f"camera must be a non-empty string of at most 200 chars: {camera!r}")
    if any(c.isspace() or not c.isprintable() for c in camera):
        raise ValueError(f"camera id must not contain spaces or control characters: {camera!r}")


@dataclass(frozen=True)
class TrackedObject:
    """One object in one frame.

    track_id: the tracker's id (unique per camera, never reused), or None for an untracked
        detection (tracking disabled, or a detection no track was confirmed for).
    class_id / class_name: the model's class index and its name.
    score: detection confidence in [0, 1].
    box: ``(x1, y1, x2, y2)`` in source-image pixels (not the model's letterboxed input).
    """

    track_id: int | None
    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]

    def __post_init__(self) -> None:
        if self.track_id is not None and (isinstance(self.track_id, bool) or self.track_id < 0):
            raise ValueError(f"track_id must be None or >= 0, got {self.track_id!r}")
        if self.class_id < 0:
            raise ValueError(f"class_id must be >= 0, got {self.class_id}")
        if not (0.0 <= _finite("score", self.score) <= 1.0):
            raise ValueError(f"score must be in [0, 1], got {self.score}")
        if len(self.box) != 4:
            raise ValueError(f"box must be (x1, y1, x2, y2), got {self.box!r}")
        x1, y1, x2, y2 = (_finite("box", v) for v in self.box)
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box must have x2 >= x1 and y2 >= y1, got {self.box!r}")
        object.__setattr__(self, "box", (x1, y1, x2, y2))

    def to_json_dict(self, width: int, height: int) -> dict[str, Any]:
        x1, y1, x2, y2 = self.box
        return {
            "track_id": None if self.track_id is None else int(self.track_id),
            "class_id": int(self.class_id),
            "class_name": self.class_name,
            "score": round(float(self.score), 4),
            "box": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
            "box_norm": [round(v, 5) for v in box_norm(self.box, width, height)],
        }


def box_norm(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[float, float, float, float]:
    """``box`` divided by the image size, clipped to 0..1: a tracked (Kalman) box may reach
    past the image edge, the published ``box`` keeps those pixels, ``box_norm`` stays in the
    schema's range."""
    x1, y1, x2, y2 = box
    return (
        min(max(x1 / width, 0.0), 1.0),
        min(max(y1 / height, 0.0), 1.0),
        min(max(x2 / width, 0.0), 1.0),
        min(max(y2 / height, 0.0), 1.0),
    )


@dataclass(frozen=True)
class TrackLifecycleEvent:
    """A track's lifecycle change, as the sinks publish it (see `track_events_from`).

    kind: ``new`` (confirmed, id assigned), ``lost`` (no match this frame; still predicted),
        ``recovered`` (matched again, same id), ``removed`` (lost too long; the id is retired).
    event_ts: capture time (unix s) of the frame where it happened; first_seen_ts /
        last_seen_ts: capture times of the track's first and latest matched detections.
    """

    kind: str
    track_id: int
    class_id: int
    class_name: str
    event_ts: float
    first_seen_ts: float
    last_seen_ts: float

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"event kind must be one of {EVENT_KINDS}, got {self.kind!r}")
        if self.track_id < 0 or self.class_id < 0:
            raise ValueError("track_id and class_id must be >= 0")
        for name in ("event_ts", "first_seen_ts", "last_seen_ts"):
            _finite(name, getattr(self, name))


@dataclass(frozen=True)
class AnalyticsEvent:
    """A track entered or left a zone, or crossed a line (`stages.analytics`; schema 1.1).

    kind: ``zone_enter``, ``zone_exit`` or ``line_cross``; region: the zone or line id.
    event_ts: capture time (unix s) of the first frame on the new side (the moment of the
        crossing, give or take a frame; the event itself is raised once hysteresis confirmed
        it, up to ``min_frames`` later).
    direction: ``in`` or ``out`` (line_cross only; see `pipeline.config.zones.LineConfig`).
    dwell_s / entered_ts: zone_exit only: seconds inside, and the matching enter's event_ts.
    """

    kind: str
    region: str
    track_id: int
    class_id: int
    class_name: str
    event_ts: float
    direction: str | None = None
    dwell_s: float | None = None
    entered_ts: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ANALYTICS_EVENT_KINDS:
            raise ValueError(f"analytics event kind must be one of {ANALYTICS_EVENT_KINDS}, "
                             f"got {self.kind!r}")  # fmt: skip
        if not self.region or any(c.isspace() or c == ":" for c in self.region):
            raise ValueError(f"region id must be non-empty, without spaces or ':': {self.region!r}")
        if self.track_id < 0 or self.class_id < 0:
            raise ValueError("track_id and class_id must be >= 0")
        _finite("event_ts", self.event_ts)
        if (self.kind == "line_cross") != (self.direction is not None):
            raise ValueError("direction is set on line_cross events, and only there")
        if self.direction is not None and self.direction not in LINE_DIRECTIONS:
            raise ValueError(f"direction must be one of {LINE_DIRECTIONS}, got {self.direction!r}")
        if (self.kind == "zone_exit") != (self.dwell_s is not None):
            raise ValueError("dwell_s is set on zone_exit events, and only there")
        if self.dwell_s is not None and not _finite("dwell_s", self.dwell_s) >= 0:
            raise ValueError(f"dwell_s must be >= 0, got {self.dwell_s}")
        if self.entered_ts is not None:
            _finite("entered_ts", self.entered_ts)

    @property
    def region_key(self) -> str:
        """``zone`` or ``line``: the name of the region field in the document."""
        return "line" if self.kind == "line_cross" else "zone"


def class_name(class_names: Sequence[str] | Mapping[int, str], class_id: int) -> str:
    """The name of ``class_id``, or ``class_<id>`` when it has none (as the detector does)."""
    try:
        return str(class_names[class_id])
    except (IndexError, KeyError):
        return f"class_{class_id}"


@dataclass(frozen=True)
class FrameResult:
    """Everything a sink publishes about one frame of one camera.

    camera: camera id (no spaces); it names the Redis keys, so keep it short and stable.
    frame_id: monotonic per camera (the id consumers deduplicate on: ``camera:frame_id``).
    capture_ts: capture time, unix seconds (RTCP/NTP when the stream gives it).
    width / height: source image size in pixels; boxes are in that space.
    objects: the frame's objects (a list is accepted and stored as a tuple).
    stage_ts: unix-second timestamp at which each stage finished with the frame, in pipeline
        order (e.g. ``{"decode": ..., "detect": ..., "track": ...}``); published as latencies
        from capture.
    events: the track lifecycle events raised on this frame (`track_events_from`).
    analytics_events: zone and line events raised on this frame (`stages.analytics`).
    zones / lines: live counts of the camera's zones and lines (empty: it has none), as
        published (``{zone: {"occupancy": n, "by_class": {name: n}}}``,
        ``{line: {"in": n, "out": n, "by_class": {name: {"in": n, "out": n}}}}``; line
        counts are totals since the sink started).
    """

    camera: str
    frame_id: int
    capture_ts: float
    width: int
    height: int
    objects: Sequence[TrackedObject] = ()
    stage_ts: Mapping[str, float] = field(default_factory=dict)
    events: Sequence[TrackLifecycleEvent] = ()
    analytics_events: Sequence[AnalyticsEvent] = ()
    zones: Mapping[str, Any] = field(default_factory=dict)
    lines: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_camera(self.camera)
        if isinstance(self.frame_id, bool) or int(self.frame_id) != self.frame_id:
            raise ValueError(f"frame_id must be an integer, got {self.frame_id!r}")
        if self.frame_id < 0:
            raise ValueError(f"frame_id must be >= 0, got {self.frame_id}")
        if _finite("capture_ts", self.capture_ts) <= 0:
            raise ValueError(f"capture_ts must be unix seconds > 0, got {self.capture_ts}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"width and height must be > 0, got {self.width}x{self.height}")
        for name, ts in self.stage_ts.items():
            _finite(f"stage_ts[{name!r}]", ts)
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "events", tuple(self.events))
        for o in self.objects:
            if not isinstance(o, TrackedObject):
                raise ValueError(f"objects must be TrackedObject, got {type(o).__name__}")
        for e in self.events:
            if not isinstance(e, TrackLifecycleEvent):
                raise ValueError(f"events must be TrackLifecycleEvent, got {type(e).__name__}")
        object.__setattr__(self, "analytics_events", tuple(self.analytics_events))
        for a in self.analytics_events:
            if not isinstance(a, AnalyticsEvent):
                raise ValueError(f"analytics_events must be AnalyticsEvent, got {type(a).__name__}")

    @property
    def msg_id(self) -> str:
        return f"{self.camera}:{self.frame_id}"

    def to_json_dict(self, publish_ts: float) -> dict[str, Any]:
        """The detections document (``schemas/detections.v1.schema.json``)."""
        counts: dict[str, Any] = {}
        if self.zones:
            counts["zones"] = self.zones
        if self.lines:
            counts["lines"] = self.lines
        return {
            "type": DETECTIONS_TYPE,
            "schema_version": SCHEMA_VERSION,
            "msg_id": self.msg_id,
            "camera": self.camera,
            "frame_id": int(self.frame_id),
            "capture_ts": round(float(self.capture_ts), 6),
            "width": int(self.width),
            "height": int(self.height),
            "objects": [o.to_json_dict(self.width, self.height) for o in self.objects],
            **counts,
            "latency_ms": {
                **{k: round((v - self.capture_ts) * 1e3, 2) for k, v in self.stage_ts.items()},
                "publish": round((publish_ts - self.capture_ts) * 1e3, 2),
            },
            "publish_ts": round(publish_ts, 6),
        }

    def event_json_dicts(self, publish_ts: float) -> list[dict[str, Any]]:
        """One track-event document per event (``schemas/track_event.v1.schema.json``)."""
        return [event_json_dict(self, e, publish_ts) for e in self.events]

    def analytics_json_dicts(self, publish_ts: float) -> list[dict[str, Any]]:
        """One document per zone/line event (``schemas/analytics_event.v1.schema.json``)."""
        return [analytics_json_dict(self, a, publish_ts) for a in self.analytics_events]


def event_msg_id(frame: FrameResult, event: TrackLifecycleEvent) -> str:
    """``camera:frame_id:track_id:kind``: a track has at most one event of a kind per frame."""
    return f"{frame.camera}:{frame.frame_id}:{event.track_id}:{event.kind}"


def event_json_dict(
    frame: FrameResult, event: TrackLifecycleEvent, publish_ts: float
) -> dict[str, Any]:
    return {
        "type": TRACK_EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        "msg_id": event_msg_id(frame, event),
        "camera": frame.camera,
        "frame_id": int(frame.frame_id),
        "kind": event.kind,
        "track_id": int(event.track_id),
        "class_id": int(event.class_id),
        "class_name": event.class_name,
        "event_ts": round(event.event_ts, 6),
        "first_seen_ts": round(event.first_seen_ts, 6),
        "last_seen_ts": round(event.last_seen_ts, 6),
        "publish_ts": round(publish_ts, 6),
    }


def analytics_msg_id(frame: FrameResult, event: AnalyticsEvent) -> str:
    """``camera:frame_id:track_id:kind:region``: unique (one event of a kind per track, region
    and frame)."""
    return f"{frame.camera}:{frame.frame_id}:{event.track_id}:{event.kind}:{event.region}"


def analytics_json_dict(
    frame: FrameResult, event: AnalyticsEvent, publish_ts: float
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "type": ANALYTICS_EVENT_TYPE,
        "schema_version": SCHEMA_VERSION,
        "msg_id": analytics_msg_id(frame, event),
        "camera": frame.camera,
        "frame_id": int(frame.frame_id),
        "kind": event.kind,
        event.region_key: event.region,
        "track_id": int(event.track_id),
        "class_id": int(event.class_id),
        "class_name": event.class_name,
        "event_ts": round(event.event_ts, 6),
    }
    if event.direction is not None:
        doc["direction"] = event.direction
    if event.dwell_s is not None:
        doc["dwell_s"] = round(event.dwell_s, 4)
    if event.entered_ts is not None:
        doc["entered_ts"] = round(event.entered_ts, 6)
    doc["publish_ts"] = round(publish_ts, 6)
    return doc


@dataclass(frozen=True)
class LetterboxMeta:
    """How one source image was mapped into the model input (resize, then centre padding)."""

    src_h: int
    src_w: int
    scale: float  # input px per source px
    pad_top: int
    pad_left: int

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map xyxy boxes from model-input pixels back to source-image pixels.

        Same float32 arithmetic as super-gradients 3.7.1: subtract the padding, then multiply
        by float32(1 / scale) (not divide by scale; the two differ in the last bit). No
        clipping to the image: the reference does not clip either.
        """
        out = boxes.astype(np.float32, copy=True).reshape(-1, 4)
        out[:, [0, 2]] -= self.pad_left
        out[:, [1, 3]] -= self.pad_top
        out *= np.float32(1.0 / self.scale)
        return out
