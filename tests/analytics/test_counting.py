"""Zone and line state machines: hysteresis, directions, dwell, removal, class filters."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from pipeline.config.zones import LineConfig, ZoneConfig
from pipeline.payloads import AnalyticsEvent, FrameResult, TrackedObject, TrackLifecycleEvent
from stages.analytics import CameraRegions, ZoneAnalytics
from stages.analytics.counting import RegionCounter

W, H = 640, 480
T0 = 1_750_000_000.0


def obj(
    tid: int, x: float, y: float, cls: str = "person", w: float = 20, h: float = 60
) -> TrackedObject:
    """A box whose bottom-centre anchor is (x, y)."""
    return TrackedObject(
        tid, 0 if cls == "person" else 2, cls, 0.9, (x - w / 2, y - h, x + w / 2, y)
    )


def feed(
    counter: RegionCounter, xs: Iterable[float], y: float = 200, tid: int = 1, cls: str = "person"
) -> list[AnalyticsEvent]:
    out: list[AnalyticsEvent] = []
    for i, x in enumerate(xs):
        out += counter.process([obj(tid, x, y, cls)], T0 + i / 25, W, H)
    return out


def vertical_line(**kw: object) -> RegionCounter:
    # drawn bottom to top at x = 300: its right as seen on the image is x > 300 (in = moving right)
    return RegionCounter(LineConfig(id="door", points=[(300, 479), (300, 0)], **kw))  # type: ignore[arg-type]


def test_a_walk_across_counts_once_with_its_direction_and_time() -> None:
    line = vertical_line()
    xs = np.linspace(200, 400, 51)  # 4 px per frame, crosses between frames 25 and 26
    events = feed(line, xs)
    assert [(e.kind, e.direction, e.track_id) for e in events] == [("line_cross", "in", 1)]
    first_right = int(np.argmax(xs > 300))
    assert events[0].event_ts == pytest.approx(T0 + first_right / 25)
    back = feed(line, xs[::-1])
    assert [(e.kind, e.direction) for e in back] == [("line_cross", "out")]
    assert line.counts() == {"in": 1, "out": 1, "by_class": {"person": {"in": 1, "out": 1}}}


def test_jitter_over_the_line_is_not_counted() -> None:
    line = vertical_line(min_distance_px=8, min_frames=3)
    rng = np.random.default_rng(0)
    # standing on the line: +-5 px of noise, never 3 frames in a row on one side ... mostly
    xs = 300 + np.tile([-4.0, 3.0, -2.0, 5.0, 1.0, -3.0], 20) + rng.uniform(-0.5, 0.5, 120)
    assert feed(line, xs) == []
    # then really crosses: exactly one event
    assert [e.direction for e in feed(line, np.linspace(296, 340, 12))] == ["in"]


def test_without_hysteresis_the_same_jitter_counts_every_wobble() -> None:
    """The control of the test above: the jitter does cross the line many times."""
    line = vertical_line(min_distance_px=0, min_frames=1)
    xs = 300 + np.tile([-4.0, 3.0, -2.0, 5.0, 1.0, -3.0], 20)
    assert len(feed(line, xs)) > 50


def test_distance_or_frames_confirm_a_crossing() -> None:
    # a fast mover is past min_distance in one frame
    line = vertical_line(min_distance_px=8, min_frames=100)
    assert [e.direction for e in feed(line, [280, 290, 320])] == ["in"]
    # a slow one that stays 3 frames on the other side, 2 px past
    line = vertical_line(min_distance_px=100, min_frames=3)
    assert feed(line, [295, 298, 302, 302]) == []
    assert [e.direction for e in feed(line, [302], tid=1)] == ["in"]


def test_passing_round_the_end_of_a_line_is_not_a_crossing() -> None:
    line = RegionCounter(LineConfig(id="short", points=[(300, 300), (300, 100)]))
    assert feed(line, np.linspace(200, 400, 51), y=400) == []  # below its end
    assert [e.direction for e in feed(line, np.linspace(200, 400, 51), y=200, tid=2)] == ["in"]


def test_zone_enter_exit_dwell_and_occupancy() -> None:
    zone = RegionCounter(
        ZoneConfig(
            id="z",
            points=[(300, 0), (400, 0), (400, 479), (300, 479)],
            min_frames=2,
            min_distance_px=50,
        )
    )
    xs = list(range(280, 430, 5))  # 5 px per frame (0.04 s)
    events: list[AnalyticsEvent] = []
    occupied = []
    for i, x in enumerate(xs):
        events += zone.process([obj(7, x, 200)], T0 + i * 0.04, W, H)
        occupied.append(sum(zone.occupancy().values()))
    assert [e.kind for e in events] == ["zone_enter", "zone_exit"]
    enter, leave = events
    first_in = next(i for i, x in enumerate(xs) if x > 300)
    first_out = next(i for i, x in enumerate(xs) if x > 400)
    assert enter.event_ts == pytest.approx(T0 + first_in * 0.04)
    assert leave.dwell_s == pytest.approx((first_out - first_in) * 0.04)
    assert leave.entered_ts == enter.event_ts
    assert max(occupied) == 1 and occupied[-1] == 0
    # occupancy is counted from the confirming frame (min_frames 2) to the exit's
    assert occupied.index(1) == first_in + 1


def test_a_track_removed_inside_a_zone_leaves_it_at_its_last_detection() -> None:
    analytics = ZoneAnalytics(
        {
            "cam": CameraRegions(
                zones=(ZoneConfig(id="z", points=[(0, 0), (640, 0), (640, 479)], normalized=False),)
            )
        }
    )
    frames = [
        FrameResult("cam", i, T0 + i, W, H, [obj(3, 600, 100)]) for i in range(4)
    ]  # inside the triangle (x > y), 4 frames
    out = [analytics.process(f) for f in frames]
    assert [e.kind for f in out for e in f.analytics_events] == ["zone_enter"]
    assert out[-1].zones == {"z": {"occupancy": 1, "by_class": {"person": 1}}}
    removed = TrackLifecycleEvent("removed", 3, 0, "person", T0 + 9, T0, T0 + 3)
    last = analytics.process(FrameResult("cam", 9, T0 + 9, W, H, [], events=[removed]))
    assert [(e.kind, e.dwell_s) for e in last.analytics_events] == [("zone_exit", 3.0)]
    assert last.zones == {"z": {"occupancy": 0, "by_class": {}}}


def test_class_filter_and_untracked_objects() -> None:
    line = vertical_line(classes=["car"])
    assert feed(line, np.linspace(200, 400, 51), cls="person") == []
    assert [e.class_name for e in feed(line, np.linspace(200, 400, 51), tid=2, cls="car")] == [
        "car"
    ]
    untracked = TrackedObject(None, 0, "car", 0.9, (0, 0, 10, 10))
    assert line.process([untracked], T0, W, H) == []


def test_normalised_points_follow_the_image_size() -> None:
    line = RegionCounter(LineConfig(id="n", normalized=True, points=[(0.5, 1.0), (0.5, 0.0)]))
    events = []
    for i, x in enumerate(np.linspace(500, 780, 30)):  # a 1280-wide image: the line is at 640
        events += line.process([obj(1, x, 300)], T0 + i, 1280, 720)
    assert [e.direction for e in events] == ["in"]
    assert events[0].event_ts == pytest.approx(T0 + int(np.argmax(np.linspace(500, 780, 30) > 640)))


class FakeMetrics:
    def __init__(self) -> None:
        self.crossed: list[tuple[str, str, str, str]] = []
        self.occupancy: dict[tuple[str, str, str], int] = {}

    def line_crossed(self, camera: str, line: str, direction: str, class_name: str) -> None:
        self.crossed.append((camera, line, direction, class_name))

    def zone_occupancy(self, camera: str, zone: str, class_name: str, n: int) -> None:
        self.occupancy[(camera, zone, class_name)] = n


def test_zone_analytics_counts_in_frames_and_metrics() -> None:
    metrics = FakeMetrics()
    regions = CameraRegions(
        zones=(ZoneConfig(id="right", points=[(300, 0), (640, 0), (640, 479), (300, 479)]),),
        lines=(LineConfig(id="door", points=[(300, 479), (300, 0)]),),
    )
    analytics = ZoneAnalytics({"cam": regions}, metrics=metrics)
    out = []
    for i, x in enumerate(np.linspace(200, 400, 51)):
        out.append(analytics.process(FrameResult("cam", i, T0 + i / 25, W, H, [obj(1, x, 200)])))
    kinds = [e.kind for f in out for e in f.analytics_events]
    assert kinds == ["zone_enter", "line_cross"] or kinds == ["line_cross", "zone_enter"]
    assert out[-1].lines == {
        "door": {"in": 1, "out": 0, "by_class": {"person": {"in": 1, "out": 0}}}
    }
    assert out[-1].zones == {"right": {"occupancy": 1, "by_class": {"person": 1}}}
    assert metrics.crossed == [("cam", "door", "in", "person")]
    assert metrics.occupancy == {("cam", "right", "person"): 1}
    # another camera passes through untouched
    other = FrameResult("cam2", 0, T0, W, H, [obj(1, 350, 200)])
    assert analytics.process(other) is other
    # a live change of the camera's regions starts it afresh and zeroes its gauges
    analytics.set_cameras({})
    assert metrics.occupancy == {("cam", "right", "person"): 0}
    assert analytics.process(out[-1]) is out[-1]
