"""Track ids: persisted across restarts, and independent per camera."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from track_helpers import box, ids_of, step

from stages.track.config import TrackerConfig
from stages.track.ids import IdAllocator
from stages.track.stage import TrackStage, TrackStageConfig
from stages.track.tracker import Tracker


def test_allocator_in_memory_counts_from_one() -> None:
    ids = IdAllocator()
    assert [ids.allocate() for _ in range(3)] == [1, 2, 3]


def test_allocator_persists_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "cam.json"
    first = IdAllocator(path, reserve_block=10)
    handed = [first.allocate() for _ in range(12)]
    assert handed == list(range(1, 13))
    assert json.loads(path.read_text()) == {"next_id": 21}  # blocks 1..10, 11..20 reserved
    restarted = IdAllocator(path, reserve_block=10)
    after = [restarted.allocate() for _ in range(3)]
    assert min(after) > max(handed)  # never reused
    assert after == [21, 22, 23]
    assert [p.name for p in tmp_path.iterdir()] == ["cam.json"]  # no temp files left behind


def test_allocator_rejects_a_corrupt_state_file(tmp_path: Path) -> None:
    path = tmp_path / "cam.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable or malformed"):
        IdAllocator(path)
    path.write_text('{"next_id": -4}')
    with pytest.raises(ValueError, match="next_id"):
        IdAllocator(path)


@dataclass
class Msg:
    camera_id: str
    frame_id: int
    capture_ts: float
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


def msg(camera: str, frame: int, xs: list[float], fps: float = 30.0) -> Msg:
    boxes = np.array([box(x, 100) for x in xs], dtype=np.float32).reshape(-1, 4)
    n = len(xs)
    return Msg(camera, frame, frame / fps, boxes, np.full(n, 0.9), np.zeros(n, np.int64))


def test_two_cameras_are_independent() -> None:
    """Camera B starting (and running) never changes camera A's ids or tracks."""
    alone = TrackStage()
    alone.setup()
    a_alone = [alone.process(msg("A", f, [100 + 3 * f, 400])) for f in range(40)]

    both = TrackStage()
    both.setup()
    a_both = []
    for f in range(40):
        a_both.append(both.process(msg("A", f, [100 + 3 * f, 400])))
        if f >= 10:  # B starts later, in the same stage, with other objects
            b = both.process(msg("B", f - 10, [50, 250, 600 - 2 * f]))
    both.close()
    for x, y in zip(a_alone, a_both, strict=True):
        np.testing.assert_array_equal(x.tracks.track_ids, y.tracks.track_ids)
        np.testing.assert_array_equal(x.tracks.boxes, y.tracks.boxes)
    assert sorted(a_both[-1].tracks.track_ids.tolist()) == [1, 2]
    assert sorted(b.tracks.track_ids.tolist()) == [1, 2, 3]  # B's ids are its own
    assert b.camera_id == "B"


def test_stage_persists_ids_per_camera_across_restarts(tmp_path: Path) -> None:
    cfg = TrackStageConfig(state_dir=tmp_path)
    stage = TrackStage(cfg)
    stage.setup()
    for f in range(5):
        out_a = stage.process(msg("cam/a", f, [100, 300]))
        stage.process(msg("cam:b", f, [100]))
    stage.close()
    assert len(list(tmp_path.glob("*.json"))) == 2  # one state file per camera
    first_ids = set(out_a.tracks.track_ids.tolist())

    restarted = TrackStage(cfg)
    restarted.setup()
    for f in range(5):
        again = restarted.process(msg("cam/a", f, [100, 300]))
    assert first_ids.isdisjoint(again.tracks.track_ids.tolist())


def test_no_state_is_shared_between_tracker_instances() -> None:
    cfg = TrackerConfig(min_hits=2)
    a, b = Tracker(cfg), Tracker(cfg)
    for f in range(3):
        step(a, [box(10, 10), box(200, 10)], f)
    assert ids_of(step(b, [box(10, 10)], 0)) == []
    assert ids_of(step(b, [box(10, 10)], 1)) == [1]
    assert a.next_id == 3 and b.next_id == 2


def test_frame_rate_per_camera() -> None:
    stage = TrackStage(
        TrackStageConfig(
            tracker=TrackerConfig(lost_track_seconds=1.0),
            frame_rates_hz={"slow": 5.0},
            default_frame_rate_hz=25.0,
        )
    )
    assert stage.tracker("slow").max_lost_frames == 5
    assert stage.tracker("other").max_lost_frames == 25
