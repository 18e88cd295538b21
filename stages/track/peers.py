"""Published Python trackers run side by side with edgestream's in the evaluation harness.

Each peer is built through a factory that imports its package lazily; a peer whose package is
missing is skipped with the reason (the harness prints it). Peers run with their package
defaults, told the sequence's real frame rate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.track.config import TrackerConfig
from stages.track.tracker import Tracker

# One frame in: boxes (N, 4) xyxy float32, scores (N,) float32. Out: ids, boxes, scores.
FrameResult = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PeerRun:
    """One tracker instance for one sequence. ``prepare`` converts a frame's detections to the
    tracker's input outside the timed region; ``step`` is the update (the only part timed);
    ``rows`` turns its output into (ids, boxes xyxy, scores) of the confirmed tracks."""

    prepare: Callable[[np.ndarray, np.ndarray], Any]
    step: Callable[[Any], Any]
    rows: Callable[[Any], FrameResult]


@dataclass(frozen=True)
class Peer:
    """A tracker under evaluation; ``make(frame_rate_hz)`` builds a fresh instance."""

    name: str
    make: Callable[[float], PeerRun]


def edgestream_peer(config: TrackerConfig | None = None) -> Peer:
    """edgestream's `Tracker`, with ``config`` (default: the product defaults)."""

    def make(fps: float) -> PeerRun:
        tracker = Tracker(config, frame_rate_hz=fps)
        frame = [0]

        def prepare(boxes: np.ndarray, scores: np.ndarray) -> tuple:
            ts = frame[0] / fps
            frame[0] += 1
            return boxes, scores, np.zeros(len(scores), dtype=np.int64), ts

        def rows(out: Any) -> FrameResult:
            return out.tracks.track_ids, out.tracks.boxes, out.tracks.scores

        return PeerRun(prepare, lambda args: tracker.update(*args), rows)

    return Peer("edgestream", make)


def _sv_detections(boxes: np.ndarray, scores: np.ndarray) -> Any:
    import supervision as sv

    return sv.Detections(
        xyxy=boxes.astype(np.float32),
        confidence=scores.astype(np.float32),
        class_id=np.zeros(len(scores), dtype=int),
    )


def supervision_bytetrack() -> Peer:
    import warnings

    import supervision as sv

    def make(fps: float) -> PeerRun:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sv.ByteTrack is deprecated in favour of `trackers`
            tracker = sv.ByteTrack(frame_rate=round(fps))
        return PeerRun(_sv_detections, tracker.update_with_detections, _sv_rows)

    return Peer(f"supervision {sv.__version__} ByteTrack", make)


def trackers_peer(kind: str) -> Peer:
    from importlib.metadata import version

    import trackers

    cls = {"bytetrack": trackers.ByteTrackTracker, "ocsort": trackers.OCSORTTracker}[kind]
    label = {"bytetrack": "ByteTrack", "ocsort": "OC-SORT"}[kind]

    def make(fps: float) -> PeerRun:
        return PeerRun(_sv_detections, cls(frame_rate=fps).update, _sv_rows)

    return Peer(f"trackers {version('trackers')} {label}", make)


def _sv_rows(out: Any) -> FrameResult:
    """(ids, boxes, scores) of the rows of an ``sv.Detections`` that carry a track id."""
    if out.tracker_id is None or len(out.tracker_id) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    ids = np.asarray(out.tracker_id)
    ok = ids >= 0
    scores = np.ones(len(ids)) if out.confidence is None else np.asarray(out.confidence)
    return ids[ok], np.asarray(out.xyxy)[ok], scores[ok]


def available_peers(include_peers: bool) -> tuple[list[Peer], list[str]]:
    """edgestream plus, with ``include_peers``, every peer that imports. Returns (peers, skipped
    reasons)."""
    peers = [edgestream_peer()]
    skipped: list[str] = []
    if not include_peers:
        return peers, skipped
    factories: list[tuple[str, Callable[[], Peer]]] = [
        ("supervision ByteTrack", supervision_bytetrack),
        ("trackers ByteTrack", lambda: trackers_peer("bytetrack")),
        ("trackers OC-SORT", lambda: trackers_peer("ocsort")),
    ]
    for label, factory in factories:
        try:
            peers.append(factory())
        except ImportError as exc:
            skipped.append(f"{label}: skipped, cannot import ({exc})")
    return peers, skipped
