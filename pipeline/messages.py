"""The typed messages that travel between stage processes, and their wire encoding.

A message is a frozen dataclass. On the wire it is a ZeroMQ multipart message:

* frame 0: a UTF-8 JSON header ``{"v": 1, "type": "frame", ...fields...,
  "buffers": [{"name": "pixels", "dtype": "uint8", "shape": [H, W, 3]}, ...]}``;
* frames 1..n: the raw bytes of each array named in ``buffers``, in that order.

Nothing is pickled. Arrays are sent without a copy (the caller hands ``encode``'s buffers to
``send_multipart(copy=False)``) and decoded without a copy: ``np.frombuffer`` over the received
``zmq.Frame``. A decoded array is therefore **read-only** and keeps the frame alive; copy it if
the stage must write into it.

Pixels travel one of two ways, chosen per edge by the transport:

* inline: an ``np.ndarray`` (``(H, W, 3)`` RGB for a `FrameMsg`, ``(3, h, w)`` for an
  `ItemMsg`), sent as an extra frame (tcp edges, or ipc without shared memory);
* `ShmRef`: a descriptor of a slot in a producer-owned shared-memory ring (`pipeline.shm`);
  only the descriptor crosses the socket.

`decode` validates everything it reads and raises `MessageError` (a ``ValueError``) naming the
problem: wrong number of frames, bad JSON, unknown type or version, a missing or mistyped
field, a buffer whose size does not match its dtype and shape.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeAlias

import numpy as np

from pipeline.payloads import FrameResult, LetterboxMeta, TrackedObject, TrackLifecycleEvent

WIRE_VERSION = 1
"""Bumped on any incompatible change of the header layout; `decode` rejects other versions."""

MAX_HEADER_BYTES = 1 << 20
"""A header larger than this is refused (a sane header is well under 64 KiB)."""

_DTYPES = ("uint8", "int64", "float32", "float64", "int32", "uint16")
_DTYPE_OF = {n: np.dtype(n) for n in _DTYPES}  # dtype.name is slow (Python code): map instead
_NAME_OF = {d: n for n, d in _DTYPE_OF.items()}


class MessageError(ValueError):
    """A malformed message: the text says which part is wrong."""


@dataclass(frozen=True, slots=True)
class ShmRef:
    """Where a producer put an array in shared memory (see `pipeline.shm.ShmRing`).

    ring: the segment name (``edgestream-<pipeline>-<pid>-<purpose>``).
    slot: slot index; generation: the slot's (even) generation after the write — a reader
        that sees another value knows the slot was overwritten since.
    shape / dtype: the array stored at the start of the slot.
    """

    ring: str
    slot: int
    generation: int
    shape: tuple[int, ...]
    dtype: str = "uint8"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _DTYPE_OF[self.dtype].itemsize

    def to_json(self) -> dict[str, Any]:
        return {
            "ring": self.ring,
            "slot": self.slot,
            "generation": self.generation,
            "shape": list(self.shape),
            "dtype": self.dtype,
        }

    @classmethod
    def from_json(cls, d: Any, where: str) -> ShmRef:
        if not isinstance(d, dict):
            raise MessageError(f"{where}: shm descriptor must be an object, got {d!r}")
        ring = _get(d, "ring", str, where)
        slot = _get(d, "slot", int, where)
        gen = _get(d, "generation", int, where)
        shape = _shape(d.get("shape"), f"{where}.shape")
        dtype = _get(d, "dtype", str, where)
        if dtype not in _DTYPES:
            raise MessageError(f"{where}.dtype: unsupported dtype {dtype!r}")
        if not ring or slot < 0 or gen < 0:
            raise MessageError(f"{where}: bad shm descriptor {d!r}")
        return cls(ring, slot, gen, shape, dtype)


Pixels: TypeAlias = "ShmRef | np.ndarray"


@dataclass(frozen=True, slots=True)
class FrameMsg:
    """A decoded frame (decode → preprocess). ``pixels``: (H, W, 3) uint8 RGB, or a `ShmRef`.

    frame_id: the decoder's index (gaps = frames skipped by ``detect_fps``); seq: contiguous per
    camera over the frames decode forwards (downstream reorders and detects gaps on it).
    stage_ts: unix time at which each stage finished with the frame, in pipeline order.
    """

    camera_id: str
    frame_id: int
    seq: int
    capture_ts: float
    capture_ts_source: str
    width: int
    height: int
    pixels: Pixels = field(repr=False, compare=False)
    stage_ts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ItemMsg:
    """A letterboxed model input (preprocess → detect): the frame's identity, the letterbox
    mapping (``scale`` = input px per source px, padding, source size) and ``pixels``:
    (3, h, w) uint8 RGB CHW, or a `ShmRef` into a preprocess slab."""

    camera_id: str
    frame_id: int
    seq: int
    capture_ts: float
    capture_ts_source: str
    width: int
    height: int
    scale: float
    pad_top: int
    pad_left: int
    src_h: int
    src_w: int
    pixels: Pixels = field(repr=False, compare=False)
    stage_ts: dict[str, float] = field(default_factory=dict)

    @property
    def letterbox(self) -> LetterboxMeta:
        return LetterboxMeta(
            src_h=self.src_h,
            src_w=self.src_w,
            scale=self.scale,
            pad_top=self.pad_top,
            pad_left=self.pad_left,
        )

    @classmethod
    def from_frame(
        cls, frame: FrameMsg, meta: LetterboxMeta, pixels: Pixels, stage_ts: dict[str, float]
    ) -> ItemMsg:
        return cls(
            camera_id=frame.camera_id,
            frame_id=frame.frame_id,
            seq=frame.seq,
            capture_ts=frame.capture_ts,
            capture_ts_source=frame.capture_ts_source,
            width=frame.width,
            height=frame.height,
            scale=float(meta.scale),
            pad_top=int(meta.pad_top),
            pad_left=int(meta.pad_left),
            src_h=int(meta.src_h),
            src_w=int(meta.src_w),
            pixels=pixels,
            stage_ts=stage_ts,
        )


@dataclass(frozen=True, slots=True)
class DetectionsMsg:
    """One frame's detections (detect → track), boxes xyxy in source-image pixels.

    boxes (N, 4) float32, scores (N,) float32, class_ids (N,) int64; features (N, D) float32
    appearance descriptors for the tracker (`stages.detect.appearance`), D = 0 when the detect
    stage computes none (None is taken as that).
    """

    camera_id: str
    frame_id: int
    seq: int
    capture_ts: float
    width: int
    height: int
    boxes: np.ndarray = field(repr=False, compare=False)
    scores: np.ndarray = field(repr=False, compare=False)
    class_ids: np.ndarray = field(repr=False, compare=False)
    stage_ts: dict[str, float] = field(default_factory=dict)
    features: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = _rows(self.boxes, "boxes", (4,))
        if _rows(self.scores, "scores", ()) != n or _rows(self.class_ids, "class_ids", ()) != n:
            raise MessageError(
                f"boxes, scores and class_ids must have the same length, got "
                f"{self.boxes.shape}, {self.scores.shape}, {self.class_ids.shape}"
            )
        if self.features is None:
            object.__setattr__(self, "features", np.zeros((n, 0), np.float32))
        elif not (
            isinstance(self.features, np.ndarray)
            and self.features.ndim == 2
            and self.features.shape[0] == n
        ):
            shape = getattr(self.features, "shape", type(self.features).__name__)
            raise MessageError(f"detections.features must be an (N, D) array, N = {n}, got {shape}")


@dataclass(frozen=True, slots=True)
class TrackedMsg:
    """One frame's tracked objects and track events (track → sink): a `FrameResult` plus seq.

    objects / events are the sinks' own validated types, so `to_frame_result` cannot fail.
    """

    camera_id: str
    frame_id: int
    seq: int
    capture_ts: float
    width: int
    height: int
    objects: tuple[TrackedObject, ...] = ()
    events: tuple[TrackLifecycleEvent, ...] = ()
    stage_ts: dict[str, float] = field(default_factory=dict)

    def to_frame_result(self) -> FrameResult:
        return FrameResult(
            camera=self.camera_id,
            frame_id=self.frame_id,
            capture_ts=self.capture_ts,
            width=self.width,
            height=self.height,
            objects=self.objects,
            stage_ts=dict(self.stage_ts),
            events=self.events,
        )

    @classmethod
    def from_frame_result(cls, result: FrameResult, seq: int) -> TrackedMsg:
        return cls(
            camera_id=result.camera,
            frame_id=result.frame_id,
            seq=seq,
            capture_ts=result.capture_ts,
            width=result.width,
            height=result.height,
            objects=tuple(result.objects),
            events=tuple(result.events),
            stage_ts=dict(result.stage_ts),
        )


@dataclass(frozen=True, slots=True)
class DropMsg:
    """A tombstone: frame ``seq`` of ``camera_id`` was dropped at ``stage`` for ``reason``
    (e.g. ``queue_full``, ``shm_overwritten``, ``too_old``, ``error``), so downstream
    reordering does not wait for it. ``frame_id`` is given when known."""

    camera_id: str
    seq: int
    stage: str
    reason: str
    frame_id: int | None = None


@dataclass(frozen=True, slots=True)
class EndMsg:
    """A file source ended: ``last_seq`` is the last seq decode forwarded (-1: none)."""

    camera_id: str
    last_seq: int


Message: TypeAlias = "FrameMsg | ItemMsg | DetectionsMsg | TrackedMsg | DropMsg | EndMsg"

_TYPE_NAMES: dict[type, str] = {
    FrameMsg: "frame",
    ItemMsg: "item",
    DetectionsMsg: "detections",
    TrackedMsg: "tracked",
    DropMsg: "drop",
    EndMsg: "end",
}
_TYPES: dict[str, type] = {v: k for k, v in _TYPE_NAMES.items()}
_FIELDS = {cls: fields(cls) for cls in _TYPE_NAMES}
_NAMES = {cls: frozenset(f.name for f in fs) for cls, fs in _FIELDS.items()}
_ARRAY_FIELDS = {"pixels", "boxes", "scores", "class_ids", "features"}


def with_stage_ts(msg: Message, stage: str, ts: float) -> Message:
    """A copy of ``msg`` with ``stage_ts[stage] = ts`` (for messages that carry stage_ts)."""
    if isinstance(msg, DropMsg | EndMsg):
        return msg
    return replace(msg, stage_ts={**msg.stage_ts, stage: ts})


def seq_of(msg: Message) -> int:
    """The message's seq (for an `EndMsg`, its ``last_seq``)."""
    return msg.last_seq if isinstance(msg, EndMsg) else msg.seq


