"""Geometry of zones and lines: anchors, signed distances, crossings within a segment."""

from __future__ import annotations

import numpy as np
import pytest

from stages.analytics.geometry import (
    anchor_points,
    crossing_on_segment,
    line_side,
    polygon_signed_distance,
    scaled,
)


def test_anchor_points() -> None:
    boxes = np.array([[10, 20, 30, 60], [0, 0, 4, 2]], np.float32)
    assert anchor_points(boxes).tolist() == [[20, 60], [2, 2]]
    assert anchor_points(boxes, "center").tolist() == [[20, 40], [2, 1]]
    assert anchor_points(boxes, "top_center").tolist() == [[20, 20], [2, 0]]
    with pytest.raises(ValueError, match="anchor"):
        anchor_points(boxes, "feet")


def test_line_side_sign_and_distance() -> None:
    # a line drawn left to right: below it (y larger) is its right as seen on the image
    a, b = np.array([0.0, 10.0]), np.array([100.0, 10.0])
    s = line_side(np.array([[50, 15], [50, 4], [70, 10]]), a, b)
    assert s.tolist() == pytest.approx([5.0, -6.0, 0.0])
    # reversing the line flips the sides
    assert line_side(np.array([[50, 15]]), b, a).tolist() == pytest.approx([-5.0])
    # a slanted line: distance is perpendicular, in pixels
    s = line_side(np.array([[0, 10]]), np.array([0.0, 0.0]), np.array([10.0, 10.0]))
    assert s.tolist() == pytest.approx([10 / np.sqrt(2)])


def test_crossing_only_within_the_segment() -> None:
    a, b = np.array([100.0, 0.0]), np.array([100.0, 50.0])  # vertical, y 0..50
    assert crossing_on_segment(np.array([90.0, 25.0]), np.array([110.0, 25.0]), a, b)
    assert not crossing_on_segment(np.array([90.0, 80.0]), np.array([110.0, 80.0]), a, b)
    # a diagonal move whose crossing point lies just inside the end
    assert crossing_on_segment(np.array([90.0, 40.0]), np.array([110.0, 60.0]), a, b)
    assert not crossing_on_segment(np.array([90.0, 55.0]), np.array([110.0, 65.0]), a, b)
    assert crossing_on_segment(np.array([90.0, 55.0]), np.array([110.0, 65.0]), a, b, 15.0)


def test_polygon_signed_distance_square_and_concave() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
    d = polygon_signed_distance(np.array([[5, 5], [1, 5], [15, 5], [5, -3], [10, 5]]), square)
    assert d.tolist() == pytest.approx([5.0, 1.0, -5.0, -3.0, 0.0])
    # a U shape: the notch (x 4..6, y 0..8) is outside
    u = np.array([[0, 0], [4, 0], [4, 8], [6, 8], [6, 0], [10, 0], [10, 10], [0, 10]], float)
    d = polygon_signed_distance(np.array([[5, 4], [2, 4], [8, 4], [5, 9]]), u)
    assert d[0] < 0 and d[1] > 0 and d[2] > 0 and d[3] > 0
    assert d[0] == pytest.approx(-1.0)


def test_scaled_normalised_points() -> None:
    pts = [(0.5, 0.25), (1.0, 1.0)]
    assert scaled(pts, True, 640, 480).tolist() == [[320, 120], [640, 480]]
    assert scaled(pts, False, 640, 480).tolist() == [[0.5, 0.25], [1.0, 1.0]]
