"""Multi-object tracking: one `Tracker` per camera (BYTE association with OC-SORT's
observation-centric fixes), wrapped by `TrackStage`; `pipeline_stage.OrderedTrackStage` is the
stage adapter the pipeline runs (per-camera reordering by ``seq``, then `TrackStage`)."""

from stages.track.config import TrackerConfig
from stages.track.ids import IdAllocator
from stages.track.stage import TrackedFrame, TrackStage, TrackStageConfig
from stages.track.tracker import Tracker
from stages.track.types import TrackerOutput, TrackEvent, TrackEventKind, Tracks

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