# ---------------------------------------------------------------------------------- encoding


def encode(msg: Message) -> list[bytes | memoryview]:
    """The multipart frames of ``msg``: the JSON header, then one buffer per array.

    Arrays are passed as memoryviews over their memory (C-contiguous copies only when they are
    not contiguous already): do not write into them until the send completed.
    """
    name = _TYPE_NAMES.get(type(msg))
    if name is None:
        raise MessageError(f"cannot encode {type(msg).__name__}: not a pipeline message")
    header: dict[str, Any] = {"v": WIRE_VERSION, "type": name}
    buffers: list[memoryview] = []
    specs: list[dict[str, Any]] = []
    for f in _FIELDS[type(msg)]:
        value = getattr(msg, f.name)
        if f.name in _ARRAY_FIELDS:
            if isinstance(value, ShmRef):
                header[f.name] = {"shm": value.to_json()}
                continue
            if not isinstance(value, np.ndarray):
                raise MessageError(
                    f"{name}.{f.name} must be an ndarray or ShmRef, got {type(value).__name__}"
                )
            arr = np.ascontiguousarray(value)
            dname = _NAME_OF.get(arr.dtype)
            if dname is None:
                raise MessageError(f"{name}.{f.name}: unsupported dtype {arr.dtype}")
            specs.append({"name": f.name, "dtype": dname, "shape": list(arr.shape)})
            buffers.append(arr.reshape(-1).view(np.uint8).data)
        elif f.name == "objects":
            header[f.name] = [_object_json(o) for o in value]
        elif f.name == "events":
            header[f.name] = [_event_json(e) for e in value]
        else:
            header[f.name] = value
    header["buffers"] = specs
    try:
        head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise MessageError(f"{name}: header is not JSON-serialisable: {e}") from e
    return [head, *buffers]


