"""Bounded state: a long run of random detections holds a bounded number of tracks and its
traced memory stays flat (the full 1,000,000-frame run is tests/bench/track_soak.py)."""

from __future__ import annotations

import tracemalloc

from track_helpers import RandomScene

from stages.track.config import TrackerConfig
from stages.track.tracker import Tracker

FRAMES = 20_000
TRACE_FROM = 14_000  # tracemalloc slows numpy ~4x: trace the last 6,000 frames only
FPS = 30.0


def test_tracks_and_memory_stay_bounded() -> None:
    objects, clutter = 8, 3
    scene = RandomScene(seed=1, objects=objects, clutter=clutter)
    tracker = Tracker(TrackerConfig(per_class=True), frame_rate_hz=FPS)
    # Every live track was matched within max_lost_frames, and a frame adds at most one track
    # per detection: at most (objects + clutter) * (max_lost_frames + 1) tracks.
    bound = (objects + clutter) * (tracker.max_lost_frames + 1)
    most = 0
    samples: list[int] = []
    removed = 0
    try:
        for f in range(FRAMES):
            if f == TRACE_FROM:  # whatever the tracker keeps from now on shows up
                tracemalloc.start()
            out = tracker.update(*scene.frame(), f / FPS)
            removed += sum(e.kind.value == "removed" for e in out.events)
            most = max(most, tracker.num_tracks)
            if f > TRACE_FROM and f % 500 == 0:
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert removed > 500  # ids really were born and removed all along
    assert most <= bound
    assert tracker.next_id > removed
    # Flat: the late samples are no larger than the early ones plus a little slack (the
    # track table breathes with the number of live tracks). Keeping each removed track's
    # state (hundreds of tracks in the traced window) would add several hundred kilobytes.
    early, late = max(samples[:4]), max(samples[-4:])
    assert late - early < 100_000, (early, late)
