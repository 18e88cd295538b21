"""Sprites drawn from OpenCV primitives: a person (walking or riding), a car, a bicycle.

A sprite is a list of primitives in *local* coordinates (pixels, origin at the sprite's anchor,
y down). The same list is drawn twice per frame: in colour onto the frame, and as a binary mask
into a small patch, which gives the exact pixel footprint (tight box, visibility).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

Colour = tuple[int, int, int]
_SHIFT = 3  # cv2 fixed-point bits: sub-pixel positions make slow motion smooth
_ONE = 1 << _SHIFT


@dataclass(frozen=True)
class Poly:
    pts: tuple[tuple[float, float], ...]
    colour: Colour


@dataclass(frozen=True)
class Circle:
    centre: tuple[float, float]
    radius: float
    colour: Colour
    thickness: int = -1  # -1 = filled


@dataclass(frozen=True)
class Line:
    p1: tuple[float, float]
    p2: tuple[float, float]
    colour: Colour
    thickness: int


@dataclass(frozen=True)
class Ellipse:
    centre: tuple[float, float]
    axes: tuple[float, float]
    angle_deg: float
    colour: Colour


Prim = Poly | Circle | Line | Ellipse


def extent(prims: list[Prim]) -> tuple[float, float, float, float]:
    """Conservative local ``(x1, y1, x2, y2)`` covering every primitive."""
    xs: list[float] = []
    ys: list[float] = []
    for p in prims:
        if isinstance(p, Poly):
            xs.extend(q[0] for q in p.pts)
            ys.extend(q[1] for q in p.pts)
        elif isinstance(p, Circle):
            r = p.radius + max(p.thickness, 0)
            xs += [p.centre[0] - r, p.centre[0] + r]
            ys += [p.centre[1] - r, p.centre[1] + r]
        elif isinstance(p, Line):
            t = p.thickness
            xs += [p.p1[0] - t, p.p1[0] + t, p.p2[0] - t, p.p2[0] + t]
            ys += [p.p1[1] - t, p.p1[1] + t, p.p2[1] - t, p.p2[1] + t]
        else:
            r = max(p.axes)
            xs += [p.centre[0] - r, p.centre[0] + r]
            ys += [p.centre[1] - r, p.centre[1] + r]
    return min(xs), min(ys), max(xs), max(ys)


def _fx(v: float) -> int:
    return round(v * _ONE)


def render(
    canvas: np.ndarray,
    prims: list[Prim],
    ox: float,
    oy: float,
    colour: int | Colour | None = None,
    antialias: bool = True,
) -> None:
    """Draw ``prims`` onto ``canvas`` with the local origin at ``(ox, oy)``.

    ``colour`` overrides every primitive's colour (used for masks). cv2 clips to the canvas.
    """
    lt = cv2.LINE_AA if antialias else cv2.LINE_8
    for p in prims:
        c = p.colour if colour is None else colour
        if isinstance(p, Poly):
            pts = np.array([[_fx(x + ox), _fx(y + oy)] for x, y in p.pts], dtype=np.int32)
            cv2.fillPoly(canvas, [pts], c, lt, _SHIFT)
        elif isinstance(p, Circle):
            centre = (_fx(p.centre[0] + ox), _fx(p.centre[1] + oy))
            cv2.circle(canvas, centre, max(_fx(p.radius), _ONE), c, p.thickness, lt, _SHIFT)
        elif isinstance(p, Line):
            a = (_fx(p.p1[0] + ox), _fx(p.p1[1] + oy))
            b = (_fx(p.p2[0] + ox), _fx(p.p2[1] + oy))
            cv2.line(canvas, a, b, c, max(1, p.thickness), lt, _SHIFT)
        else:
            centre = (_fx(p.centre[0] + ox), _fx(p.centre[1] + oy))
            axes = (max(_fx(p.axes[0]), _ONE), max(_fx(p.axes[1]), _ONE))
            cv2.ellipse(canvas, centre, axes, p.angle_deg, 0, 360, c, -1, lt, _SHIFT)


def mask_patch(prims: list[Prim]) -> tuple[np.ndarray, int, int]:
    """Binary mask (uint8 0/1) of ``prims`` and the local coordinates of its top-left pixel."""
    x1, y1, x2, y2 = extent(prims)
    px, py = math.floor(x1) - 1, math.floor(y1) - 1
    w, h = math.ceil(x2) - px + 2, math.ceil(y2) - py + 2
    patch = np.zeros((h, w), dtype=np.uint8)
    render(patch, prims, -px, -py, colour=1, antialias=False)
    return patch, px, py


def _shade(c: Colour, k: float) -> Colour:
    return (min(255, int(c[0] * k)), min(255, int(c[1] * k)), min(255, int(c[2] * k)))


@dataclass(frozen=True)
class PersonLook:
    skin: Colour
    hair: Colour
    shirt: Colour
    trousers: Colour
    width_ratio: float  # shoulder width / height (0.2 slim .. 0.3 broad)


def person(h: float, facing: int, phase: float, look: PersonLook) -> list[Prim]:
    """A walking person ``h`` px tall; anchor = between the feet. ``phase`` = gait angle (rad)."""
    f = facing
    sw = look.width_ratio * h
    hip = (0.0, -0.48 * h)
    shoulder_y = -0.80 * h
    swing = 0.45 * math.sin(phase)
    leg_t = max(1, round(0.085 * h))
    arm_t = max(1, round(0.055 * h))
    leg_len = 0.48 * h
    prims: list[Prim] = []
    # back leg and arm first (darker), then torso, then front limbs
    for sgn, k in ((-1.0, 0.75), (1.0, 1.0)):
        a = sgn * swing
        knee = (hip[0] + f * 0.5 * leg_len * math.sin(a), hip[1] + 0.5 * leg_len * math.cos(a))
        bend = max(0.0, -sgn * math.sin(phase)) * 0.35
        foot = (
            knee[0] + f * 0.5 * leg_len * math.sin(a - bend),
            knee[1] + 0.5 * leg_len * math.cos(a - bend),
        )
        prims.append(Line(hip, knee, _shade(look.trousers, k), leg_t))
        prims.append(Line(knee, foot, _shade(look.trousers, k), leg_t))
        if sgn < 0:
            hand = (f * 0.3 * h * math.sin(-a * 0.8), shoulder_y + 0.3 * h * math.cos(a * 0.8))
            prims.append(Line((0.0, shoulder_y + 0.03 * h), hand, _shade(look.shirt, 0.7), arm_t))
    prims.append(
        Poly(
            (
                (-sw / 2, shoulder_y),
                (sw / 2, shoulder_y),
                (sw * 0.4, hip[1] + 0.03 * h),
                (-sw * 0.4, hip[1] + 0.03 * h),
            ),
            look.shirt,
        )
    )
    hand = (f * 0.3 * h * math.sin(swing * 0.8), shoulder_y + 0.3 * h * math.cos(swing * 0.8))
    prims.append(Line((0.0, shoulder_y + 0.03 * h), hand, _shade(look.shirt, 0.9), arm_t))
    prims.append(Line((0.0, shoulder_y), (0.0, shoulder_y - 0.05 * h), look.skin, arm_t))
    head_r = 0.075 * h
    head_c = (f * 0.01 * h, -0.91 * h)
    prims.append(Circle(head_c, head_r, look.skin))
    prims.append(
        Ellipse(
            (head_c[0] - f * 0.02 * h, head_c[1] - 0.035 * h),
            (head_r * 1.0, head_r * 0.6),
            0.0,
            look.hair,
        )
    )
    return prims


@dataclass(frozen=True)
class CarLook:
    body: Colour
    window: Colour
    cabin_start: float  # where the cabin starts along the body (0..1, rear to front)
    cabin_len: float  # cabin length as a fraction of the body (0.45 sedan .. 0.8 van)
    aspect: float  # height / width (0.35 .. 0.55)


def car(w: float, facing: int, wheel_phase: float, look: CarLook) -> list[Prim]:
    """A side-view car ``w`` px long; anchor = ground under the body's centre."""
    f = facing
    h = look.aspect * w
    hw = w / 2
    r = 0.19 * h + 0.03 * w
    body_top = -0.58 * h
    body_bot = -0.12 * h

    def x(u: float) -> float:  # u in [0, 1] from rear to front
        return f * (u - 0.5) * w

    lower = (
        (x(0.0), body_top + 0.1 * h),
        (x(0.05), body_top),
        (x(0.95), body_top + 0.05 * h),
        (x(1.0), body_top + 0.18 * h),
        (x(1.0), body_bot),
        (x(0.0), body_bot),
    )
    c0 = look.cabin_start
    c1 = min(0.95, c0 + look.cabin_len)
    cabin = (
        (x(c0), body_top + 1),
        (x(c0 + 0.06), -h),
        (x(c1 - 0.14), -h),
        (x(c1), body_top + 1),
    )
    inset = 0.07 * h
    win = (
        (x(c0 + 0.05), body_top),
        (x(c0 + 0.08), -h + inset),
        (x(c1 - 0.15), -h + inset),
        (x(c1 - 0.05), body_top),
    )
    prims: list[Prim] = [
        Poly(lower, look.body),
        Poly(cabin, _shade(look.body, 0.9)),
        Poly(win, look.window),
        Line(
            (x((c0 + c1) / 2), body_top),
            (x((c0 + c1) / 2), -h + inset),
            _shade(look.body, 0.9),
            max(1, round(0.02 * w)),
        ),
        Poly(
            (
                (x(0.96), body_top + 0.12 * h),
                (x(1.0), body_top + 0.12 * h),
                (x(1.0), body_top + 0.24 * h),
                (x(0.96), body_top + 0.24 * h),
            ),
            (250, 235, 170),
        ),
        Poly(
            (
                (x(0.0), body_top + 0.15 * h),
                (x(0.03), body_top + 0.15 * h),
                (x(0.03), body_top + 0.26 * h),
                (x(0.0), body_top + 0.26 * h),
            ),
            (200, 30, 30),
        ),
    ]
    for u in (0.2, 0.8):
        c = (x(u), -r)
        prims.append(Circle(c, r, (25, 25, 28)))
        prims.append(Circle(c, 0.5 * r, (150, 150, 155)))
        a = wheel_phase
        spoke = (c[0] + 0.45 * r * math.cos(a), c[1] + 0.45 * r * math.sin(a))
        prims.append(Line(c, spoke, (60, 60, 60), max(1, round(0.12 * r))))
    del hw
    return prims


