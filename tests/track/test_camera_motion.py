"""Camera-motion compensation from the boxes (``camera_motion``): a lost track follows the
camera, so an object hidden while the camera moved gets its id back; nothing moves without a
clear, shared shift."""

from __future__ import annotations

import numpy as np
from track_helpers import box, ids_of, step

from stages.track.config import TrackerConfig
from stages.track.tracker import Tracker

STANDING = [100.0 + 150.0 * k for k in range(6)]  # six people standing in a row
HIDDEN = 3  # the one walking behind a pillar


def pan_scene(camera_motion: bool) -> tuple[int, list[int]]:
    """The camera holds still for 20 frames, then pans 12 px every other frame while person
    HIDDEN is out of sight (frames 20-49). Returns (id before, ids after reappearing)."""
    rng = np.random.default_rng(3)
    t = Tracker(TrackerConfig(camera_motion=camera_motion), frame_rate_hz=30)
    pan = 0.0
    before, after = -1, []
    for f in range(70):
        if 20 <= f < 50 and f % 2 == 0:
            pan -= 12.0
        xs = [x + pan + rng.normal(0, 0.5) for x in STANDING]
        shown = [k for k in range(len(xs)) if not (20 <= f < 50 and k == HIDDEN)]
        out = step(t, [box(xs[k], 300 + 2 * k) for k in shown], f)
        ids = ids_of(out)
        if f == 19:
            before = ids[HIDDEN]
        if f >= 55:
            after.append(ids[HIDDEN])
    return before, after


def test_a_track_lost_while_the_camera_pans_keeps_its_id() -> None:
    before, after = pan_scene(camera_motion=True)
    assert after == [before] * len(after)


def test_without_compensation_the_same_scene_switches_the_id() -> None:
    """The same scene, compensation off: the lost track stays where the camera left it (180 px
    away) and the person comes back under a new id. Shows what the test above guards."""
    before, after = pan_scene(camera_motion=False)
    assert before not in after


def test_two_objects_moving_together_do_not_move_the_others() -> None:
    """Fewer than three clear pairs are not a camera: two people walking side by side must not
    drag a third, lost track along with them."""
    t = Tracker(TrackerConfig(camera_motion=True), frame_rate_hz=30)
    for f in range(10):
        step(t, [box(100, 300), box(300, 300), box(800, 300)], f)
    for f in range(10, 40):  # the third person hides; the two others walk right
        dx = 8.0 * (f - 9)
        step(t, [box(100 + dx, 300), box(300 + dx, 300)], f)
    out = step(t, [box(100 + 248, 300), box(300 + 248, 300), box(800, 300)], 40)
    assert sorted(ids_of(out)) == [1, 2, 3]
