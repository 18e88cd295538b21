"""Bounded state: a long run of random detections holds a bounded number of tracks and its
traced memory stays flat (the full 1,000,000-frame run is tests/bench/track_soak.py)."""

from __future__ import annotations

import tracemalloc

from track_helpers import RandomScene

from stages.track.config import TrackerConfig
from stages.track.tracker import Tracker

FRAMES = 20_000
FPS = 30.0


def test_tracks_and_memory_stay_bounded() -> None:
    scene = RandomScene(seed=1, objects=20, clutter=8)
    tracker = Tracker(TrackerConfig(per_class=True), frame_rate_hz=FPS)
    # Every live track was matched within max_lost_frames, and a frame adds at most one track
    # per detection: at most (objects + clutter) * (max_lost_frames + 1) tracks.
    bound = (20 + 8) * (tracker.max_lost_frames + 1)
    most = 0
    samples: list[int] = []
    removed = 0
    tracemalloc.start()
    try:
        for f in range(FRAMES):
            out = tracker.update(*scene.frame(), f / FPS)
            removed += sum(e.kind.value == "removed" for e in out.events)
            most = max(most, tracker.num_tracks)
            if f >= 2_000 and f % 1_000 == 0:
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert removed > 1_000  # ids really were born and removed all along
    assert most <= bound
    assert tracker.next_id > removed
    # Flat: the late samples are no larger than the early ones plus a little slack (the
    # track table breathes with the number of live tracks). Keeping removed tracks would add
    # well over a megabyte here.
    early, late = max(samples[:5]), max(samples[-5:])
    assert late - early < 200_000, (early, late)
