"""Multi-object tracking: one `Tracker` per camera (BYTE association with OC-SORT's
observation-centric fixes), wrapped by `TrackStage`; `pipeline_stage.OrderedTrackStage` is the
stage adapter the pipeline runs (per-camera reordering by ``seq``, then `TrackStage`)."""

from typing import TYPE_CHECKING

from pipeline.lazy import lazy_exports

_EXPORTS = {
    "TrackerConfig": "stages.track.config",
    "IdAllocator": "stages.track.ids",
    "TrackedFrame": "stages.track.stage",
    "TrackStage": "stages.track.stage",
    "TrackStageConfig": "stages.track.stage",
    "Tracker": "stages.track.tracker",
    "TrackerOutput": "stages.track.types",
    "TrackEvent": "stages.track.types",
    "TrackEventKind": "stages.track.types",
    "Tracks": "stages.track.types",
}
__all__ = [
    "IdAllocator",
    "TrackEvent",
    "TrackEventKind",
    "TrackStage",
    "TrackStageConfig",
    "TrackedFrame",
    "Tracker",
    "TrackerConfig",
    "TrackerOutput",
    "Tracks",
]

if TYPE_CHECKING:
    from stages.track.config import TrackerConfig
    from stages.track.ids import IdAllocator
    from stages.track.stage import TrackedFrame, TrackStage, TrackStageConfig
    from stages.track.tracker import Tracker
    from stages.track.types import TrackerOutput, TrackEvent, TrackEventKind, Tracks


__getattr__ = lazy_exports(__name__, _EXPORTS)  # the names above, imported on first use
