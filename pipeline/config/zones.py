"""Zones (polygons) and directed lines of one camera: the config models.

A camera entry may list ``zones`` and ``lines``; the sink process tests every tracked object's
anchor point against them (`stages.analytics`) and publishes ``zone_enter`` / ``zone_exit``
(with dwell seconds) and ``line_cross`` (with direction) events, live counts in each
detections message and the Prometheus families ``edgestream_zone_occupancy`` and
``edgestream_line_crossings_total``.

Coordinates: ``points`` are source-image pixels (``x`` right, ``y`` down, origin top-left)
unless ``normalized: true``, then fractions 0..1 of the image width and height (the same
shape at any resolution). The models live in `pipeline` because the camera entry references
them; the geometry and the state machines that use them live in `stages.analytics`.

Hysteresis: a track changes side (of a line) or state (in a zone) only when its anchor has
gone at least ``min_distance_px`` past the boundary, or has stayed on the other side for
``min_frames`` consecutive observations; a box that wobbles over a line is counted once.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, Field, model_validator

from pipeline.config.base import ConfigProblems, StrictModel

REGION_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"

Anchor = Literal["bottom_center", "center", "top_center"]
"""Which point of a box is tested: bottom_center (where a person stands or a car touches the
road; the default), center, or top_center (heads, seen from above)."""

Point = tuple[float, float]

# Hysteresis defaults, chosen on synthetic scenes of seed 101 (6 x 20 s, the demo model; the
# jsonl output replayed through `stages.analytics` for min_distance_px 0-32 x min_frames 1-8):
# min_frames 1 over-counts person crossings by 15-22 % (boxes wobble over the line), 2 is
# within 3 %, 3+ loses a little person dwell time; min_distance_px 4-32 made no difference
# at min_frames 2-4. tests/e2e/test_zones_lines.py checks them on held-out seeds.
DEFAULT_MIN_DISTANCE_PX = 8.0
DEFAULT_MIN_FRAMES = 2


def _finite_points(points: list[Point]) -> list[Point]:
    for i, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ConfigProblems([(("points", i), "coordinates must be finite numbers")])
    return points


Points = Annotated[list[Point], AfterValidator(_finite_points)]


def _segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether the closed segments ab and cd intersect (touching counts)."""

    def orient(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    def on(p: Point, q: Point, r: Point) -> bool:  # r on segment pq, given collinear
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(
            p[1], q[1]
        )

    d1, d2, d3, d4 = orient(c, d, a), orient(c, d, b), orient(a, b, c), orient(a, b, d)
    if ((d1 > 0 > d2) or (d1 < 0 < d2)) and ((d3 > 0 > d4) or (d3 < 0 < d4)):
        return True
    return (
        (d1 == 0 and on(c, d, a))
        or (d2 == 0 and on(c, d, b))
        or (d3 == 0 and on(a, b, c))
        or (d4 == 0 and on(a, b, d))
    )


def polygon_problems(points: list[Point]) -> list[str]:
    """Why ``points`` is not a simple polygon with an area (empty list: it is one)."""
    n = len(points)
    if n < 3:
        return [f"a zone needs at least 3 points, got {n}"]
    problems = []
    for i in range(n):
        if points[i] == points[(i + 1) % n]:
            problems.append(f"points {i} and {(i + 1) % n} are the same point")
    area2 = sum(
        points[i][0] * points[(i + 1) % n][1] - points[(i + 1) % n][0] * points[i][1]
        for i in range(n)
    )
    if abs(area2) < 1e-12:
        problems.append("the polygon has no area (all points on one line)")
    if problems:
        return problems
    for i in range(n):
        for j in range(i + 1, n):
            if j == i + 1 or (i == 0 and j == n - 1):
                continue  # adjacent edges share a point
            a, b = points[i], points[(i + 1) % n]
            c, d = points[j], points[(j + 1) % n]
            if _segments_cross(a, b, c, d):
                return [f"edges {i}-{(i + 1) % n} and {j}-{(j + 1) % n} cross (self-intersecting)"]
    return []


class _Region(StrictModel):
    id: str = Field(
        ...,
        pattern=REGION_ID_PATTERN,
        description="Id, 1-64 of [A-Za-z0-9_.-], unique among the camera's zones (or lines); "
        "it names the events' zone/line field and the Prometheus label.",
    )
    normalized: bool = Field(
        default=False,
        description="false: points are source-image pixels (x right, y down); true: fractions "
        "0..1 of the image width and height.",
    )
    classes: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Count only tracks of these classes (class names as the model names "
        "them); null: every class.",
    )
    anchor: Anchor = Field(
        default="bottom_center",
        description="The point of a track's box that is tested: bottom_center (default: feet, "
        "wheels), center or top_center.",
    )
    min_distance_px: float = Field(
        default=DEFAULT_MIN_DISTANCE_PX,
        ge=0,
        le=10_000,
        description="Hysteresis: a side change counts once the anchor is this far past the "
        "boundary (source pixels, 0..10000) ...",
    )
    min_frames: int = Field(
        default=DEFAULT_MIN_FRAMES,
        ge=1,
        le=1000,
        description="... or has stayed on the other side for this many consecutive frames "
        "(1..1000). Jitter smaller and shorter than both is never counted.",
    )

    @model_validator(mode="after")
    def _check_coordinates(self) -> _Region:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, (x, y) in enumerate(self.points):  # type: ignore[attr-defined]
            if self.normalized and not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                problems.append(
                    (("points", i), f"normalized coordinates must be in 0..1, got [{x}, {y}]")
                )
            elif not self.normalized and (x < 0 or y < 0):
                problems.append((("points", i), f"pixel coordinates must be >= 0, got [{x}, {y}]"))
        if problems:
            raise ConfigProblems(problems)
        return self


class ZoneConfig(_Region):
    """A polygon: ``zone_enter`` when a track's anchor comes in, ``zone_exit`` (with dwell
    seconds) when it leaves or its track ends inside; occupancy per class while inside."""

    points: Points = Field(
        ...,
        description="The polygon's corners, [[x, y], ...], at least 3, in order around it "
        "(not self-intersecting); the last corner joins the first.",
    )

    @model_validator(mode="after")
    def _simple_polygon(self) -> ZoneConfig:
        problems = polygon_problems(list(self.points))
        if problems:
            raise ConfigProblems([(("points",), p) for p in problems])
        return self


class LineConfig(_Region):
    """A directed line segment from ``points[0]`` to ``points[1]``: ``line_cross`` when a
    track's anchor crosses it. Direction ``in``: from the left of the line to its right as
    seen on the image (for a line drawn left to right, moving down); ``out``: the opposite."""

    points: Points = Field(
        ...,
        description="Exactly two points [[x1, y1], [x2, y2]], start then end; the direction "
        "names follow from their order (in: crossing from its left to its right).",
    )

    @model_validator(mode="after")
    def _two_points(self) -> LineConfig:
        if len(self.points) != 2:
            n = len(self.points)
            raise ConfigProblems([(("points",), f"a line needs exactly 2 points, got {n}")])
        if self.points[0] == self.points[1]:
            raise ConfigProblems([(("points",), "the two points are the same (no length)")])
        return self


_R = TypeVar("_R", ZoneConfig, LineConfig)


def _unique_ids(items: list[_R]) -> list[_R]:
    seen: dict[str, int] = {}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for i, item in enumerate(items):
        if item.id in seen:
            problems.append(((i, "id"), f"duplicate id {item.id!r} (also item {seen[item.id]})"))
        seen.setdefault(item.id, i)
    if problems:
        raise ConfigProblems(problems)
    return items


Zones = Annotated[list[ZoneConfig], AfterValidator(_unique_ids)]
Lines = Annotated[list[LineConfig], AfterValidator(_unique_ids)]


def region_class_problems(
    camera_index: int, zones: list[ZoneConfig], lines: list[LineConfig], names: list[str]
) -> list[str]:
    """``cameras[i].zones[j].classes: ...`` for every class name the model does not have
    (``names``: the model's class names), so a typo is refused before anything starts."""
    known = set(names)
    hint = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    out = []
    for key, regions in (("zones", zones), ("lines", lines)):
        for j, region in enumerate(regions):
            for name in region.classes or ():
                if name not in known:
                    out.append(f"cameras[{camera_index}].{key}[{j}].classes: the model has no "
                               f"class {name!r} ({hint})")  # fmt: skip
    return out
