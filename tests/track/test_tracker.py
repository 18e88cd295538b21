"""Association passes, lifecycle events and the per-class option of `Tracker`."""

from __future__ import annotations

import numpy as np
import pytest
from track_helpers import box, ids_of, step

from stages.track.config import TrackerConfig
from stages.track.tracker import Tracker
from stages.track.types import TrackEventKind


def kinds(out) -> list[tuple[str, int]]:
    return [(e.kind.value, e.track_id) for e in out.events]


def test_confirmation_after_min_hits_then_stable_id() -> None:
    t = Tracker(TrackerConfig(min_hits=2), frame_rate_hz=10)
    first = step(t, [box(100, 100)], 0)
    assert ids_of(first) == [] and first.events == []  # tentative: no id yet
    second = step(t, [box(104, 100)], 1)
    assert ids_of(second) == [1]
    assert kinds(second) == [("new", 1)]
    for f in range(2, 20):
        assert ids_of(step(t, [box(100 + 4 * f, 100)], f)) == [1]


def test_first_pass_keeps_ids_of_two_crossing_objects() -> None:
    """Two people walk towards each other and cross; motion keeps their ids apart."""
    t = Tracker(frame_rate_hz=30)
    seen: dict[int, list[float]] = {}
    for f in range(60):
        a, b = box(100 + 6 * f, 100), box(460 - 6 * f, 104)
        out = step(t, [a, b], f)
        for tid, bx in zip(out.tracks.track_ids, out.tracks.boxes, strict=True):
            seen.setdefault(int(tid), []).append(float(bx[0]))
    assert sorted(seen) == [1, 2]
    # Each id moves monotonically in one direction all along: no swap at the crossing.
    directions = sorted(np.sign(np.diff(xs)).mean() for xs in seen.values())
    assert directions == [-1.0, 1.0]


def test_second_pass_keeps_a_track_alive_on_low_score_detections() -> None:
    cfg = TrackerConfig(high_score=0.6, low_score=0.1)
    t = Tracker(cfg, frame_rate_hz=30)
    for f in range(5):
        step(t, [box(100 + 2 * f, 100)], f)
    # Occluded: only a weak detection, but it overlaps the predicted box.
    out = step(t, [box(110, 100)], 5, scores=[0.3])
    assert ids_of(out) == [1]
    assert out.events == []
    assert out.tracks.scores[0] == pytest.approx(0.3)


def test_low_score_detection_never_starts_or_recovers_a_track() -> None:
    t = Tracker(TrackerConfig(high_score=0.6, low_score=0.1), frame_rate_hz=30)
    for f in range(5):
        assert ids_of(step(t, [box(300, 300)], f, scores=[0.4])) == []
    assert t.num_tracks == 0
    for f in range(5, 10):
        step(t, [box(100, 100)], f)
    lost = step(t, [], 10)
    assert kinds(lost) == [("lost", 1)]
    # The second pass only serves tracks that were tracked on the previous frame.
    assert ids_of(step(t, [box(100, 100)], 11, scores=[0.4])) == []
    assert ids_of(step(t, [box(100, 100)], 12, scores=[0.9])) == [1]


def test_detections_below_min_box_area_are_ignored() -> None:
    t = Tracker(TrackerConfig(min_box_area=100.0, min_hits=1), frame_rate_hz=30)
    out = step(t, [box(0, 0, 5, 5), box(50, 50, 20, 20)], 0)
    assert ids_of(out) == [1]
    assert out.tracks.detection_index.tolist() == [1]


def test_lifecycle_events_and_times() -> None:
    fps = 10.0
    cfg = TrackerConfig(lost_track_seconds=0.5, min_hits=2)
    t = Tracker(cfg, frame_rate_hz=fps)
    assert t.max_lost_frames == 5
    events = []
    for f in range(4):  # frames 0..3 seen
        events += step(t, [box(100, 100)], f).events
    for f in range(4, 7):  # 3 frames missing, then back
        events += step(t, [], f).events
    events += step(t, [box(100, 100)], 7).events
    for f in range(8, 20):  # gone for good
        events += step(t, [], f).events
    assert [(e.kind, e.timestamp_s) for e in events] == [
        (TrackEventKind.NEW, 0.1),
        (TrackEventKind.LOST, 0.4),
        (TrackEventKind.RECOVERED, 0.7),
        (TrackEventKind.LOST, 0.8),
        (TrackEventKind.REMOVED, pytest.approx(1.3)),
    ]
    assert {e.track_id for e in events} == {1}
    removed = events[-1]
    assert removed.first_seen_s == 0.0
    assert removed.last_seen_s == pytest.approx(0.7)
    assert t.num_tracks == 0  # removed tracks are dropped, not kept


