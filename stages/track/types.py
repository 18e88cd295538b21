"""What a `Tracker` returns: the tracks of the frame (columns, like detections) and events."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class TrackEventKind(str, Enum):
    """Lifecycle of a track id.

    NEW: the track was confirmed and got its id. LOST: it found no detection this frame (it is
    kept, predicted, for ``lost_track_seconds``). RECOVERED: a lost track was matched again and
    keeps its id. REMOVED: it stayed lost too long; the id will not come back.
    """

    NEW = "new"
    LOST = "lost"
    RECOVERED = "recovered"
    REMOVED = "removed"


@dataclass(frozen=True)
class TrackEvent:
    """One lifecycle change of one track, for the sinks.

    ``first_seen_s`` / ``last_seen_s`` are the timestamps of the track's first and latest
    matched detections; ``timestamp_s`` is the frame at which the event happened.
    """

    kind: TrackEventKind
    track_id: int
    class_id: int
    timestamp_s: float
    first_seen_s: float
    last_seen_s: float


@dataclass(frozen=True)
class Tracks:
    """The confirmed tracks matched to a detection in this frame, one row each.

    ``boxes`` (M, 4) float32 xyxy in the detections' pixels, ``track_ids`` (M,) int64,
    ``scores`` (M,) float32 and ``class_ids`` (M,) int64 of the matched detection, and
    ``detection_index`` (M,) int64: the row of that detection in the ``update()`` input.
    """

    boxes: np.ndarray
    track_ids: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    detection_index: np.ndarray

    def __len__(self) -> int:
        return int(self.track_ids.shape[0])

    @staticmethod
    def empty() -> Tracks:
        return Tracks(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
        )


@dataclass(frozen=True)
class TrackerOutput:
    """Result of one `Tracker.update` call."""

    tracks: Tracks
    events: list[TrackEvent]
