"""Plane geometry for zones and lines, vectorised over points with numpy.

Image coordinates: ``x`` right, ``y`` down, in source pixels. Plain numpy rather than Shapely:
the three operations needed (a box's anchor point, the signed distance of points to a directed
line, the signed distance of points to a polygon's boundary) are a few lines each, and the
per-frame cost is one vectorised pass per zone or line over the frame's tracks.
"""

from __future__ import annotations

import numpy as np

ANCHORS = ("bottom_center", "center", "top_center")


def anchor_points(boxes: np.ndarray, anchor: str = "bottom_center") -> np.ndarray:
    """(N, 2) float64: the ``anchor`` point of each xyxy box in ``boxes`` (N, 4)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x = (b[:, 0] + b[:, 2]) / 2
    if anchor == "bottom_center":
        y = b[:, 3]
    elif anchor == "center":
        y = (b[:, 1] + b[:, 3]) / 2
    elif anchor == "top_center":
        y = b[:, 1]
    else:
        raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    return np.stack([x, y], axis=1)


def line_side(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed distance (px) of each point to the infinite line through ``a`` → ``b``:
    positive on the line's right as seen on the image (y down: for a line drawn left to
    right, below it), negative on its left, 0 on it."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    rel = p - np.asarray(a, np.float64)
    return (d[0] * rel[:, 1] - d[1] * rel[:, 0]) / float(np.hypot(d[0], d[1]))


def crossing_on_segment(
    p: np.ndarray, q: np.ndarray, a: np.ndarray, b: np.ndarray, tolerance_px: float = 0.0
) -> bool:
    """Whether the move ``p`` → ``q`` (on opposite sides of line a→b) crosses the line within
    the segment ``a``..``b`` (extended by ``tolerance_px`` at both ends)."""
    sp, sq = line_side(np.stack([p, q]), a, b)
    if sp == sq:
        return False
    f = sp / (sp - sq)
    x = np.asarray(p, np.float64) + f * (np.asarray(q, np.float64) - np.asarray(p, np.float64))
    d = np.asarray(b, np.float64) - np.asarray(a, np.float64)
    length = float(np.hypot(d[0], d[1]))
    t = float(np.dot(x - a, d)) / length  # px along the segment from a
    return -tolerance_px <= t <= length + tolerance_px


def polygon_signed_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance (px) of each point to the polygon's boundary: positive inside, negative
    outside (even-odd rule), 0 on an edge. ``polygon`` (M, 2), M >= 3, closed implicitly."""
    p = np.asarray(points, np.float64).reshape(-1, 1, 2)
    a = np.asarray(polygon, np.float64).reshape(1, -1, 2)
    b = np.roll(a, -1, axis=1)
    ab = b - a
    ap = p - a
    denom = np.maximum((ab**2).sum(-1), 1e-12)
    t = np.clip((ap * ab).sum(-1) / denom, 0.0, 1.0)
    nearest = a + t[..., None] * ab
    dist = np.sqrt(((p - nearest) ** 2).sum(-1)).min(axis=1)
    # even-odd ray casting towards +x
    px, py = p[..., 0], p[..., 1]
    ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
    straddles = (ay > py) != (by > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = ax + (py - ay) * (bx - ax) / (by - ay)
    inside = (straddles & (px < x_cross)).sum(axis=1) % 2 == 1
    return np.where(inside, dist, -dist)


def scaled(points: list[tuple[float, float]], normalized: bool, width: int, height: int
           ) -> np.ndarray:  # fmt: skip
    """(M, 2) pixel coordinates of configured ``points`` for an image of ``width`` x ``height``."""
    arr = np.asarray(points, np.float64).reshape(-1, 2)
    if normalized:
        arr = arr * np.array([width, height], np.float64)
    return arr
