"""The batched, block-diagonal Kalman filter against a textbook 8x8 implementation."""

from __future__ import annotations

import numpy as np
import pytest

from stages.track import kalman

WP, WV = 1.0 / 20.0, 1.0 / 160.0


class FullKalman:
    """Plain 8x8 constant-velocity filter on xyah with ByteTrack's height-scaled noise."""

    def __init__(self, z: np.ndarray) -> None:
        h = z[3]
        self.x = np.r_[z, np.zeros(4)]
        pos, vel = 2 * WP * h, 10 * WV * h
        self.P = np.diag(np.square([pos, pos, 2e-2, pos, vel, vel, 1e-4, vel]))
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def predict(self) -> None:
        h = self.x[3]
        q = np.diag(np.square([WP * h, WP * h, 1e-2, WP * h, WV * h, WV * h, 1e-5, WV * h]))
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + q

    def update(self, z: np.ndarray) -> None:
        h = self.x[3]
        r = np.diag(np.square([WP * h, WP * h, 1e-1, WP * h]))
        s = self.H @ self.P @ self.H.T + r
        k = self.P @ self.H.T @ np.linalg.inv(s)
        self.x = self.x + k @ (z - self.H @ self.x)
        self.P = (np.eye(8) - k @ self.H) @ self.P


def _full_cov(cov: np.ndarray) -> np.ndarray:
    """(3, 4) blocks -> (8, 8) covariance."""
    pp, pv, vv = cov
    return np.block([[np.diag(pp), np.diag(pv)], [np.diag(pv), np.diag(vv)]])


def test_batched_filter_matches_full_filter_over_a_noisy_trajectory() -> None:
    rng = np.random.default_rng(0)
    n = 5
    start = np.column_stack(
        [
            rng.uniform(100, 900, n),
            rng.uniform(100, 500, n),
            rng.uniform(0.3, 0.6, n),
            rng.uniform(40, 200, n),
        ]
    )
    step = np.column_stack(
        [rng.normal(0, 4, n), rng.normal(0, 2, n), np.zeros(n), rng.normal(0, 0.5, n)]
    )
    mean, cov = kalman.initiate(start, WP, WV)
    refs = [FullKalman(z) for z in start]
    for t in range(1, 40):
        mean, cov = kalman.predict(mean, cov, WP, WV)
        for ref in refs:
            ref.predict()
        if t % 7 == 0:  # a missed frame now and then: predict only
            continue
        z = start + t * step + rng.normal(0, 1.5, (n, 4)) * [1, 1, 0.01, 1]
        mean, cov = kalman.update(mean, cov, z, WP)
        for ref, zi in zip(refs, z, strict=True):
            ref.update(zi)
    for i, ref in enumerate(refs):
        np.testing.assert_allclose(mean[i].reshape(-1), ref.x, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(_full_cov(cov[i]), ref.P, rtol=1e-9, atol=1e-12)


def test_constant_velocity_is_learned_and_extrapolated() -> None:
    box0 = np.array([[100.0, 200.0, 0.5, 100.0]])
    mean, cov = kalman.initiate(box0, WP, WV)
    for t in range(1, 30):
        mean, cov = kalman.predict(mean, cov, WP, WV)
        mean, cov = kalman.update(mean, cov, box0 + np.array([[3.0 * t, -1.0 * t, 0, 0]]), WP)
    assert mean[0, 1, 0] == pytest.approx(3.0, abs=0.1)
    assert mean[0, 1, 1] == pytest.approx(-1.0, abs=0.1)
    pred, pred_cov = kalman.predict(mean, cov, WP, WV)
    assert pred[0, 0, 0] == pytest.approx(100.0 + 3.0 * 30, abs=0.5)
    # Uncertainty grows when only predicting.
    assert np.all(pred_cov[0, 0] > cov[0, 0])


def test_box_conversions_round_trip() -> None:
    boxes = np.array([[10.0, 20.0, 60.0, 220.0], [0.0, 0.0, 1.0, 2.0]])
    xyah = kalman.xyxy_to_xyah(boxes)
    np.testing.assert_allclose(xyah[0], [35.0, 120.0, 0.25, 200.0])
    np.testing.assert_allclose(kalman.xyah_to_xyxy(xyah), boxes)
