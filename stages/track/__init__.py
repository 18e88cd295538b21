"""Multi-object tracking: one `Tracker` per camera (BYTE association with OC-SORT's
observation-centric fixes), wrapped by `TrackStage`; `pipeline_stage.OrderedTrackStage` is the
stage adapter the pipeline runs (per-camera reordering by ``seq``, then `TrackStage`)."""

from typing import TYPE_CHECKING

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


def __getattr__(name: str) -> object:
    """The public names, imported on first use: a config module of this package (imported by
    the CLI to validate a config before anything starts) must not pull in scipy (the tracker's)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
