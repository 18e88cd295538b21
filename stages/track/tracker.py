"""One camera's multi-object tracker: BYTE association with OC-SORT's observation-centric fixes.

Per frame (`Tracker.update`):

1. Predict every track one frame ahead (batched Kalman filter, `stages.track.kalman`).
2. First pass: high-score detections against confirmed tracks, tracked *and* lost, by
   score-fused IoU plus a velocity-direction consistency bonus (OC-SORT's OCM).
3. Second pass (BYTE): low-score detections against the still-unmatched *tracked* tracks, by
   plain IoU — occluded objects stay tracked on weak detections.
4. Last-box pass: leftover high-score detections against still-unmatched confirmed tracks, by
   IoU with the track's last *observed* box (OC-SORT's OCR) — for objects whose prediction
   drifted while they were hidden.
5. Tentative pass: leftover high-score detections against tentative tracks; a tentative track that
   reaches ``min_hits`` is confirmed and gets its id. Unmatched tentative tracks are dropped.
6. Matched tracks that had been lost are first re-run along a straight virtual path from their
   last observation (OC-SORT's ORU), then every match updates its filter.
7. Leftover detections above ``new_track_score`` start tentative tracks; lost tracks older than
   ``lost_track_seconds`` are removed — and dropped from memory.

All state lives in flat numpy columns on the instance (one row per live track), so the work per
frame is a fixed number of vectorised operations and memory is bounded by the live tracks.
"""

from __future__ import annotations

import numpy as np

from stages.track import kalman
from stages.track.association import direction_consistency, match
from stages.track.config import TrackerConfig
from stages.track.ids import IdAllocator
from stages.track.matching import iou_matrix
from stages.track.types import TrackerOutput, TrackEvent, TrackEventKind, Tracks

TENTATIVE, TRACKED, LOST = 0, 1, 2

_EMPTY = np.zeros(0, dtype=np.intp)
_CLEAR_VIEW_IOU = 0.2  # a detection overlapping another one this much does not teach its look
_CMC_PAIR_IOU = 0.5  # camera motion: a track/detection pair this sure is the same object
_CMC_MIN_PAIRS = 3  # camera motion: fewer pairs cannot tell the camera from one object
_CMC_SIGNIFICANCE = 2.0  # camera motion: shift only if > 2 robust standard errors of the median


