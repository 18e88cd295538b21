"""The tracker's own types (``stages.track.types``) as the sinks' payload.

The payload types themselves (`FrameResult`, `TrackedObject`, `TrackLifecycleEvent`) are the
runtime's and live in `pipeline.payloads`; this module only converts into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from pipeline.payloads import TrackedObject, TrackLifecycleEvent, class_name
from stages.track.types import TrackEvent, Tracks


def track_events_from(
    events: Iterable[TrackEvent], class_names: Sequence[str] | Mapping[int, str]
) -> tuple[TrackLifecycleEvent, ...]:
    """Converts the tracker's `TrackEvent`s (``stages.track.types``) for a `FrameResult`.

    The tracker knows class ids only; ``class_names`` maps them (a list indexed by id, or a
    dict). An id without a name becomes ``class_<id>``, as the detector does.
    """
    return tuple(
        TrackLifecycleEvent(
            kind=getattr(e.kind, "value", e.kind),
            track_id=int(e.track_id),
            class_id=int(e.class_id),
            class_name=class_name(class_names, int(e.class_id)),
            event_ts=float(e.timestamp_s),
            first_seen_ts=float(e.first_seen_s),
            last_seen_ts=float(e.last_seen_s),
        )
        for e in events
    )


def tracked_objects(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    tracks: Tracks,
    class_names: Sequence[str] | Mapping[int, str],
) -> tuple[TrackedObject, ...]:
    """Every detection of a frame as a `TrackedObject`, in detection order: with its track's id
    and box when a track took it (``tracks.detection_index``), else ``track_id`` None and the
    detection's own box (unconfirmed objects are published too)."""
    track_ids: list[int | None] = [None] * len(scores)
    if len(tracks):
        boxes = np.array(boxes, copy=True)
        for row, det_index in enumerate(tracks.detection_index.tolist()):
            track_ids[det_index] = int(tracks.track_ids[row])
            boxes[det_index] = tracks.boxes[row]
    return tuple(
        TrackedObject(
            tid, int(c), class_name(class_names, int(c)), float(s), (b[0], b[1], b[2], b[3])
        )
        for tid, c, s, b in zip(
            track_ids,
            np.asarray(class_ids).tolist(),
            np.asarray(scores).tolist(),
            np.asarray(boxes, np.float64).tolist(),
            strict=True,
        )
    )
