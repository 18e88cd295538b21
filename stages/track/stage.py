"""The track stage: one `Tracker` per camera, created on the camera's first frame.

Like every stage it is ``setup() / process(msg) / close()`` and knows nothing of sockets; the
runner feeds it detection messages and forwards what it returns.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from stages.track.config import TrackerConfig
from stages.track.ids import IdAllocator
from stages.track.tracker import Tracker
from stages.track.types import TrackEvent, Tracks


class DetectionsMessage(Protocol):
    """What the stage reads from a message: the camera, the capture time and the detections
    (``boxes`` (N, 4) xyxy source pixels, ``scores`` (N,), ``class_ids`` (N,))."""

    camera_id: str
    frame_id: int
    capture_ts: float
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


@dataclass(frozen=True)
class TrackedFrame:
    """The stage's output for one frame of one camera."""

    camera_id: str
    frame_id: int
    capture_ts: float
    tracks: Tracks
    events: list[TrackEvent]


@dataclass(frozen=True)
class TrackStageConfig:
    """Settings of the track stage.

    tracker: parameters shared by every camera's tracker.
    frame_rates_hz: real frame rate per camera id; converts ``lost_track_seconds`` to frames.
    default_frame_rate_hz: used for cameras not in ``frame_rates_hz``.
    state_dir: if set, each camera's next track id is persisted there (``<camera>.json``) so ids
        stay unique across restarts of the stage; None keeps ids in memory (they restart at 1).
    """

    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    frame_rates_hz: Mapping[str, float] = field(default_factory=dict)
    default_frame_rate_hz: float = 30.0
    state_dir: Path | None = None


class TrackStage:
    """Holds one `Tracker` per camera id; cameras never share state or ids."""

    def __init__(self, config: TrackStageConfig | None = None) -> None:
        self.config = config or TrackStageConfig()
        self._trackers: dict[str, Tracker] = {}
        self._ids: dict[str, IdAllocator] = {}  # kept when a tracker is dropped

    def setup(self) -> None:
        if self.config.state_dir is not None:
            Path(self.config.state_dir).mkdir(parents=True, exist_ok=True)

    def tracker(self, camera_id: str) -> Tracker:
        """The camera's tracker, created on first use."""
        tracker = self._trackers.get(camera_id)
        if tracker is None:
            cfg = self.config
            fps = cfg.frame_rates_hz.get(camera_id, cfg.default_frame_rate_hz)
            ids = self._ids.get(camera_id) or IdAllocator(
                None if cfg.state_dir is None else Path(cfg.state_dir) / _state_file(camera_id)
            )
            self._ids[camera_id] = ids
            tracker = Tracker(cfg.tracker, frame_rate_hz=fps, ids=ids)
            self._trackers[camera_id] = tracker
        return tracker

    def drop(self, camera_id: str) -> None:
        """Forget the camera's tracks (it ended or was removed): its next frame starts a new
        tracker, whose track ids continue after the old ones (never reused in its stream)."""
        self._trackers.pop(camera_id, None)

    def process(self, msg: DetectionsMessage) -> TrackedFrame:
        out = self.tracker(msg.camera_id).update(
            msg.boxes, msg.scores, msg.class_ids, msg.capture_ts
        )
        return TrackedFrame(msg.camera_id, msg.frame_id, msg.capture_ts, out.tracks, out.events)

    def close(self) -> None:
        self._trackers.clear()


def _state_file(camera_id: str) -> str:
    """A file name for a camera id: safe characters kept, the rest replaced, plus a short hash
    so two ids that differ only in unsafe characters never share a file."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", camera_id)[:64]
    digest = hashlib.sha1(camera_id.encode()).hexdigest()[:8]
    return f"{safe}-{digest}.json"
