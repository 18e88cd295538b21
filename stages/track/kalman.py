"""Constant-velocity Kalman filter on (centre x, centre y, aspect ratio w/h, height), batched.

The state of one track is ``[cx, cy, a, h, vcx, vcy, va, vh]``. The motion model
(``x' = x + v``), the process noise and the measurement noise are all diagonal per coordinate,
with standard deviations proportional to the box height (ByteTrack's choice: a tall, near box
moves more pixels per frame than a small, far one). With that structure the 8x8 covariance never
couples two coordinates: it is four independent 2x2 blocks ``[[pp, pv], [pv, vv]]``. We store
exactly those blocks, so predict and update are a few elementwise numpy operations over all
tracks at once instead of 8x8 matrix products per track — the same numbers as the full filter
(the unit tests check that against a textbook 8x8 implementation).

Arrays: ``mean`` (N, 2, 4) = [position, velocity]; ``cov`` (N, 3, 4) = [pp, pv, vv].
"""

from __future__ import annotations

import numpy as np

# Noise for the aspect ratio is absolute, not scaled by height (ByteTrack's values).
_ASPECT_POS_STD = 1e-2
_ASPECT_VEL_STD = 1e-5
_ASPECT_MEAS_STD = 1e-1


def _height_scaled_var(h: np.ndarray, weight: float, aspect_std: float) -> np.ndarray:
    """(N, 4) variances: ``(weight * h)²`` for cx, cy, h and ``aspect_std²`` for a."""
    var = np.empty((h.shape[0], 4))
    var[:] = np.square(weight * h)[:, None]
    var[:, 2] = aspect_std * aspect_std
    return var


def xyxy_to_xyah(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy boxes to (N, 4) [cx, cy, w/h, h]."""
    out = np.empty((boxes.shape[0], 4))
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    out[:, 0] = boxes[:, 0] + 0.5 * w
    out[:, 1] = boxes[:, 1] + 0.5 * h
    out[:, 2] = w / np.maximum(h, 1e-6)
    out[:, 3] = h
    return out


def xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray:
    """(N, 4) [cx, cy, w/h, h] to (N, 4) xyxy boxes."""
    out = np.empty((xyah.shape[0], 4))
    w = xyah[:, 2] * xyah[:, 3]
    out[:, 0] = xyah[:, 0] - 0.5 * w
    out[:, 1] = xyah[:, 1] - 0.5 * xyah[:, 3]
    out[:, 2] = out[:, 0] + w
    out[:, 3] = out[:, 1] + xyah[:, 3]
    return out


def initiate(
    measurement: np.ndarray, position_noise: float, velocity_noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from (N, 4) xyah measurements: zero velocity, wide velocity uncertainty."""
    n = measurement.shape[0]
    mean = np.zeros((n, 2, 4))
    mean[:, 0] = measurement
    h = measurement[:, 3]
    cov = np.zeros((n, 3, 4))
    cov[:, 0] = _height_scaled_var(h, 2.0 * position_noise, 2.0 * _ASPECT_POS_STD)
    cov[:, 2] = _height_scaled_var(h, 10.0 * velocity_noise, 10.0 * _ASPECT_VEL_STD)
    return mean, cov


def predict(
    mean: np.ndarray, cov: np.ndarray, position_noise: float, velocity_noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """One frame ahead for every row. Returns new arrays (inputs are not modified)."""
    h = mean[:, 0, 3]
    new_mean = mean.copy()
    new_mean[:, 0] += mean[:, 1]
    pv, vv = cov[:, 1], cov[:, 2]
    new_cov = cov.copy()
    new_cov[:, 0] += 2.0 * pv + vv + _height_scaled_var(h, position_noise, _ASPECT_POS_STD)
    new_cov[:, 1] += vv
    new_cov[:, 2] += _height_scaled_var(h, velocity_noise, _ASPECT_VEL_STD)
    return new_mean, new_cov


def update(
    mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray, position_noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """Correct every row with its (N, 4) xyah measurement. Returns new arrays.

    The measurement noise is scaled by the *predicted* height, as in ByteTrack.
    """
    r = _height_scaled_var(mean[:, 0, 3], position_noise, _ASPECT_MEAS_STD)
    pp, pv = cov[:, 0], cov[:, 1]
    s = pp + r
    # Gains for position and velocity, stacked: (N, 2, 4).
    gain = cov[:, :2] / s[:, None]
    new_mean = mean + gain * (measurement - mean[:, 0])[:, None]
    new_cov = np.empty_like(cov)
    new_cov[:, :2] = cov[:, :2] * (1.0 - gain[:, :1])
    new_cov[:, 2] = cov[:, 2] - gain[:, 1] * pv
    return new_mean, new_cov
