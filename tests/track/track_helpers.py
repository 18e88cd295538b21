"""Small builders for tracker tests: boxes moving on straight lines."""

from __future__ import annotations

import numpy as np

from stages.track.tracker import Tracker
from stages.track.types import TrackerOutput


def box(x: float, y: float, w: float = 40.0, h: float = 100.0) -> list[float]:
    return [x, y, x + w, y + h]


def step(
    tracker: Tracker,
    boxes: list[list[float]],
    frame: int,
    scores: list[float] | None = None,
    classes: list[int] | None = None,
) -> TrackerOutput:
    n = len(boxes)
    return tracker.update(
        np.array(boxes, dtype=np.float32).reshape(-1, 4),
        np.array(scores if scores is not None else [0.9] * n, dtype=np.float32),
        np.array(classes if classes is not None else [0] * n, dtype=np.int64),
        frame / tracker.frame_rate_hz,
    )


def ids_of(out: TrackerOutput) -> list[int]:
    return [int(i) for i in out.tracks.track_ids]
