"""A deterministic synthetic street scene: people, cars and bicycles moving, entering and
leaving, occluding each other, over a textured background with changing light and noise.

Ground truth per frame comes from the same drawing calls as the pixels: each object's mask is
painted into an id map in depth order, so the visible share of every object is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from stages.synth import sprites
from stages.synth.background import Photometric, make_background

CLASS_NAMES: tuple[str, ...] = ("person", "car", "bicycle")
"""Detection class ids (YOLO labels, the demo model): 0 person, 1 car, 2 bicycle."""

MOT_CLASS = {"person": 1, "rider": 2, "car": 3, "bicycle": 4}
"""MOTChallenge (MOT17) class ids written in gt.txt: 1 pedestrian, 2 person on vehicle (a
bicycle rider), 3 car, 4 bicycle. TrackEval's MOT17 rules score class 1 and ignore 2."""

_OCCLUDER_ID = 255
MAX_OBJECTS = 40


@dataclass(frozen=True)
class SceneConfig:
    """What to generate. Everything else (layout, looks, motion, lighting) follows from seed."""

    seed: int = 0
    seconds: float = 10.0  # clip length in s
    fps: float = 25.0  # frames per second
    width: int = 640  # px
    height: int = 384  # px
    max_objects: int = 12  # objects alive at once (1..40); density of the scene
    spawn_rate_hz: float = 0.6  # mean new objects per second while below max_objects

    def __post_init__(self) -> None:
        if not (
            self.width >= 64 and self.height >= 64 and self.width % 2 == 0 and self.height % 2 == 0
        ):
            raise ValueError(f"size {self.width}x{self.height}: need even width and height >= 64")
        if not 1 <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(f"max_objects {self.max_objects}: must be 1..{MAX_OBJECTS}")
        if self.fps <= 0 or self.seconds <= 0:
            raise ValueError(f"fps {self.fps} and seconds {self.seconds} must be > 0")

    @property
    def num_frames(self) -> int:
        return max(1, round(self.seconds * self.fps))


@dataclass(frozen=True)
class SynthObject:
    """Ground truth of one object in one frame.

    ``box`` is the full (amodal) tight box of the sprite in 0-based pixels, ``(x1, y1, x2, y2)``
    with ``x2``/``y2`` exclusive; it may extend past the image border. ``visibility`` is the
    share of the sprite's pixels that are inside the image and not covered by anything nearer.
    """

    track_id: int
    class_id: int  # index into CLASS_NAMES
    mot_class: int  # MOT_CLASS value
    box: tuple[int, int, int, int]
    visibility: float
    area_px: int  # the sprite's full pixel count

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.class_id]

    def clipped_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        x1, y1, x2, y2 = self.box
        return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


@dataclass
class _Obj:
    track_id: int
    kind: str  # person | car | bicycle | rider
    x: float  # anchor (ground contact point) in px
    y: float
    speed: float  # px/s at perspective scale 1
    heading: float  # rad, 0 = +x
    accel: float  # px/s^2
    turn: float  # rad/s
    size: float  # height (person) or length (car, bicycle) at perspective scale 1, px
    facing: int
    look: object
    z_bias: float = 0.0
    phase: float = 0.0
    parent: _Obj | None = None
    inside_seen: bool = False
    outside_s: float = 0.0
    last_box: tuple[int, int, int, int] | None = None
    next_change_s: float = 0.0
    children: list[_Obj] = field(default_factory=list)


def _colour(
    rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float]
) -> tuple[int, int, int]:
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8
    )
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


_SKIN = (
    (255, 219, 172),
    (241, 194, 125),
    (224, 172, 105),
    (198, 134, 66),
    (141, 85, 36),
    (90, 60, 40),
)
_CAR_BODY = (
    (240, 240, 240),
    (20, 20, 25),
    (170, 172, 178),
    (180, 20, 25),
    (30, 60, 150),
    (60, 80, 60),
)


def _person_look(rng: np.random.Generator) -> sprites.PersonLook:
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    return sprites.PersonLook(
        skin=skin,
        hair=_colour(rng, (0.2, 0.8), (0.05, 0.5)),
        shirt=_colour(rng, (0.1, 0.9), (0.3, 1.0)),
        trousers=_colour(rng, (0.1, 0.6), (0.1, 0.6)),
        width_ratio=float(rng.uniform(0.19, 0.3)),
    )


