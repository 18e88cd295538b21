"""The tracker's own types (``stages.track.types``) as the sinks' payload.

The payload types themselves (`FrameResult`, `TrackedObject`, `TrackLifecycleEvent`) are the
runtime's and live in `pipeline.payloads`; this module only converts into them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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


def objects_from_tracks(
    tracks: Tracks, class_names: Sequence[str] | Mapping[int, str]
) -> tuple[TrackedObject, ...]:
    """The tracker's column arrays (``stages.track.types.Tracks``) as `TrackedObject`s."""
    columns = zip(
        tracks.track_ids.tolist(),
        tracks.class_ids.tolist(),
        tracks.scores.tolist(),
        tracks.boxes.tolist(),
        strict=True,
    )
    return tuple(
        TrackedObject(tid, cid, class_name(class_names, cid), score, tuple(box))
        for tid, cid, score, box in columns
    )
