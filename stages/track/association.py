"""The association passes of one frame: similarity, gating and assignment of track/detection sets.

Each pass takes index arrays into the tracker's track table and into the frame's detections and
returns the matched pairs, so the tracker can chain passes on what is left.
"""

from __future__ import annotations

import numpy as np

from stages.track.matching import assign


def match(
    iou: np.ndarray,
    min_iou: float,
    det_scores: np.ndarray | None = None,
    same_class: np.ndarray | None = None,
    bonus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Match tracks to detections by maximum similarity, given their (N, M) ``iou``.

    The similarity is the IoU, multiplied by the detection score when ``det_scores`` (M,) is
    given (ByteTrack's score fusion: a confident detection wins a tie), plus ``bonus`` (N, M)
    if given. A pair is allowed only if the (fused) IoU reaches ``min_iou`` and, with
    ``same_class`` (N, M) bool, only within a class. Returns matched (track rows, det rows).
    """
    if det_scores is not None:
        iou = iou * det_scores[None, :]
    valid = iou >= min_iou
    if same_class is not None:
        valid &= same_class
    similarity = iou if bonus is None else iou + bonus
    return assign(similarity, valid)


def direction_consistency(
    track_direction: np.ndarray,
    has_direction: np.ndarray,
    anchor_xy: np.ndarray,
    det_xy: np.ndarray,
    det_scores: np.ndarray,
    weight: float,
) -> np.ndarray:
    """OC-SORT's velocity direction consistency term, (N, M).

    ``track_direction`` (N, 2) unit vectors of each track's recent motion, ``anchor_xy`` (N, 2)
    the track's observed centre a few frames back, ``det_xy`` (M, 2) detection centres. A
    detection that continues the track's direction scores up to ``+weight/2``, one in the
    opposite direction down to ``-weight/2``; scaled by detection score, zero for tracks with no
    direction yet.
    """
    dx = det_xy[None, :, 0] - anchor_xy[:, None, 0]
    dy = det_xy[None, :, 1] - anchor_xy[:, None, 1]
    norm = np.sqrt(dx * dx + dy * dy) + 1e-6
    cos = (dx * track_direction[:, None, 0] + dy * track_direction[:, None, 1]) / norm
    angle = np.arccos(np.clip(cos, -1.0, 1.0))
    term = (0.5 * np.pi - angle) / np.pi
    return (weight * has_direction[:, None]) * term * det_scores[None, :]
