"""Per-track state machines for zones and lines, with hysteresis, for one camera.

One `RegionCounter` per configured zone or line keeps, per track id, which side the track's
anchor is confirmed on and the run of observations it has made on the other side since. A run
becomes a side change (an enter, an exit or a crossing) once the anchor is ``min_distance_px``
past the boundary or has stayed there ``min_frames`` frames; one observation back on the
confirmed side ends the run. So a box that wobbles over a line produces no event, and a track
that walks across produces exactly one, stamped with the capture time of its first frame on
the new side.

Observations come only from frames in which the track was matched to a detection; a lost track
keeps its state until the tracker removes it (its ``removed`` lifecycle event), when a zone it
was in is left (``zone_exit`` at its last detection). Tracks silent for ``stale_after_s`` of
capture time are forgotten the same way (a sink restarted mid-track never sees the removal).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.config.zones import LineConfig, ZoneConfig
from pipeline.payloads import AnalyticsEvent, TrackedObject, TrackLifecycleEvent
from stages.analytics.geometry import (
    anchor_points,
    crossing_on_segment,
    line_side,
    polygon_signed_distance,
    scaled,
)


@dataclass
class _Run:
    """Consecutive observations on the other side of the boundary."""

    ts: float  # capture time of the first one
    pos: np.ndarray  # its anchor
    frames: int = 1
    depth: float = 0.0  # farthest distance past the boundary (px)


@dataclass
class _TrackState:
    side: int = 0  # confirmed side: +1 (zone: inside; line: right), -1, 0 unknown (line)
    last_pos: np.ndarray | None = None  # latest anchor on the confirmed side
    last_ts: float = 0.0  # latest observation
    entered_ts: float = 0.0  # zone: event_ts of the enter
    last_inside_ts: float = 0.0  # zone: latest observation inside
    class_id: int = 0
    class_name: str = ""
    run: _Run | None = None


@dataclass
class RegionCounter:
    """One zone or line of one camera. ``process`` takes a frame's tracked objects and
    returns the events they raise; ``occupancy`` / ``crossings`` are the live counts."""

    region: ZoneConfig | LineConfig
    stale_after_s: float = 60.0
    tracks: dict[int, _TrackState] = field(default_factory=dict)
    crossings: Counter[tuple[str, str]] = field(default_factory=Counter)  # (direction, class)
    _size: tuple[int, int] = (0, 0)
    _points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    @property
    def is_zone(self) -> bool:
        return isinstance(self.region, ZoneConfig)

    def _geometry(self, width: int, height: int) -> np.ndarray:
        if self._size != (width, height):
            self._points = scaled(list(self.region.points), self.region.normalized, width, height)
            self._size = (width, height)
        return self._points

    def _signed(self, anchors: np.ndarray, width: int, height: int) -> np.ndarray:
        pts = self._geometry(width, height)
        if self.is_zone:
            return polygon_signed_distance(anchors, pts)
        return line_side(anchors, pts[0], pts[1])

    def process(
        self, objects: Sequence[TrackedObject], ts: float, width: int, height: int
    ) -> list[AnalyticsEvent]:
        r = self.region
        wanted = [
            o
            for o in objects
            if o.track_id is not None and (r.classes is None or o.class_name in r.classes)
        ]
        events: list[AnalyticsEvent] = []
        if wanted:
            boxes = np.array([o.box for o in wanted], np.float64)
            # a tracked (Kalman) box may reach past the image edge: its anchor stays on the
            # edge, so a line drawn from edge to edge catches every crossing
            anchors = np.clip(anchor_points(boxes, r.anchor), 0.0, [float(width), float(height)])
            signed = self._signed(anchors, width, height)
            for o, pos, s in zip(wanted, anchors, signed.tolist(), strict=True):
                assert o.track_id is not None
                ev = self._observe(o, pos, float(s), ts, width, height)
                if ev is not None:
                    events.append(ev)
        for tid in [t for t, st in self.tracks.items() if ts - st.last_ts > self.stale_after_s]:
            events += self.end_track(tid)
        return events

    def _observe(
        self, o: TrackedObject, pos: np.ndarray, s: float, ts: float, width: int, height: int
    ) -> AnalyticsEvent | None:
        assert o.track_id is not None
        st = self.tracks.get(o.track_id)
        zone = self.is_zone
        if st is None:
            # a zone starts outside (a track first seen inside enters, after hysteresis); a
            # line starts on the side the track is first seen on (no crossing yet)
            st = self.tracks[o.track_id] = _TrackState(side=-1 if zone else 0)
        st.last_ts = ts
        st.class_id, st.class_name = o.class_id, o.class_name
        if zone and s > 0:
            st.last_inside_ts = ts
        sign = 1 if s > 0 else -1 if s < 0 else 0
        if st.side == 0:
            st.side = sign
            st.last_pos = pos
            return None
        if sign == 0 or sign == st.side:
            st.run = None
            st.last_pos = pos
            return None
        run = st.run
        if run is None:
            run = st.run = _Run(ts, pos)
        else:
            run.frames += 1
        run.depth = max(run.depth, abs(s))
        r = self.region
        if run.frames < r.min_frames and run.depth < r.min_distance_px:
            return None
        st.run = None
        before, st.side = st.side, sign
        start, st.last_pos = st.last_pos, pos
        return self._event(o.track_id, st, before, sign, run, start, width, height)

    def _event(
        self,
        track_id: int,
        st: _TrackState,
        before: int,
        after: int,
        run: _Run,
        start: np.ndarray | None,
        width: int,
        height: int,
    ) -> AnalyticsEvent | None:
        rid = self.region.id
        if self.is_zone:
            if after > 0:
                st.entered_ts = run.ts
                st.last_inside_ts = max(st.last_inside_ts, run.ts)
                return AnalyticsEvent(
                    "zone_enter", rid, track_id, st.class_id, st.class_name, run.ts
                )
            return AnalyticsEvent(
                "zone_exit",
                rid,
                track_id,
                st.class_id,
                st.class_name,
                run.ts,
                dwell_s=max(0.0, run.ts - st.entered_ts),
                entered_ts=st.entered_ts,
            )
        pts = self._geometry(width, height)
        if start is None or not crossing_on_segment(start, run.pos, pts[0], pts[1]):
            return None  # went round the end of the line: a side change, not a crossing
        direction = "in" if after > 0 else "out"
        self.crossings[(direction, st.class_name)] += 1
        return AnalyticsEvent(
            "line_cross", rid, track_id, st.class_id, st.class_name, run.ts, direction=direction
        )

    def end_track(self, track_id: int) -> list[AnalyticsEvent]:
        """The track is gone: forget it; a zone it was in is left at its last time inside."""
        st = self.tracks.pop(track_id, None)
        if st is None or not self.is_zone or st.side <= 0:
            return []
        return [
            AnalyticsEvent(
                "zone_exit",
                self.region.id,
                track_id,
                st.class_id,
                st.class_name,
                st.last_inside_ts,
                dwell_s=max(0.0, st.last_inside_ts - st.entered_ts),
                entered_ts=st.entered_ts,
            )
        ]

    def occupancy(self) -> Counter[str]:
        """Zone: tracks inside now (confirmed), per class name."""
        return Counter(st.class_name for st in self.tracks.values() if st.side > 0)

    def counts(self) -> dict[str, object]:
        """The published live counts of this zone or line (`pipeline.payloads.FrameResult`)."""
        if self.is_zone:
            by_class = self.occupancy()
            return {"occupancy": sum(by_class.values()), "by_class": dict(sorted(by_class.items()))}
        classes = sorted({c for _, c in self.crossings})
        return {
            "in": sum(n for (d, _), n in self.crossings.items() if d == "in"),
            "out": sum(n for (d, _), n in self.crossings.items() if d == "out"),
            "by_class": {
                c: {"in": self.crossings[("in", c)], "out": self.crossings[("out", c)]}
                for c in classes
            },
        }


@dataclass
class CameraAnalytics:
    """Every zone and line of one camera."""

    zones: list[RegionCounter]
    lines: list[RegionCounter]

    @classmethod
    def from_config(
        cls, zones: Iterable[ZoneConfig], lines: Iterable[LineConfig]
    ) -> CameraAnalytics:
        return cls([RegionCounter(z) for z in zones], [RegionCounter(ln) for ln in lines])

    def process(
        self,
        objects: Sequence[TrackedObject],
        lifecycle: Sequence[TrackLifecycleEvent],
        ts: float,
        width: int,
        height: int,
    ) -> list[AnalyticsEvent]:
        events: list[AnalyticsEvent] = []
        for counter in (*self.zones, *self.lines):
            events += counter.process(objects, ts, width, height)
            for e in lifecycle:
                if e.kind == "removed":
                    events += counter.end_track(e.track_id)
        return events
