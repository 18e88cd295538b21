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


class RandomScene:
    """Endless synthetic detections: ``objects`` boxes drifting and bouncing in a 1920x1080
    frame (each missed with probability ``miss``), replaced at random by new objects (so ids
    keep being born and removed), plus ``clutter`` random boxes of random score per frame."""

    def __init__(self, seed: int = 0, objects: int = 20, clutter: int = 8, miss: float = 0.1):
        self.rng = np.random.default_rng(seed)
        self.n, self.clutter, self.miss = objects, clutter, miss
        self.size = np.array([1920.0, 1080.0])
        self.xy = self.rng.uniform(0, 1, (objects, 2)) * (self.size - 200)
        self.v = self.rng.normal(0, 3, (objects, 2))
        self.wh = self.rng.uniform(20, 150, (objects, 2))

    def frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = self.rng
        self.xy += self.v
        out = (self.xy < 0) | (self.xy + self.wh > self.size)
        self.v[out] *= -1
        respawn = rng.random(self.n) < 0.01
        self.xy[respawn] = rng.uniform(0, 1, (int(respawn.sum()), 2)) * (self.size - 200)
        seen = rng.random(self.n) >= self.miss
        jitter = rng.normal(0, 2, (self.n, 4))
        boxes = np.concatenate([self.xy, self.xy + self.wh], axis=1) + jitter
        c_xy = rng.uniform(0, 1, (self.clutter, 2)) * (self.size - 100)
        c_wh = rng.uniform(5, 100, (self.clutter, 2))
        boxes = np.concatenate([boxes[seen], np.concatenate([c_xy, c_xy + c_wh], axis=1)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, int(seen.sum())), rng.random(self.clutter)])
        classes = rng.integers(0, 3, boxes.shape[0])
        return boxes.astype(np.float32), scores.astype(np.float32), classes
