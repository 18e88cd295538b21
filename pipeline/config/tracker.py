"""The tracker section."""

from __future__ import annotations

from pydantic import (
    Field,
    model_validator,
)

# The names of stages.detect.nn.ARCHS, spelled out so that validating a config does not import
from pipeline.config.base import ConfigProblems, EnvPath, _Strict


class TrackerSection(_Strict):
    """Tracker parameters (`stages.track.TrackerConfig`); defaults are the product defaults."""

    high_score: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Score (0..1) for the first association and new tracks.",
    )
    low_score: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Scores in [low_score, high_score) only keep tracks alive (0..1).",
    )
    new_track_score: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="An unmatched detection starts a track at this score (0..1).",
    )
    match_iou: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Minimum score-fused IoU of the first association (0..1).",
    )
    low_match_iou: float = Field(
        default=0.5, ge=0, le=1, description="Minimum IoU of the low-score association (0..1)."
    )
    tentative_match_iou: float = Field(
        default=0.3, ge=0, le=1, description="Minimum IoU to match a tentative track (0..1)."
    )
    min_hits: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Matched frames before a track is confirmed (frames, 1..1000).",
    )
    lost_track_seconds: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="How long a lost track is kept to take its id back (s, 0..3600).",
    )
    direction_weight: float = Field(
        default=0.2,
        ge=0,
        le=100,
        description="Weight of the motion-direction term (0..100; 0 disables).",
    )
    direction_delta_frames: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="Frames between the observations giving direction (1..1000).",
    )
    observation_recovery: bool = Field(
        default=True,
        description="Re-run the Kalman filter along a virtual path when a lost track returns.",
    )
    last_box_match_iou: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Minimum IoU with a track's last box (0..1; 1 disables).",
    )
    min_box_area: float = Field(
        default=10.0, ge=0, le=1e8, description="Smaller detections are ignored (px², 0..1e8)."
    )
    per_class: bool = Field(
        default=False, description="Match detections only to tracks of their class."
    )
    position_noise: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="Kalman position noise (fraction of box height/frame, 0 < x <= 10).",
    )
    velocity_noise: float = Field(
        default=0.00625,
        gt=0,
        le=10,
        description="Kalman velocity noise (fraction of box height/frame, 0 < x <= 10).",
    )
    appearance_weight: float = Field(
        default=0.0,
        ge=0,
        le=10,
        description="Weight of the appearance cue (colour layout of each box, computed by the "
        "detect stage when > 0) when overlapping tracks and detections are matched (0..10; "
        "0 disables). Helps keep ids apart when people cross.",
    )
    appearance_momentum: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Weight of a track's old look per frame in its running average (0..1).",
    )
    output_kalman_box: bool = Field(
        default=False, description="Report the filtered box instead of the matched detection's box."
    )
    default_frame_rate_hz: float = Field(
        default=30.0,
        gt=0,
        le=1000,
        description="Frame rate (frames/s, 0 < f <= 1000) for cameras without frame_rate_hz.",
    )
    state_dir: EnvPath | None = Field(
        default=None,
        description="Folder where each camera's next track id is kept so ids stay unique "
        "across restarts; null keeps ids in memory (they restart at 1).",
    )

    @model_validator(mode="after")
    def _scores(self) -> TrackerSection:
        if self.low_score > self.high_score:
            raise ConfigProblems([(("low_score",), f"must be <= high_score ({self.high_score})")])
        return self