@dataclass(frozen=True)
class BikeLook:
    frame: Colour
    tyre: Colour


def _bike_points(w: float, f: int) -> dict[str, tuple[float, float]]:
    r = 0.22 * w
    return {
        "rear": (-0.28 * w * f, -r),
        "front": (0.28 * w * f, -r),
        "bb": (0.0, -r),
        "seat": (-0.08 * w * f, -r - 0.36 * w),
        "head": (0.19 * w * f, -r - 0.36 * w),
        "bar": (0.17 * w * f, -r - 0.46 * w),
    }


def bicycle(w: float, facing: int, wheel_phase: float, look: BikeLook) -> list[Prim]:
    """A side-view bicycle ``w`` px long; anchor = ground under the bottom bracket."""
    p = _bike_points(w, facing)
    r = 0.22 * w
    t_tyre = max(1, round(0.035 * w))
    t_frame = max(1, round(0.03 * w))
    prims: list[Prim] = []
    for k in ("rear", "front"):
        prims.append(Circle(p[k], r - t_tyre / 2, look.tyre, t_tyre))
        c = p[k]
        for j in range(2):
            a = wheel_phase + j * math.pi / 2
            d = (0.9 * r * math.cos(a), 0.9 * r * math.sin(a))
            prims.append(
                Line((c[0] - d[0], c[1] - d[1]), (c[0] + d[0], c[1] + d[1]), (170, 170, 170), 1)
            )
    for k1, k2 in (
        ("rear", "bb"),
        ("bb", "seat"),
        ("seat", "rear"),
        ("seat", "head"),
        ("bb", "head"),
        ("head", "front"),
        ("head", "bar"),
    ):
        prims.append(Line(p[k1], p[k2], look.frame, t_frame))
    s = p["seat"]
    prims.append(
        Line(
            (s[0] - 0.06 * w, s[1] - 0.02 * w),
            (s[0] + 0.05 * w * facing, s[1] - 0.02 * w),
            (30, 30, 30),
            max(1, round(0.04 * w)),
        )
    )
    return prims