def _median(a: np.ndarray) -> np.ndarray:
    """Column medians of a small (n, k) array (np.median costs ~20x more at this size)."""
    a = np.sort(a, axis=0)
    n = a.shape[0]
    return 0.5 * (a[(n - 1) // 2] + a[n // 2])


class Tracker:
    """Tracks the detections of one camera. Not thread-safe; one instance per camera.

    Args:
        config: tracking parameters (`TrackerConfig`; defaults are the product defaults).
        frame_rate_hz: the camera's real frame rate; converts ``lost_track_seconds`` to frames
            and timestamps to frame steps for the motion model.
        ids: where track ids come from; pass an `IdAllocator` with a state file to keep ids
            unique across restarts. Default: a fresh in-memory allocator starting at 1.
    """

    def __init__(
        self,
        config: TrackerConfig | None = None,
        frame_rate_hz: float = 30.0,
        ids: IdAllocator | None = None,
    ) -> None:
        self.config = config or TrackerConfig()
        self.frame_rate_hz = float(frame_rate_hz)
        self.max_lost_frames = self.config.lost_track_frames(self.frame_rate_hz)
        self._ids = ids or IdAllocator()
        self._frame = -1
        self._last_ts: float | None = None
        d = self.config.direction_delta_frames
        # One row per live track. Kalman state (current and right after the last observation).
        self._mean = np.zeros((0, 2, 4))
        self._cov = np.zeros((0, 3, 4))
        self._obs_mean = np.zeros((0, 2, 4))
        self._obs_cov = np.zeros((0, 3, 4))
        self._last_obs = np.zeros((0, 4))  # xyah of the last matched detection
        # Recent observed centres in a ring indexed by frame % d, for the direction of motion.
        self._anchor_xy = np.zeros((0, d, 2))
        self._anchor_frame = np.zeros((0, d), dtype=np.int64)
        self._direction = np.zeros((0, 2))
        self._has_direction = np.zeros(0, dtype=bool)
        self._track_id = np.zeros(0, dtype=np.int64)  # 0 while tentative
        self._state = np.zeros(0, dtype=np.int8)
        self._class = np.zeros(0, dtype=np.int64)
        self._hits = np.zeros(0, dtype=np.int64)
        self._last_frame = np.zeros(0, dtype=np.int64)
        self._first_ts = np.zeros(0)
        self._last_ts_col = np.zeros(0)
        self._feat = np.zeros((0, 0), np.float32)  # look (appearance descriptor EMA), unit norm
        self._has_feat = np.zeros(0, dtype=bool)

    # ------------------------------------------------------------------ public

    @property
    def num_tracks(self) -> int:
        """Live tracks held (tentative, tracked and lost)."""
        return int(self._state.shape[0])

    @property
    def state_bytes(self) -> int:
        """Bytes held in the track table (grows and shrinks with the live tracks only)."""
        return sum(getattr(self, name).nbytes for name in self._COLUMNS)

    @property
    def next_id(self) -> int:
        return self._ids.next_id

    def update(
        self,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        timestamp_s: float,
        features: np.ndarray | None = None,
    ) -> TrackerOutput:
        """Advance the tracker by one frame.

        Args:
            boxes: (N, 4) xyxy detections in source-image pixels.
            scores: (N,) detector confidences in [0, 1].
            class_ids: (N,) integer class ids.
            timestamp_s: capture time of the frame in seconds; gaps longer than one frame
                period (dropped frames) advance the motion model by that many frames.
            features: (N, D) appearance descriptors of the detections
                (`stages.detect.appearance.describe`), used when ``appearance_weight`` > 0;
                None: this frame has none (motion and overlap only).
        """
        cfg = self.config
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        class_ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
        if not (boxes.shape[0] == scores.shape[0] == class_ids.shape[0]):
            raise ValueError(
                f"boxes, scores and class_ids disagree on N: "
                f"{boxes.shape[0]}, {scores.shape[0]}, {class_ids.shape[0]}"
            )
        self._advance_clock(float(timestamp_s))
        frame = self._frame

        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        keep = np.nonzero((scores >= cfg.low_score) & (area >= cfg.min_box_area))[0]
        det_boxes, det_scores, det_class = boxes[keep], scores[keep], class_ids[keep]
        high = det_scores >= cfg.high_score
        det_feat = None
        if features is not None and cfg.appearance_weight > 0:
            features = np.asarray(features, dtype=np.float32)
            if features.ndim != 2 or features.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"features must be (N, D) with N = {boxes.shape[0]} detections, "
                    f"got {features.shape}"
                )
            det_feat = features[keep]
            if self._feat.shape[1] != det_feat.shape[1]:  # first descriptors seen (or new size)
                self._feat = np.zeros((self.num_tracks, det_feat.shape[1]), np.float32)
                self._has_feat[:] = False

        iou = iou_matrix(kalman.xyah_to_xyxy(self._mean[:, 0]), det_boxes)  # (tracks, dets)
        if cfg.camera_motion and self._compensate_camera(iou, det_boxes, high):
            iou = iou_matrix(kalman.xyah_to_xyxy(self._mean[:, 0]), det_boxes)
        state = self._state
        track_free = np.ones(self.num_tracks, dtype=bool)
        det_free = np.ones(det_boxes.shape[0], dtype=bool)
        m_track: list[np.ndarray] = []
        m_det: list[np.ndarray] = []

        def run_pass(
            t: np.ndarray,
            d: np.ndarray,
            min_iou: float,
            fuse: bool,
            bonus: np.ndarray | None,
            pair_iou: np.ndarray | None = None,
        ) -> None:
            if t.size == 0 or d.size == 0:
                return
            same = None if not cfg.per_class else self._class[t][:, None] == det_class[None, d]
            sub = iou[t][:, d] if pair_iou is None else pair_iou
            if det_feat is not None:
                look = self._appearance_bonus(t, det_feat[d])
                bonus = look if bonus is None else bonus + look
            r, c = match(sub, min_iou, det_scores[d] if fuse else None, same, bonus)
            m_track.append(t[r])
            m_det.append(d[c])
            track_free[t[r]] = False
            det_free[d[c]] = False

        # Pass 1: high-score detections vs confirmed (tracked + lost) tracks, with OCM.
        t1 = np.nonzero(state != TENTATIVE)[0]
        d1 = np.nonzero(high)[0]
        bonus = None
        if cfg.direction_weight > 0 and t1.size and d1.size:
            bonus = self._direction_bonus(t1, det_boxes[d1], det_scores[d1], frame)
        run_pass(t1, d1, cfg.match_iou, True, bonus)
        # Pass 2 (BYTE): low-score detections vs tracks that were tracked last frame.
        t2 = np.nonzero(track_free & (state == TRACKED))[0]
        run_pass(t2, np.nonzero(~high)[0], cfg.low_match_iou, False, None)
        # Pass 2b (OCR): leftover high-score detections vs unmatched confirmed tracks, by IoU
        # with their last observed box.
        tr = np.nonzero(track_free & (state != TENTATIVE))[0]
        dr = np.nonzero(det_free & high)[0]
        if tr.size and dr.size and cfg.last_box_match_iou < 1.0:
            last_iou = iou_matrix(kalman.xyah_to_xyxy(self._last_obs[tr]), det_boxes[dr])
            run_pass(tr, dr, cfg.last_box_match_iou, False, None, last_iou)
        # Pass 3: leftover high-score detections vs tentative tracks.
        t3 = np.nonzero(state == TENTATIVE)[0]
        run_pass(t3, np.nonzero(det_free & high)[0], cfg.tentative_match_iou, True, None)

        tracks_idx = np.concatenate(m_track) if m_track else _EMPTY
        dets_idx = np.concatenate(m_det) if m_det else _EMPTY
        events: list[TrackEvent] = []
        self._apply_matches(tracks_idx, det_boxes[dets_idx], det_class[dets_idx], frame, events)
        if det_feat is not None:
            self._learn_look(tracks_idx, dets_idx, det_boxes, det_feat)

        kept = self._retire(track_free, frame, events)
        if kept is not None:  # rows were dropped (never matched ones): renumber the matches
            tracks_idx = (np.cumsum(kept) - 1)[tracks_idx]
        births = np.nonzero(det_free & (det_scores >= cfg.new_track_score))[0]
        born = self._birth(det_boxes[births], det_class[births], frame, events)
        if det_feat is not None and born.size:
            self._learn_look(born, births, det_boxes, det_feat)
        tracks_idx = np.concatenate([tracks_idx, born])
        dets_idx = np.concatenate([dets_idx, births])
        out = self._output(tracks_idx, dets_idx, det_boxes, det_scores, det_class, keep)
        return TrackerOutput(out, events)

    # ----------------------------------------------------------------- helpers

    def _advance_clock(self, timestamp_s: float) -> None:
        steps = 1
        if self._last_ts is not None:
            steps = round((timestamp_s - self._last_ts) * self.frame_rate_hz)
            steps = min(max(steps, 1), self.max_lost_frames + 1)
        self._last_ts = timestamp_s
        self._frame += steps
        if self.num_tracks == 0:
            return
        cfg = self.config
        lost = self._state == LOST
        self._mean[lost, 1, 3] = 0.0  # a lost box keeps its size
        for _ in range(steps):
            self._mean, self._cov = kalman.predict(
                self._mean, self._cov, cfg.position_noise, cfg.velocity_noise
            )

    def _compensate_camera(self, iou: np.ndarray, det_boxes: np.ndarray, high: np.ndarray) -> bool:
        """Shift every track by the camera's estimated motion; True if a shift was applied.

        Pairs: each tracked track and the high-score detection it overlaps most, if at
        IoU >= `_CMC_PAIR_IOU` (a detection shared by two tracks only adds a near-duplicate
        offset to the median). The shift is the median of the pairs' centre offsets (robust to
        the few objects that turn or stop), applied only with at least `_CMC_MIN_PAIRS` pairs
        (fewer cannot tell a camera from one object) and, per axis, only where it exceeds
        `_CMC_SIGNIFICANCE` robust standard errors of that median (a still camera's detection
        jitter moves nothing). Every track moves: position, last observation, the state at the
        last observation and the direction anchors, so the OC-SORT passes stay consistent."""
        if iou.shape[0] < _CMC_MIN_PAIRS or iou.shape[1] < _CMC_MIN_PAIRS:
            return False
        sub = iou * high
        best_det = sub.argmax(axis=1)
        best = np.take_along_axis(sub, best_det[:, None], axis=1)[:, 0]
        rows = np.flatnonzero((best >= _CMC_PAIR_IOU) & (self._state == TRACKED))
        if rows.size < _CMC_MIN_PAIRS:
            return False
        d = det_boxes[best_det[rows]]
        offset = 0.5 * (d[:, :2] + d[:, 2:]) - self._mean[rows, 0, :2]
        shift = _median(offset)
        # robust standard error of a median: 1.253 * 1.4826 * MAD / sqrt(n)
        se = 1.858 * _median(np.abs(offset - shift)) / np.sqrt(rows.size)
        shift = np.where(np.abs(shift) > _CMC_SIGNIFICANCE * se, shift, 0.0)
        if not shift.any():
            return False
        self._mean[:, 0, :2] += shift
        self._obs_mean[:, 0, :2] += shift
        self._last_obs[:, :2] += shift
        self._anchor_xy += shift
        return True

    def _anchor(self, tracks: np.ndarray, frame: int) -> np.ndarray:
        """(n, 2) observed centre ~direction_delta_frames ago (else the last observation)."""
        slot = frame % self.config.direction_delta_frames
        anchor = self._anchor_xy[tracks, slot]
        missing = self._anchor_frame[tracks, slot] < 0
        if missing.any():
            anchor[missing] = self._last_obs[tracks[missing], :2]
        return anchor

    def _direction_bonus(
        self, tracks: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray, frame: int
    ) -> np.ndarray:
        det_xy = 0.5 * (det_boxes[:, :2] + det_boxes[:, 2:])
        return direction_consistency(
            self._direction[tracks],
            self._has_direction[tracks],
            self._anchor(tracks, frame),
            det_xy,
            det_scores,
            self.config.direction_weight,
        )

    def _appearance_bonus(self, tracks: np.ndarray, det_feat: np.ndarray) -> np.ndarray:
        """(n, m) appearance_weight x cosine similarity; 0 for tracks with no look yet."""
        cos = self._feat[tracks] @ det_feat.T
        return (self.config.appearance_weight * self._has_feat[tracks])[:, None] * cos

    def _learn_look(
        self, tracks: np.ndarray, dets: np.ndarray, det_boxes: np.ndarray, det_feat: np.ndarray
    ) -> None:
        """Blend the matched detections' descriptors into their tracks' looks, from clear
        views only: a box that overlaps another detection shows some of the other object."""
        if tracks.size == 0:
            return
        overlap = iou_matrix(det_boxes[dets], det_boxes)
        overlap[np.arange(dets.size), dets] = 0.0
        clear = overlap.max(axis=1, initial=0.0) < _CLEAR_VIEW_IOU
        rows, d = tracks[clear], det_feat[dets[clear]]
        if rows.size == 0:
            return
        k = self.config.appearance_momentum
        had = self._has_feat[rows][:, None]
        look = np.where(had, k * self._feat[rows] + (1.0 - k) * d, d)
        look /= np.linalg.norm(look, axis=1, keepdims=True) + 1e-6
        self._feat[rows] = look
        self._has_feat[rows] = True

    def _apply_matches(
        self,
        tracks: np.ndarray,
        det_boxes: np.ndarray,
        det_class: np.ndarray,
        frame: int,
        events: list[TrackEvent],
    ) -> None:
        if tracks.size == 0:
            return
        cfg = self.config
        z = kalman.xyxy_to_xyah(det_boxes)
        if cfg.observation_recovery:
            self._re_update(tracks, z, frame)
        self._mean[tracks], self._cov[tracks] = kalman.update(
            self._mean[tracks], self._cov[tracks], z, cfg.position_noise
        )
        self._obs_mean[tracks] = self._mean[tracks]
        self._obs_cov[tracks] = self._cov[tracks]
        self._update_direction(tracks, z[:, :2], frame)
        self._last_obs[tracks] = z
        self._hits[tracks] += 1
        self._last_frame[tracks] = frame
        self._last_ts_col[tracks] = self._last_ts
        if not cfg.per_class:
            self._class[tracks] = det_class

        state = self._state[tracks]
        for row in tracks[state == LOST].tolist():
            self._state[row] = TRACKED
            events.append(self._event(TrackEventKind.RECOVERED, row))
        for row in tracks[(state == TENTATIVE) & (self._hits[tracks] >= cfg.min_hits)].tolist():
            self._confirm(row, events)

    def _re_update(self, tracks: np.ndarray, z: np.ndarray, frame: int) -> None:
        """OC-SORT's observation-centric re-update for tracks matched after a gap.

        From the filter state at the last observation, alternate predict and update along
        evenly spaced virtual observations between the last and the new detection, then
        predict to this frame (the caller applies the real update)."""
        gap = frame - self._last_frame[tracks]
        sel = np.nonzero(gap > 1)[0]
        if sel.size == 0:
            return
        cfg = self.config
        sel = sel[np.argsort(-gap[sel], kind="stable")]  # longest gaps first
        rows, gap, z1 = tracks[sel], gap[sel], z[sel]
        z0 = self._last_obs[rows]
        mean, cov = self._obs_mean[rows], self._obs_cov[rows]
        for k in range(1, int(gap[0])):
            n = int(np.count_nonzero(gap > k))  # rows still on their virtual path: a prefix
            p_mean, p_cov = kalman.predict(
                mean[:n], cov[:n], cfg.position_noise, cfg.velocity_noise
            )
            virtual = z0[:n] + (z1[:n] - z0[:n]) * (k / gap[:n])[:, None]
            mean[:n], cov[:n] = kalman.update(p_mean, p_cov, virtual, cfg.position_noise)
        self._mean[rows], self._cov[rows] = kalman.predict(
            mean, cov, cfg.position_noise, cfg.velocity_noise
        )

    def _update_direction(self, tracks: np.ndarray, centre: np.ndarray, frame: int) -> None:
        slot = frame % self.config.direction_delta_frames
        previous = self._anchor(tracks, frame)
        seen = self._hits[tracks] > 0
        delta = centre - previous
        norm = np.sqrt((delta * delta).sum(axis=1))
        ok = seen & (norm > 1e-6)
        self._direction[tracks[ok]] = delta[ok] / norm[ok, None]
        self._has_direction[tracks[ok]] = True
        self._anchor_xy[tracks, slot] = centre
        self._anchor_frame[tracks, slot] = frame

    def _output(
        self,
        tracks: np.ndarray,
        dets: np.ndarray,
        det_boxes: np.ndarray,
        det_scores: np.ndarray,
        det_class: np.ndarray,
        keep: np.ndarray,
    ) -> Tracks:
        shown = self._state[tracks] == TRACKED
        tracks, dets = tracks[shown], dets[shown]
        if self.config.output_kalman_box:
            boxes = kalman.xyah_to_xyxy(self._mean[tracks, 0])
        else:
            boxes = det_boxes[dets]
        return Tracks(
            boxes=boxes.astype(np.float32),
            track_ids=self._track_id[tracks].copy(),
            scores=det_scores[dets].astype(np.float32),
            class_ids=det_class[dets].copy(),
            detection_index=keep[dets].astype(np.int64),
        )

    def _retire(
        self, unmatched: np.ndarray, frame: int, events: list[TrackEvent]
    ) -> np.ndarray | None:
        """Unmatched tracked -> lost; lost too long -> removed; unmatched tentative -> dropped.

        Returns the mask of rows kept, or None when no row was dropped."""
        state = self._state
        for row in np.flatnonzero(unmatched & (state == TRACKED)).tolist():
            state[row] = LOST
            events.append(self._event(TrackEventKind.LOST, row))
        expired = (state == LOST) & (frame - self._last_frame > self.max_lost_frames)
        for row in np.flatnonzero(expired).tolist():
            events.append(self._event(TrackEventKind.REMOVED, row))
        drop = expired | (unmatched & (state == TENTATIVE))
        if not drop.any():
            return None
        kept = ~drop
        self._keep_rows(kept)
        return kept

    def _birth(
        self, boxes: np.ndarray, class_ids: np.ndarray, frame: int, events: list[TrackEvent]
    ) -> np.ndarray:
        """Start tentative tracks (confirmed at once if min_hits is 1); returns their rows."""
        n = boxes.shape[0]
        if n == 0:
            return _EMPTY
        cfg = self.config
        z = kalman.xyxy_to_xyah(boxes)
        mean, cov = kalman.initiate(z, cfg.position_noise, cfg.velocity_noise)
        d = cfg.direction_delta_frames
        anchor_xy = np.zeros((n, d, 2))
        anchor_frame = np.full((n, d), -1, dtype=np.int64)
        anchor_xy[:, frame % d] = z[:, :2]
        anchor_frame[:, frame % d] = frame
        start = self.num_tracks
        self._append(
            mean=mean,
            cov=cov,
            last_obs=z,
            anchor_xy=anchor_xy,
            anchor_frame=anchor_frame,
            class_ids=class_ids,
            frame=frame,
        )
        if cfg.min_hits <= 1:
            for row in range(start, start + n):
                self._confirm(row, events)
        return np.arange(start, start + n)

    def _confirm(self, row: int, events: list[TrackEvent]) -> None:
        self._state[row] = TRACKED
        self._track_id[row] = self._ids.allocate()
        events.append(self._event(TrackEventKind.NEW, row))

    def _event(self, kind: TrackEventKind, row: int) -> TrackEvent:
        return TrackEvent(
            kind=kind,
            track_id=int(self._track_id[row]),
            class_id=int(self._class[row]),
            timestamp_s=float(self._last_ts or 0.0),
            first_seen_s=float(self._first_ts[row]),
            last_seen_s=float(self._last_ts_col[row]),
        )

    # ------------------------------------------------------------ track table

    _COLUMNS = (
        "_mean",
        "_cov",
        "_obs_mean",
        "_obs_cov",
        "_last_obs",
        "_anchor_xy",
        "_anchor_frame",
        "_direction",
        "_has_direction",
        "_track_id",
        "_state",
        "_class",
        "_hits",
        "_last_frame",
        "_first_ts",
        "_last_ts_col",
        "_feat",
        "_has_feat",
    )

    def _keep_rows(self, keep: np.ndarray) -> None:
        for name in self._COLUMNS:
            setattr(self, name, getattr(self, name)[keep])

    def _append(
        self,
        *,
        mean: np.ndarray,
        cov: np.ndarray,
        last_obs: np.ndarray,
        anchor_xy: np.ndarray,
        anchor_frame: np.ndarray,
        class_ids: np.ndarray,
        frame: int,
    ) -> None:
        n = mean.shape[0]
        ts = float(self._last_ts or 0.0)
        new = {
            "_mean": mean,
            "_cov": cov,
            "_obs_mean": mean,
            "_obs_cov": cov,
            "_last_obs": last_obs,
            "_anchor_xy": anchor_xy,
            "_anchor_frame": anchor_frame,
            "_direction": np.zeros((n, 2)),
            "_has_direction": np.zeros(n, dtype=bool),
            "_track_id": np.zeros(n, dtype=np.int64),
            "_state": np.full(n, TENTATIVE, dtype=np.int8),
            "_class": class_ids,
            "_hits": np.ones(n, dtype=np.int64),
            "_last_frame": np.full(n, frame, dtype=np.int64),
            "_first_ts": np.full(n, ts),
            "_last_ts_col": np.full(n, ts),
            "_feat": np.zeros((n, self._feat.shape[1]), np.float32),
            "_has_feat": np.zeros(n, dtype=bool),
        }
        for name in self._COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), new[name]]))
