"""Tracker parameters: one frozen dataclass, every field with its unit and its trade-off."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class TrackerConfig:
    """Parameters of one camera's `Tracker`. The defaults are the product defaults.

    One set for every camera, chosen on the four MOT17 train sequences with FRCNN public
    detections (combined HOTA/IDF1/ID switches; ``edgestream eval-tracker``), never per sequence.

    Scores are detector confidences in [0, 1]; times are seconds of camera (capture) time,
    converted to frames with the camera's real frame rate.
    """

    high_score: float = 0.6
    """Detections at or above this score enter the first association (with tracked and lost
    tracks) and may start tracks. Higher keeps false positives out of the first, most trusted
    pass; lower lets weak true objects take ids earlier."""

    low_score: float = 0.1
    """Detections in [low_score, high_score) are used only in the second association, to keep
    already-tracked objects alive through occlusion (BYTE). Below it a detection is ignored.
    Lower recovers more occluded objects but risks feeding clutter to a track."""

    new_track_score: float = 0.7
    """An unmatched detection starts a (tentative) track only at or above this score. Higher means
    fewer spurious ids; lower means objects get an id sooner."""

    match_iou: float = 0.25
    """Minimum score-fused IoU for the first association (IoU times detection score). Lower lets
    fast or erratic objects keep their id, higher avoids id swaps in crowds."""

    low_match_iou: float = 0.5
    """Minimum IoU for the second (low-score) association. Kept strict: low-score boxes are often
    partial views or clutter, and a wrong match there moves a good track."""

    tentative_match_iou: float = 0.3
    """Minimum IoU to match a tentative (not yet confirmed) track with a leftover detection."""

    min_hits: int = 3
    """Matched frames a track needs before it is confirmed and gets an id. 1 confirms at once
    (lowest latency, more one-frame ghosts); larger filters more flicker but hides new objects
    for longer."""

    lost_track_seconds: float = 2.0
    """How long a track that lost its detections is kept (in seconds, converted with the camera's
    frame rate) so it can take its id back when the object reappears. Longer bridges longer
    occlusions at the risk of handing the id to a different object; memory grows with it."""

    direction_weight: float = 0.2
    """Weight of the velocity-direction consistency term (OC-SORT's OCM) added to the IoU in the
    first association: a detection lying in the direction the track was moving is preferred.
    0 disables it; large values let direction outvote overlap."""

    direction_delta_frames: int = 3
    """Frames between the two observations that define a track's direction of motion. Longer is
    smoother and less noisy, shorter reacts faster to turns."""

    observation_recovery: bool = True
    """When a lost track is matched again, re-run its Kalman filter along a straight virtual path
    from its last observation to the new one (OC-SORT's ORU) instead of keeping the velocity that
    drifted while it was lost. Cuts id switches after occlusions; costs time on recovery only."""

    last_box_match_iou: float = 0.5
    """After the first two passes, leftover high-score detections are matched to still-unmatched
    confirmed tracks by IoU with the track's *last observed* box rather than its prediction
    (OC-SORT's observation-centric recovery): an object that stopped while occluded, or whose
    prediction drifted, gets its id back. Minimum IoU for that match; 1.0 disables the pass."""

    min_box_area: float = 10.0
    """Detections smaller than this (pixels², source image) are ignored: tiny boxes are mostly
    noise and their IoU is unstable."""

    per_class: bool = False
    """Associate only detections and tracks of the same class, so a car never takes a person's
    id. Off: class is carried along (last matched class wins); useful when the detector flips
    between similar classes of the same object."""

    position_noise: float = 1.0 / 20.0
    """Kalman position noise, as a fraction of box height per frame. Larger trusts detections
    more than the motion model (follows jitter); smaller smooths more but lags on turns."""

    velocity_noise: float = 1.0 / 160.0
    """Kalman velocity noise, as a fraction of box height per frame. Larger lets velocity change
    quickly; smaller assumes steadier motion (better prediction through occlusion)."""

    appearance_weight: float = 0.0
    """Weight of the appearance cue (`stages.detect.appearance`: colour layout of the box,
    cosine similarity in [-1, 1]) added to the overlap score when tracks and detections are
    matched. It only re-ranks pairs that overlap enough already, so it resolves which of two
    overlapping objects is which rather than creating far matches. Needs detections with
    descriptors (the pipeline's detect stage computes them when this is > 0); 0 disables it.
    Higher trusts colour more, which helps in crowds of differently dressed people and hurts
    when everyone wears the same."""

    appearance_momentum: float = 0.9
    """A track's look is an exponential average of its unoccluded detections' descriptors: this
    is the weight of the old look per frame (0..1). Higher is steadier against lighting flicker
    and partial views, lower adapts faster to turns and lighting changes."""

    output_kalman_box: bool = False
    """Report the Kalman-filtered box for matched tracks (smoother) instead of the matched
    detection's box. Off by default: on MOT17 the detection box localises better (HOTA -0.6 with
    the filtered box)."""

    def __post_init__(self) -> None:
        for name in ("high_score", "low_score", "new_track_score"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("match_iou", "low_match_iou", "tentative_match_iou", "last_box_match_iou"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        if self.low_score > self.high_score:
            raise ValueError(
                f"low_score ({self.low_score}) must not exceed high_score ({self.high_score})"
            )
        if self.min_hits < 1:
            raise ValueError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.direction_delta_frames < 1:
            raise ValueError(
                f"direction_delta_frames must be >= 1, got {self.direction_delta_frames}"
            )
        _check_range("appearance_momentum", self.appearance_momentum, 0.0, 1.0)
        for name in ("lost_track_seconds", "direction_weight", "min_box_area", "appearance_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        for name in ("position_noise", "velocity_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")

    def lost_track_frames(self, frame_rate_hz: float) -> int:
        """`lost_track_seconds` in frames of a camera running at ``frame_rate_hz``."""
        if not (math.isfinite(frame_rate_hz) and frame_rate_hz > 0):
            raise ValueError(f"frame rate must be a finite number > 0 Hz, got {frame_rate_hz}")
        return max(1, round(self.lost_track_seconds * frame_rate_hz))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