def rider(w: float, facing: int, phase: float, look: PersonLook) -> list[Prim]:
    """A person riding a bicycle ``w`` px long, in the bicycle's local coordinates."""
    f = facing
    p = _bike_points(w, f)
    s = p["seat"]
    hip = (s[0], s[1] - 0.04 * w)
    torso_len = 0.42 * w
    lean = 0.35  # rad forward
    shoulder = (hip[0] + f * torso_len * math.sin(lean), hip[1] - torso_len * math.cos(lean))
    leg_t = max(1, round(0.06 * w))
    prims: list[Prim] = []
    crank = 0.09 * w
    for sgn, k in ((1.0, 0.7), (-1.0, 1.0)):
        a = phase + (0 if sgn > 0 else math.pi)
        pedal = (p["bb"][0] + f * crank * math.cos(a), p["bb"][1] + crank * math.sin(a))
        knee = ((hip[0] + pedal[0]) / 2 + f * 0.13 * w, (hip[1] + pedal[1]) / 2 - 0.04 * w)
        prims.append(Line(hip, knee, _shade(look.trousers, k), leg_t))
        prims.append(Line(knee, pedal, _shade(look.trousers, k), leg_t))
    sw = look.width_ratio * 0.9 * w
    prims.append(Line(hip, shoulder, look.shirt, max(1, round(sw * 0.8))))
    prims.append(Line(shoulder, p["bar"], _shade(look.shirt, 0.85), max(1, round(0.045 * w))))
    head_r = 0.075 * w
    head_c = (shoulder[0] + f * 0.06 * w, shoulder[1] - 0.11 * w)
    prims.append(Circle(head_c, head_r, look.skin))
    prims.append(
        Ellipse(
            (head_c[0] - f * 0.02 * w, head_c[1] - 0.03 * w), (head_r, head_r * 0.6), 0.0, look.hair
        )
    )
    return prims