def _object_json(o: TrackedObject) -> list[Any]:
    return [o.track_id, o.class_id, o.class_name, o.score, *o.box]


def _event_json(e: TrackLifecycleEvent) -> list[Any]:
    return [e.kind, e.track_id, e.class_id, e.class_name, e.event_ts, e.first_seen_ts,
            e.last_seen_ts]  # fmt: skip


# ---------------------------------------------------------------------------------- decoding


def _buffer(frame: Any) -> memoryview:
    """The bytes of one received part: a zmq.Frame (``.buffer``), bytes or a memoryview."""
    buf = getattr(frame, "buffer", None)
    if buf is not None:
        return memoryview(buf)
    try:
        return memoryview(frame)
    except TypeError as e:
        raise MessageError(f"message part of type {type(frame).__name__} is not a buffer") from e


def decode(frames: Sequence[Any]) -> Message:
    """The message in ``frames`` (from ``recv_multipart(copy=False)`` or `encode`).

    Raises `MessageError` on any malformed input.
    """
    if not frames:
        raise MessageError("empty message: expected a JSON header frame")
    head = _buffer(frames[0])
    if head.nbytes > MAX_HEADER_BYTES:
        raise MessageError(f"header of {head.nbytes} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(head))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MessageError(f"header is not valid UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise MessageError(f"header must be a JSON object, got {type(header).__name__}")
    version = header.get("v")
    if version != WIRE_VERSION:
        raise MessageError(f"unsupported message version {version!r} (this build: {WIRE_VERSION})")
    name = header.get("type")
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise MessageError(f"unknown message type {name!r}; known: {sorted(_TYPES)}")
    specs = header.get("buffers", [])
    if not isinstance(specs, list):
        raise MessageError(f"{name}.buffers must be a list")
    if len(frames) != 1 + len(specs):
        raise MessageError(
            f"{name}: header announces {len(specs)} buffer(s), message has "
            f"{len(frames) - 1} after the header"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, spec in enumerate(specs):
        where = f"{name}.buffers[{i}]"
        if not isinstance(spec, dict):
            raise MessageError(f"{where} must be an object")
        bname = _get(spec, "name", str, where)
        if bname not in _ARRAY_FIELDS:
            raise MessageError(f"{where}: unknown buffer name {bname!r}")
        dtype = _get(spec, "dtype", str, where)
        if dtype not in _DTYPES:
            raise MessageError(f"{where}: unsupported dtype {dtype!r}")
        shape = _shape(spec.get("shape"), f"{where}.shape")
        buf = _buffer(frames[1 + i])
        expect = math.prod(shape) * _DTYPE_OF[dtype].itemsize
        if buf.nbytes != expect:
            raise MessageError(
                f"{name}.{bname}: buffer has {buf.nbytes} bytes, dtype {dtype} shape "
                f"{tuple(shape)} needs {expect}"
            )
        arr = np.frombuffer(buf, dtype=_DTYPE_OF[dtype]).reshape(shape)
        arr.flags.writeable = False  # it is the received frame's memory: never write into it
        arrays[bname] = arr
    try:
        return _build(cls, str(name), header, arrays)
    except MessageError:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise MessageError(f"{name}: {e}") from e


def _build(cls: type, name: str, h: dict[str, Any], arrays: dict[str, np.ndarray]) -> Message:
    kw: dict[str, Any] = {}
    known = _NAMES[cls]
    extra = set(h) - known - {"v", "type", "buffers"}
    if extra:
        raise MessageError(f"{name}: unknown field(s) {sorted(extra)}")
    for f in _FIELDS[cls]:
        where = f"{name}.{f.name}"
        if f.name in _ARRAY_FIELDS:
            if f.name in arrays:
                kw[f.name] = arrays[f.name]
            elif isinstance(h.get(f.name), dict) and "shm" in h[f.name]:
                kw[f.name] = ShmRef.from_json(h[f.name]["shm"], where)
            else:
                raise MessageError(f"{where}: missing (neither a buffer nor a shm descriptor)")
        elif f.name == "stage_ts":
            ts = h.get("stage_ts", {})
            if not isinstance(ts, dict) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in ts.values()
            ):
                raise MessageError(f"{where} must map stage names to numbers, got {ts!r}")
            kw[f.name] = {str(k): float(v) for k, v in ts.items()}
        elif f.name == "objects":
            kw[f.name] = tuple(
                _object_from(o, f"{where}[{i}]") for i, o in enumerate(_list(h, f.name, where))
            )
        elif f.name == "events":
            kw[f.name] = tuple(
                _event_from(e, f"{where}[{i}]") for i, e in enumerate(_list(h, f.name, where))
            )
        elif f.name == "frame_id" and cls is DropMsg:
            v = h.get("frame_id")
            if v is not None:
                v = _get(h, "frame_id", int, name)
            kw[f.name] = v
        else:
            kw[f.name] = _get(h, f.name, _FIELD_TYPES.get(f.name, str), name)
    msg = cls(**kw)
    _check(msg, name)
    return msg


_FIELD_TYPES: dict[str, type] = {
    "frame_id": int,
    "seq": int,
    "last_seq": int,
    "width": int,
    "height": int,
    "pad_top": int,
    "pad_left": int,
    "src_h": int,
    "src_w": int,
    "capture_ts": float,
    "scale": float,
}


def _check(msg: Any, name: str) -> None:
    if not msg.camera_id:
        raise MessageError(f"{name}.camera_id must be a non-empty string")
    if isinstance(msg, FrameMsg | ItemMsg | DetectionsMsg | TrackedMsg):
        if msg.width <= 0 or msg.height <= 0:
            raise MessageError(f"{name}: width/height must be > 0, got {msg.width}x{msg.height}")
        if msg.frame_id < 0 or msg.seq < 0:
            raise MessageError(f"{name}: frame_id and seq must be >= 0")
        if not math.isfinite(msg.capture_ts):
            raise MessageError(f"{name}.capture_ts must be finite")
    if isinstance(msg, FrameMsg):
        shape = msg.pixels.shape if isinstance(msg.pixels, ShmRef | np.ndarray) else None
        if shape != (msg.height, msg.width, 3) or _dtype(msg.pixels) != "uint8":
            raise MessageError(
                f"{name}.pixels must be uint8 ({msg.height}, {msg.width}, 3), got "
                f"{_dtype(msg.pixels)} {shape}"
            )
    if isinstance(msg, ItemMsg):
        shape = tuple(msg.pixels.shape)
        if len(shape) != 3 or shape[0] != 3 or _dtype(msg.pixels) != "uint8":
            raise MessageError(
                f"{name}.pixels must be uint8 (3, h, w), got {_dtype(msg.pixels)} {shape}"
            )
        if not (msg.scale > 0 and math.isfinite(msg.scale)):
            raise MessageError(f"{name}.scale must be > 0, got {msg.scale}")


def _dtype(p: Any) -> str:
    return p.dtype if isinstance(p, ShmRef) else _NAME_OF.get(p.dtype, str(p.dtype))


def _rows(a: Any, name: str, tail: tuple[int, ...]) -> int:
    if not isinstance(a, np.ndarray) or a.ndim != 1 + len(tail) or a.shape[1:] != tail:
        shape = getattr(a, "shape", type(a).__name__)
        raise MessageError(f"detections.{name} must be an (N, {', '.join(map(str, tail))}) "
                           f"array, got {shape}")  # fmt: skip
    want = {"boxes": "float32", "scores": "float32", "class_ids": "int64"}[name]
    if a.dtype != _DTYPE_OF[want]:
        raise MessageError(f"detections.{name} must be {want}, got {a.dtype}")
    return int(a.shape[0])


def _get(h: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    if key not in h:
        raise MessageError(f"{where}: missing field {key!r}")
    v = h[key]
    if typ is float:
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    elif typ is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif isinstance(v, typ):
        return v
    raise MessageError(f"{where}.{key} must be {typ.__name__}, got {v!r}")


def _list(h: Mapping[str, Any], key: str, where: str) -> list[Any]:
    v = h.get(key, [])
    if not isinstance(v, list):
        raise MessageError(f"{where} must be a list, got {type(v).__name__}")
    return v


def _shape(v: Any, where: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v
    ):
        raise MessageError(f"{where} must be a list of non-negative ints, got {v!r}")
    return tuple(v)


def _object_from(v: Any, where: str) -> TrackedObject:
    if not isinstance(v, list) or len(v) != 8:
        raise MessageError(
            f"{where} must be [track_id, class_id, class_name, score, x1, y1, x2, y2]"
        )
    try:
        return TrackedObject(v[0], int(v[1]), str(v[2]), float(v[3]), tuple(map(float, v[4:])))  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise MessageError(f"{where}: {e}") from e


def _event_from(v: Any, where: str) -> TrackLifecycleEvent:
    if not isinstance(v, list) or len(v) != 7:
        raise MessageError(
            f"{where} must be [kind, track_id, class_id, class_name, event_ts, first_seen_ts, "
            "last_seen_ts]"
        )
    try:
        return TrackLifecycleEvent(str(v[0]), int(v[1]), int(v[2]), str(v[3]), *map(float, v[4:]))
    except (TypeError, ValueError) as e:
        raise MessageError(f"{where}: {e}") from e


Kind = Literal["frame", "item", "detections", "tracked", "drop", "end"]


def kind_of(msg: Message) -> Kind:
    """The wire name of ``msg``'s type."""
    return _TYPE_NAMES[type(msg)]  # type: ignore[return-value]