class Scene:
    """Steps the world one frame at a time; ``frames()`` yields ``(rgb, objects)``."""

    def __init__(self, cfg: SceneConfig) -> None:
        self.cfg = cfg
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.seed, 7])))
        self.noise_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg.seed, 8])))
        w, h = cfg.width, cfg.height
        self.base, self.layout, self.occluders = make_background(self.rng, w, h)
        self.photo = Photometric.random(self.rng, w, h)
        self.dt = 1.0 / cfg.fps
        self.t = 0.0
        self.next_id = 1
        self.objects: list[_Obj] = []
        self.idmap = np.zeros((h, w), np.uint8)
        self.occluder_mask = np.zeros((h, w), np.uint8)
        sprites.render(self.occluder_mask, self.occluders, 0.0, 0.0, colour=1, antialias=False)
        self._occ = self.occluder_mask.astype(bool)
        for _ in range(
            int(self.rng.integers(max(1, cfg.max_objects // 3), cfg.max_objects // 2 + 2))
        ):
            if len(self.objects) < cfg.max_objects:
                self._spawn(inside=True)

    # -- geometry -----------------------------------------------------------------------
    def _scale(self, y: float) -> float:
        lay, h = self.layout, self.cfg.height
        u = (y - lay.horizon_y) / max(1.0, h - lay.horizon_y)
        return 0.35 + 0.8 * min(1.1, max(0.0, u))

    def _spawn(self, inside: bool) -> None:
        rng, cfg, lay = self.rng, self.cfg, self.layout
        w, h = cfg.width, cfg.height
        kind = str(rng.choice(["person", "car", "bicycle"], p=[0.5, 0.3, 0.2]))
        if kind == "car":
            y = rng.uniform(lay.road_y0 + 0.2 * (lay.road_y1 - lay.road_y0), lay.road_y1)
            size = rng.uniform(110, 200)
            speed = rng.uniform(60, 200)
            turn = 0.0
        elif kind == "bicycle":
            y = rng.uniform(lay.horizon_y + 0.2 * (h - lay.horizon_y), h - 2)
            size = rng.uniform(60, 100)
            speed = rng.uniform(45, 120)
            turn = rng.normal(0, 0.06)
        else:
            y = rng.uniform(lay.horizon_y + 0.1 * (h - lay.horizon_y), h + 0.05 * h)
            size = rng.uniform(55, 120)
            speed = rng.uniform(18, 60)
            turn = rng.normal(0, 0.2)
        s = self._scale(y)
        half = 0.6 * size * s
        from_left = rng.random() < 0.5
        if inside:
            x = rng.uniform(0.05 * w, 0.95 * w)
            heading = 0.0 if from_left else math.pi
        elif kind == "person" and rng.random() < 0.25:  # walking in from the bottom edge
            x = rng.uniform(0.1 * w, 0.9 * w)
            y = h + size * s + 2
            heading = -math.pi / 2 + rng.normal(0, 0.3)
        else:
            x = -half - 2 if from_left else w + half + 2
            heading = 0.0 if from_left else math.pi
        if kind != "car":
            heading += rng.normal(0, 0.25)
        look: object
        if kind == "person":
            look = _person_look(rng)
        elif kind == "car":
            body = (
                _CAR_BODY[int(rng.integers(len(_CAR_BODY)))]
                if rng.random() < 0.6
                else _colour(rng, (0.4, 1.0), (0.3, 0.95))
            )
            look = sprites.CarLook(
                body=body,
                window=_colour(rng, (0.2, 0.5), (0.15, 0.45)),
                cabin_start=float(rng.uniform(0.12, 0.3)),
                cabin_len=float(rng.uniform(0.45, 0.8)),
                aspect=float(rng.uniform(0.33, 0.5)),
            )
        else:
            look = sprites.BikeLook(frame=_colour(rng, (0.5, 1.0), (0.3, 1.0)), tyre=(30, 30, 30))
        obj = _Obj(
            track_id=self._new_id(),
            kind=kind,
            x=float(x),
            y=float(y),
            speed=float(speed),
            heading=float(heading),
            accel=0.0,
            turn=float(turn),
            size=float(size),
            facing=1 if math.cos(heading) >= 0 else -1,
            look=look,
            z_bias=float(rng.uniform(0, 0.01)),
            phase=float(rng.uniform(0, 2 * math.pi)),
            next_change_s=self.t + float(rng.uniform(1.0, 4.0)),
        )
        self.objects.append(obj)
        if kind == "bicycle" and rng.random() < 0.75 and len(self.objects) < cfg.max_objects:
            r = _Obj(
                track_id=self._new_id(),
                kind="rider",
                x=obj.x,
                y=obj.y,
                speed=0.0,
                heading=0.0,
                accel=0.0,
                turn=0.0,
                size=obj.size,
                facing=obj.facing,
                look=_person_look(rng),
                z_bias=obj.z_bias + 0.001,
                parent=obj,
            )
            obj.children.append(r)
            self.objects.append(r)

    def add_object(
        self,
        kind: str,
        x: float,
        y: float,
        size: float,
        speed: float = 0.0,
        heading: float = 0.0,
        look: object | None = None,
    ) -> int:
        """Place an object by hand (tests, demos); returns its track id. It keeps ``speed``
        (px/s at perspective scale 1) and ``heading`` (rad) and does not manoeuvre.

        ``kind`` is person, car or bicycle; ``size`` is the person height or vehicle length
        at perspective scale 1 (px). A default look is used when ``look`` is None.
        """
        defaults: dict[str, object] = {
            "person": sprites.PersonLook(
                (224, 172, 105), (40, 30, 20), (200, 50, 50), (40, 40, 90), 0.25
            ),
            "car": sprites.CarLook((180, 20, 25), (40, 50, 70), 0.2, 0.55, 0.42),
            "bicycle": sprites.BikeLook((30, 120, 200), (30, 30, 30)),
        }
        if kind not in defaults:
            raise ValueError(f"kind {kind!r}: expected one of {sorted(defaults)}")
        if len(self.objects) >= MAX_OBJECTS:
            raise ValueError(f"a scene holds at most {MAX_OBJECTS} objects")
        obj = _Obj(
            track_id=self._new_id(),
            kind=kind,
            x=float(x),
            y=float(y),
            speed=float(speed),
            heading=float(heading),
            accel=0.0,
            turn=0.0,
            size=float(size),
            facing=1 if math.cos(heading) >= 0 else -1,
            look=look if look is not None else defaults[kind],
            next_change_s=math.inf,
        )
        self.objects.append(obj)
        return obj.track_id

    def clear(self, occluders: bool = True) -> None:
        """Remove every object (and the static occluders) — a blank stage for tests."""
        self.objects.clear()
        if occluders:
            self.occluders = []
            self._occ = np.zeros_like(self._occ)

    def _new_id(self) -> int:
        tid = self.next_id
        self.next_id += 1
        return tid

    # -- motion -------------------------------------------------------------------------
    def _move(self, o: _Obj) -> None:
        dt, rng = self.dt, self.rng
        if o.parent is not None:
            o.x, o.y, o.facing, o.phase = o.parent.x, o.parent.y, o.parent.facing, o.parent.phase
            return
        if self.t >= o.next_change_s:  # new manoeuvre: speed up, slow down, turn
            o.next_change_s = self.t + float(rng.uniform(1.0, 4.0))
            if o.kind == "car":
                o.accel = float(rng.choice([0.0, 0.0, rng.uniform(-60, 60)]))
            else:
                o.accel = float(rng.uniform(-15, 15))
                o.turn = float(rng.normal(0, 0.25 if o.kind == "person" else 0.08))
        lo, hi = {"person": (10, 80), "car": (25, 260), "bicycle": (30, 150)}[o.kind]
        o.speed = min(hi, max(lo, o.speed + o.accel * dt))
        o.heading += o.turn * dt
        if o.kind == "car":  # keep to the road, roughly horizontal
            target = 0.0 if math.cos(o.heading) >= 0 else math.pi
            o.heading += (target - o.heading) * min(1.0, 2.0 * dt)
        s = self._scale(o.y)
        o.x += math.cos(o.heading) * o.speed * s * dt
        o.y += math.sin(o.heading) * o.speed * s * dt * 0.6  # depth motion looks slower
        if o.y < self.layout.horizon_y + 6 and math.sin(o.heading) < 0:
            o.heading = -o.heading  # do not walk into the sky
        if o.kind == "car":
            o.y = min(max(o.y, self.layout.road_y0 + 4), self.layout.road_y1 + 6)
        c = math.cos(o.heading)
        if abs(c) > 0.15:
            o.facing = 1 if c > 0 else -1
        scale_speed = o.speed * s / max(1.0, o.size * s)
        o.phase += dt * (5.0 * scale_speed if o.kind == "person" else 3.0 * scale_speed * 2.0)

    def _prims(self, o: _Obj) -> list[sprites.Prim]:
        s = self._scale(o.y if o.parent is None else o.parent.y)
        size = o.size * s
        if o.kind == "person":
            return sprites.person(size, o.facing, o.phase, o.look)  # type: ignore[arg-type]
        if o.kind == "car":
            return sprites.car(size, o.facing, o.phase, o.look)  # type: ignore[arg-type]
        if o.kind == "bicycle":
            return sprites.bicycle(size, o.facing, o.phase, o.look)  # type: ignore[arg-type]
        return sprites.rider(size, o.facing, o.phase, o.look)  # type: ignore[arg-type]

    # -- one frame ----------------------------------------------------------------------
    def step(self) -> tuple[np.ndarray, list[SynthObject]]:
        cfg = self.cfg
        w, h = cfg.width, cfg.height
        frame = self.base.copy()
        idmap = self.idmap
        idmap.fill(0)
        order = sorted(
            self.objects, key=lambda o: (o.y if o.parent is None else o.parent.y) + o.z_bias
        )
        drawn: list[tuple[_Obj, tuple[int, int, int, int], int]] = []
        for idx, o in enumerate(order, start=1):
            prims = self._prims(o)
            sprites.render(frame, prims, o.x, o.y)
            patch, px, py = sprites.mask_patch(prims)
            gx, gy = math.floor(o.x) + px, math.floor(o.y) + py
            # mask drawn at the integer origin; re-render at the fractional offset for accuracy
            fx, fy = o.x - math.floor(o.x), o.y - math.floor(o.y)
            patch.fill(0)
            sprites.render(patch, prims, -px + fx, -py + fy, colour=1, antialias=False)
            area = int(cv2.countNonZero(patch))
            bx, by, bw, bh = cv2.boundingRect(patch)
            box = (gx + bx, gy + by, gx + bx + bw, gy + by + bh)
            x0, y0 = max(0, gx), max(0, gy)
            x1, y1 = min(w, gx + patch.shape[1]), min(h, gy + patch.shape[0])
            if x1 > x0 and y1 > y0:
                sub = patch[y0 - gy : y1 - gy, x0 - gx : x1 - gx]
                np.copyto(idmap[y0:y1, x0:x1], np.uint8(idx), where=sub.astype(bool))
            drawn.append((o, box, area))
        if self.occluders:
            sprites.render(frame, self.occluders, 0.0, 0.0)
            idmap[self._occ] = _OCCLUDER_ID
        visible = np.bincount(idmap.ravel(), minlength=256)
        out: list[SynthObject] = []
        for idx, (o, box, area) in enumerate(drawn, start=1):
            o.last_box = box
            inside = box[2] > 0 and box[3] > 0 and box[0] < w and box[1] < h
            vis = float(visible[idx]) / area if area else 0.0
            if inside:
                o.inside_seen = True
                o.outside_s = 0.0
            else:
                o.outside_s += self.dt
            if inside and vis > 0:
                kind = "person" if o.kind == "rider" else o.kind
                out.append(
                    SynthObject(
                        track_id=o.track_id,
                        class_id=CLASS_NAMES.index(kind),
                        mot_class=MOT_CLASS[o.kind],
                        box=box,
                        visibility=round(min(1.0, vis), 4),
                        area_px=area,
                    )
                )
        out.sort(key=lambda s: s.track_id)
        rgb = self.photo.apply(frame, self.t, self.noise_rng)
        self._advance()
        return rgb, out

    def _advance(self) -> None:
        cfg = self.cfg
        for o in self.objects:
            self._move(o)
        gone = {
            id(o)
            for o in self.objects
            if o.parent is None and ((o.inside_seen and o.outside_s > 0.2) or o.outside_s > 6.0)
        }
        self.objects = [
            o
            for o in self.objects
            if id(o) not in gone and (o.parent is None or id(o.parent) not in gone)
        ]
        self.t += self.dt
        if len(self.objects) < cfg.max_objects and self.rng.random() < cfg.spawn_rate_hz * self.dt:
            self._spawn(inside=False)

    def frames(self) -> Iterator[tuple[np.ndarray, list[SynthObject]]]:
        for _ in range(self.cfg.num_frames):
            yield self.step()


def generate_scene(
    seed: int,
    seconds: float = 10.0,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 384),
    **kw: int | float,
) -> Iterator[tuple[np.ndarray, list[SynthObject]]]:
    """Yield ``(rgb uint8 (H, W, 3), objects)`` for every frame of one deterministic scene.

    ``size`` is ``(width, height)``; extra keywords go to :class:`SceneConfig`.
    """
    cfg = SceneConfig(seed=seed, seconds=seconds, fps=fps, width=size[0], height=size[1], **kw)  # type: ignore[arg-type]
    return Scene(cfg).frames()
