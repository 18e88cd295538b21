"""Tracker parameters: one model, every field with its unit, bounds and trade-off.

`TrackerConfig` is what one camera's `Tracker` takes; `TrackerSection` adds the track stage's
own two settings and is the ``tracker:`` section of the pipeline config, as it is (the
pipeline config composes the stages' models; nothing here is declared a second time).
The attribute docstrings are the field descriptions of the config reference.
"""

from __future__ import annotations

import math

from pydantic import ConfigDict, Field, model_validator

from pipeline.config.base import ConfigProblems, EnvPath, StrictModel


class TrackerConfig(StrictModel):
    """Parameters of one camera's `Tracker`. The defaults are the product defaults.

    One set for every camera, never per sequence, chosen by leave-one-sequence-out
    cross-validation over the four MOT17 and two MOT15 sequences with public detections and two
    synthetic scenes (``edgestream eval-tracker --cv``, `stages.track.cv`): the setting with the
    best mean rank (HOTA, IDF1, ID switches) smoothed over its grid neighbours, so a flat region
    wins over a sharp optimum; ``camera_motion`` was kept because it improved the held-out scores.

    Scores are detector confidences in [0, 1]; times are seconds of camera (capture) time,
    converted to frames with the camera's real frame rate.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    high_score: float = Field(default=0.6, ge=0, le=1)
    """Detections at or above this score enter the first association (with tracked and lost
    tracks) and may start tracks. Higher keeps false positives out of the first, most trusted
    pass; lower lets weak true objects take ids earlier."""

    low_score: float = Field(default=0.1, ge=0, le=1)
    """Detections in [low_score, high_score) are used only in the second association, to keep
    already-tracked objects alive through occlusion (BYTE). Below it a detection is ignored.
    Lower recovers more occluded objects but risks feeding clutter to a track."""

    new_track_score: float = Field(default=0.7, ge=0, le=1)
    """An unmatched detection starts a (tentative) track only at or above this score. Higher means
    fewer spurious ids; lower means objects get an id sooner."""

    match_iou: float = Field(default=0.3, ge=0, le=1)
    """Minimum score-fused IoU for the first association (IoU times detection score). Lower lets
    fast or erratic objects keep their id, higher avoids id swaps in crowds."""

    low_match_iou: float = Field(default=0.5, ge=0, le=1)
    """Minimum IoU for the second (low-score) association. Kept strict: low-score boxes are often
    partial views or clutter, and a wrong match there moves a good track."""

    tentative_match_iou: float = Field(default=0.3, ge=0, le=1)
    """Minimum IoU to match a tentative (not yet confirmed) track with a leftover detection."""

    min_hits: int = Field(default=2, ge=1, le=1000)
    """Matched frames a track needs before it is confirmed and gets an id. 1 confirms at once
    (lowest latency, more one-frame ghosts); larger filters more flicker but hides new objects
    for longer."""

    lost_track_seconds: float = Field(default=2.0, ge=0, le=3600)
    """How long a track that lost its detections is kept (in seconds, converted with the camera's
    frame rate) so it can take its id back when the object reappears. Longer bridges longer
    occlusions at the risk of handing the id to a different object; memory grows with it."""

    direction_weight: float = Field(default=0.2, ge=0, le=100)
    """Weight of the velocity-direction consistency term (OC-SORT's OCM) added to the IoU in the
    first association: a detection lying in the direction the track was moving is preferred.
    0 disables it; large values let direction outvote overlap."""

    direction_delta_frames: int = Field(default=3, ge=1, le=1000)
    """Frames between the two observations that define a track's direction of motion. Longer is
    smoother and less noisy, shorter reacts faster to turns."""

    observation_recovery: bool = True
    """When a lost track is matched again, re-run its Kalman filter along a straight virtual path
    from its last observation to the new one (OC-SORT's ORU) instead of keeping the velocity that
    drifted while it was lost. Cuts id switches after occlusions; costs time on recovery only."""

    last_box_match_iou: float = Field(default=0.5, ge=0, le=1)
    """After the first two passes, leftover high-score detections are matched to still-unmatched
    confirmed tracks by IoU with the track's *last observed* box rather than its prediction
    (OC-SORT's observation-centric recovery): an object that stopped while occluded, or whose
    prediction drifted, gets its id back. Minimum IoU for that match; 1.0 disables the pass."""

    camera_motion: bool = True
    """Compensate camera motion from the boxes themselves (no pixels needed): each frame, the
    median offset between confident detections and the predicted boxes of the tracked tracks
    they clearly overlap (IoU >= 0.5, at least 3 pairs) is taken as the camera's shift and
    applied to every track, lost ones too, whose predictions would otherwise stay where the
    camera left them (the box-only counterpart of BoT-SORT's global motion compensation).
    A median over many tracks ignores one person's turn, and a shift within two standard
    errors of zero is not applied, so a still camera is left alone. Off: pure Kalman motion;
    a pan is only learnt as every track's own velocity, and lost tracks drift off."""

    min_box_area: float = Field(default=10.0, ge=0, le=1e8)
    """Detections smaller than this (pixels², source image) are ignored: tiny boxes are mostly
    noise and their IoU is unstable."""

    per_class: bool = False
    """Associate only detections and tracks of the same class, so a car never takes a person's
    id. Off: class is carried along (last matched class wins); useful when the detector flips
    between similar classes of the same object."""

    position_noise: float = Field(default=1.0 / 20.0, gt=0, le=10)
    """Kalman position noise, as a fraction of box height per frame. Larger trusts detections
    more than the motion model (follows jitter); smaller smooths more but lags on turns."""

    velocity_noise: float = Field(default=1.0 / 160.0, gt=0, le=10)
    """Kalman velocity noise, as a fraction of box height per frame. Larger lets velocity change
    quickly; smaller assumes steadier motion (better prediction through occlusion)."""

    appearance_weight: float = Field(default=0.0, ge=0, le=10)
    """Weight of the appearance cue (`stages.detect.appearance`: colour layout of the box,
    cosine similarity in [-1, 1]) added to the overlap score when tracks and detections are
    matched. It only re-ranks pairs that overlap enough already, so it resolves which of two
    overlapping objects is which rather than creating far matches. Needs detections with
    descriptors (the pipeline's detect stage computes them when this is > 0); 0 disables it.
    Higher trusts colour more, which helps in crowds of differently dressed people and hurts
    when everyone wears the same."""

    appearance_momentum: float = Field(default=0.9, ge=0, le=1)
    """A track's look is an exponential average of its unoccluded detections' descriptors: this
    is the weight of the old look per frame (0..1). Higher is steadier against lighting flicker
    and partial views, lower adapts faster to turns and lighting changes."""

    output_kalman_box: bool = False
    """Report the Kalman-filtered box for matched tracks (smoother) instead of the matched
    detection's box. Off by default: on MOT17 the detection box localises better (HOTA -0.6 with
    the filtered box)."""

    @model_validator(mode="after")
    def _scores(self) -> TrackerConfig:
        if self.low_score > self.high_score:
            raise ConfigProblems([(("low_score",), f"must be <= high_score ({self.high_score})")])
        return self

    def lost_track_frames(self, frame_rate_hz: float) -> int:
        """`lost_track_seconds` in frames of a camera running at ``frame_rate_hz``."""
        if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
            raise ValueError(f"frame rate must be a finite number > 0 Hz, got {frame_rate_hz}")
        return max(1, round(self.lost_track_seconds * frame_rate_hz))

    @classmethod
    def field_names(cls) -> list[str]:
        return list(TrackerConfig.model_fields)


class TrackerSection(TrackerConfig):
    """The tracker: `TrackerConfig` (defaults are the product defaults) and the track stage's
    frame-rate fallback and id store."""

    default_frame_rate_hz: float = Field(default=30.0, gt=0, le=1000)
    """Frame rate (frames/s) for cameras without ``frame_rate_hz``: turns
    ``lost_track_seconds`` into frames."""

    state_dir: EnvPath | None = None
    """Folder where each camera's next track id is kept so ids stay unique across restarts;
    null keeps ids in memory (they restart at 1)."""

    def tracker(self) -> TrackerConfig:
        """The `TrackerConfig` part (what each camera's `Tracker` takes)."""
        return TrackerConfig(**self.model_dump(include=set(TrackerConfig.model_fields)))