def test_lost_track_seconds_uses_the_camera_frame_rate() -> None:
    cfg = TrackerConfig(lost_track_seconds=2.0)
    assert Tracker(cfg, frame_rate_hz=30).max_lost_frames == 60
    assert Tracker(cfg, frame_rate_hz=12.5).max_lost_frames == 25


def test_dropped_frames_advance_the_motion_model() -> None:
    """A 5-frame timestamp gap predicts 5 steps: a fast object is still matched after it."""
    t = Tracker(frame_rate_hz=10)
    for f in range(30):
        step(t, [box(100 + 10 * f, 100)], f)
    # Frames 30..34 never arrive; one step of prediction would leave the box 50 px behind.
    out = step(t, [box(100 + 10 * 35, 100)], 35)
    assert ids_of(out) == [1]
    assert out.events == []


def test_per_class_never_gives_a_person_id_to_a_car() -> None:
    person, car = 0, 2
    for per_class, expect_same in ((True, False), (False, True)):
        t = Tracker(TrackerConfig(per_class=per_class, min_hits=2), frame_rate_hz=30)
        for f in range(5):
            first = step(t, [box(100, 100)], f, classes=[person])
        out = step(t, [box(100, 100)], 5, classes=[car])
        out = step(t, [box(100, 100)], 6, classes=[car])
        same = ids_of(out) == ids_of(first)
        assert same == expect_same, f"per_class={per_class}"
        if per_class:
            assert ids_of(out) == [2] and out.tracks.class_ids.tolist() == [car]


def test_shape_mismatch_is_an_error() -> None:
    t = Tracker()
    with pytest.raises(ValueError, match="disagree"):
        t.update(np.zeros((2, 4)), np.zeros(3), np.zeros(2), 0.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"high_score": 1.5},
        {"low_score": 0.7, "high_score": 0.6},
        {"min_hits": 0},
        {"lost_track_seconds": -1.0},
        {"position_noise": 0.0},
    ],
)
def test_bad_config_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TrackerConfig(**kwargs)


def test_observation_recovery_replays_a_straight_path_through_the_gap() -> None:
    """ORU: a track recovered after a gap ends in the same filter state as a track that saw
    detections evenly spaced along the straight line between its last and new observation."""
    cfg = TrackerConfig(direction_weight=0.0)
    gapped, replayed = Tracker(cfg, frame_rate_hz=30), Tracker(cfg, frame_rate_hz=30)
    for f in range(20):
        step(gapped, [box(100, 100)], f)
        step(replayed, [box(100, 100)], f)
    for f in range(20, 30):
        step(gapped, [], f)
        step(replayed, [box(100 + (f - 19), 100)], f)
    a = step(gapped, [box(111, 100)], 30)  # near enough to be matched after the gap
    b = step(replayed, [box(111, 100)], 30)
    assert ids_of(a) == ids_of(b) == [1]
    assert [e.kind for e in a.events] == [TrackEventKind.RECOVERED]
    np.testing.assert_allclose(a.tracks.boxes, b.tracks.boxes)
    # The filter state itself (not part of the API): the replayed path's velocity was learned.
    np.testing.assert_allclose(gapped._mean, replayed._mean, rtol=1e-9)
    np.testing.assert_allclose(gapped._cov, replayed._cov, rtol=1e-9)


def test_last_box_match_recovers_an_object_that_stopped_while_occluded() -> None:
    """OCR: the prediction ran on (8 px/frame for 15 frames) but the object stopped; the
    detection overlaps only the last observed box."""
    for last_box_iou, expected in ((0.3, [1]), (1.0, [])):
        t = Tracker(TrackerConfig(last_box_match_iou=last_box_iou), frame_rate_hz=30)
        for f in range(20):
            step(t, [box(100 + 8 * f, 100)], f)
        for f in range(20, 35):
            step(t, [], f)
        out = step(t, [box(100 + 8 * 19, 100)], 35)
        assert ids_of(out) == expected, last_box_iou
